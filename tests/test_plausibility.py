"""benchmarks/plausibility.py in quick mode on one tiny scenario: the printed figures are the runs' kpis."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from .conftest import REPO, scenario_dict


def _bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("plausibility", REPO / "benchmarks" / "plausibility.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("plausibility", module)  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_quick_benchmark_prints_the_runs_kpis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    tiny = scenario_dict(
        name="tiny",
        aggregators=[
            {"id": "agg-a", "households": {"feeder-1": 60, "feeder-2": 30}},
            {"id": "agg-b", "households": {"feeder-1": 40}, "bidding": {"strategy": "risk_aware", "steps": 2}},
        ],
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny))
    assert bench.main(["--quick", "--scenario", str(path), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "out" / "plausibility.csv")
    assert (tmp_path / "out" / "plausibility.md").read_text().strip() == printed.strip()

    runs = sorted((tmp_path / "out" / "plausibility" / "tiny").glob("*/kpis.parquet"))
    assert len(runs) == bench.QUICK_SEEDS
    seeds = [json.loads((r.parent / "manifest.json").read_text())["seed"] for r in runs]
    assert sorted(seeds) == [7, 8]  # the scenario's seed and the next
    kpis = [pd.read_parquet(r) for r in runs]
    steps = bench.QUICK_HOURS * 60 // 15

    def per_run(row: pd.Series) -> list[float]:
        out = []
        for k in kpis:
            sel = (k.metric == row.metric) & (k.scope == row.scope)
            for col in ("product_id", "participant", "feeder"):
                sel &= k[col].isna() if pd.isna(row[col]) else k[col] == row[col]
            vals = k.loc[sel, "value"].dropna()
            assert len(vals) <= 1
            out += [float(v) * row.scale for v in vals]
        return out

    assert {
        "delivery_ratio",
        "net_dkk",
        "overload_kwh",
        "overload_steps_without_flex",
        "rebound_ratio",
        "comfort_degree_hours",
        "baseline_mae_kw",
    } <= set(table.metric)
    assert set(table.who) >= {"SRP", "SRP / agg-a", "feeder feeder-1", "run"}
    for row in table.itertuples(index=False):
        r = pd.Series(row._asdict())
        vals = per_run(r)
        assert r.n == len(vals) > 0, r.figure
        assert r["mean"] == pytest.approx(np.mean(vals), rel=1e-9, abs=1e-12), (r.who, r.figure)
        if len(vals) == 2:  # the 95 % t half-width of two values, by hand
            half = stats.t.ppf(0.975, 1) * np.std(vals, ddof=1) / np.sqrt(2)
            assert r.half == pytest.approx(half, rel=1e-9, abs=1e-12)
        # the Markdown line shows exactly these figures
        line = f"| tiny | {r.who} | {r.figure} | {bench.fmt_value(r['mean'], r.half, r.n, r.fmt)} |"
        assert line in printed, line
    share = table[(table.metric == "overload_steps_without_flex") & (table.feeder == "feeder-1")].iloc[0]
    assert share.scale == pytest.approx(1 / steps)
    # a flag is set exactly where the mean lies outside a finite reference range
    dr = table[table.metric == "delivery_ratio"]
    assert ((dr["mean"] < 0.75) == (dr.flag == "below")).all()


def test_strategy_net_averages_over_every_seed_run() -> None:
    bench = _bench()
    rows = [  # agg-x sells in seed 1 only, agg-y in both seeds; agg-z bids at cost
        ("net_dkk", "aggregator", None, "agg-x", 1, 20.0),  # the all-products row
        ("net_dkk", "aggregator", "SRP", "agg-x", 1, 30.0),  # per product: not added again
        ("net_dkk", "aggregator", "CRP", "agg-x", 1, -10.0),
        ("net_dkk", "aggregator", None, "agg-y", 1, 5.0),
        ("net_dkk", "aggregator", None, "agg-y", 2, -15.0),
        ("net_dkk", "aggregator", None, "agg-z", 2, 99.0),
        ("payments_dkk", "aggregator", None, "agg-x", 2, 1000.0),  # another metric: ignored
    ]
    kpis = pd.DataFrame(rows, columns=["metric", "scope", "product_id", "participant", "seed", "value"])
    strategies = {"agg-x": "expected_profit", "agg-y": "expected_profit", "agg-z": "cost"}
    assert bench.strategy_net(kpis, strategies, "expected_profit") == {"agg-x": 10.0, "agg-y": -5.0}


def test_strategy_net_is_net_of_comfort_compensation_when_recorded() -> None:
    """With ``net_margin_dkk`` in the kpis (net_dkk minus the comfort compensation), that is the margin."""
    bench = _bench()
    rows = [
        ("net_dkk", "aggregator", None, "agg-x", 1, 20.0),
        ("net_margin_dkk", "aggregator", None, "agg-x", 1, 12.5),  # paid 7.5 DKK of compensation
    ]
    kpis = pd.DataFrame(rows, columns=["metric", "scope", "product_id", "participant", "seed", "value"])
    assert bench.strategy_net(kpis, {"agg-x": "expected_profit"}, "expected_profit") == {"agg-x": 12.5}
