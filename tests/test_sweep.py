"""Sweeps: grid x seeds expanded and validated, run on Dask workers, failures recorded, reruns skip."""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from flech_sim.clearing import ClearingOutcome, ClearingProblem
from flech_sim.cli import main
from flech_sim.fingerprint import fingerprint
from flech_sim.products.srp import SRPProduct
from flech_sim.results import sql
from flech_sim.scenario import ScenarioError
from flech_sim.sweep import expand, load_sweep, make_run_id, run_sweep, set_path

from .conftest import REPO

EXAMPLE = REPO / "scenarios" / "sweep_example.yaml"
PRICE = "aggregators.agg-north.bidding.comfort_cost_dkk_per_kwh"
_MARKETS = yaml.safe_load(EXAMPLE.read_text())["buyers"][0]["markets"][0]
NEED_KWH = sum(_MARKETS["need_kw"]) * _MARKETS["count"]  # the example's 2 markets of 1-hour intervals


class ExplodingSRP(SRPProduct):
    """Passes scenario validation (it is a product), then fails every run at the first clearing."""

    @classmethod
    def solve(cls, problem: ClearingProblem, terms: Any, options: Any) -> tuple[ClearingProblem, ClearingOutcome]:
        raise RuntimeError(f"boom while clearing {problem.market_id}")


def _raw(**sweep: Any) -> dict[str, Any]:
    raw = yaml.safe_load(EXAMPLE.read_text())
    if sweep:
        raw["sweep"] = sweep
    return raw


# == expansion (no cluster) ==============================================================
def test_example_expands_to_grid_times_seeds() -> None:
    raw, base = load_sweep(EXAMPLE)
    specs = expand(raw, str(EXAMPLE))
    assert [(s.params[PRICE], s.seed) for s in specs] == [(0.1, 1), (0.1, 2), (0.8, 1), (0.8, 2)]
    for s in specs:
        north = next(a for a in s.scenario.aggregators if a.id == "agg-north")
        assert north.bidding.comfort_cost_dkk_per_kwh == s.params[PRICE]
        assert north.bidding.steps == 3 and north.bidding.step_markup == 0.3  # the rest of the section is kept
        assert s.scenario.seed == s.seed and s.scenario.sweep is None
        assert s.run_id.startswith(f"comfort_cost_dkk_per_kwh-{s.params[PRICE]}-seed{s.seed}-")
    assert len({s.run_id for s in specs}) == 4
    assert [s.run_id for s in expand(raw, str(EXAMPLE))] == [s.run_id for s in specs]  # deterministic
    assert base.sweep is not None and base.sweep.seeds == [1, 2]


def test_run_ids_depend_on_values_and_seed_only() -> None:
    a = make_run_id({"aggregators.0.bidding.steps": 3}, 1)
    assert a == make_run_id({"aggregators.0.bidding.steps": 3}, 1)
    assert a.startswith("steps-3-seed1-") and len(a.rsplit("-", 1)[1]) == 8
    assert a != make_run_id({"aggregators.0.bidding.steps": 3}, 2) != make_run_id({"aggregators.1.bidding.steps": 3}, 1)
    assert make_run_id({}, 7).startswith("seed7-")
    assert make_run_id({"products.SRP": "tests.test_sweep:ExplodingSRP"}, 1).startswith("SRP-ExplodingSRP-seed1-")


def test_set_path_by_index_id_and_new_key() -> None:
    doc = {"aggregators": [{"id": "x", "bidding": {"steps": 1}}, {"id": "y"}], "solver": None}
    set_path(doc, "aggregators.0.bidding.steps", 4)
    set_path(doc, "aggregators.y.bidding.steps", 5)
    set_path(doc, "solver.mip_gap", 0.01)
    assert doc == {
        "aggregators": [{"id": "x", "bidding": {"steps": 4}}, {"id": "y", "bidding": {"steps": 5}}],
        "solver": {"mip_gap": 0.01},
    }


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("aggregators.agg-nowhere.bidding.steps", [2], "'aggregators.agg-nowhere' matches no list item"),
        ("aggregators.5.noise", [0.1], "'aggregators.5' matches no list item (indexes 0..1; ids agg-north, agg-south)"),
        ("horizon_hours.days", [2], "'horizon_hours' is a value, not a section"),
        ("aggregators.0.bidding.stepz", [2], "aggregators.0.bidding.stepz: unknown key"),
        (
            "aggregators.0.bidding.steps",
            [2, 0],
            "aggregators.0.bidding.steps: Input should be greater than or equal to 1",
        ),
        ("seed", [1, 2], "sweep.grid.seed: not a sweepable parameter"),
        ("solver.mip_gap", [], "sweep.grid.solver.mip_gap: needs at least one value"),
    ],
)
def test_bad_grid_is_a_scenario_error_naming_the_path(path: str, value: list[Any], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        expand(_raw(grid={path: value}), "s.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("s.yaml")


def test_no_sweep_section_is_one_run_with_the_scenarios_seed() -> None:
    raw = _raw()
    del raw["sweep"]
    (spec,) = expand(raw)
    assert spec.params == {} and spec.seed == 42 and spec.run_id.startswith("seed42-")


# == running on Dask =====================================================================
@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """4 runs on 2 local workers: the builtin SRP (completes) and ExplodingSRP (fails), x 2 seeds."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    raw = _raw(grid={"products.SRP": ["builtin", f"{__name__}:ExplodingSRP"]}, seeds=[1, 2])
    result = run_sweep(raw, out, workers=2, progress=False)
    return out, result


def test_failed_runs_are_recorded_and_do_not_stop_the_others(failing_sweep: tuple[Path, Any]) -> None:
    out, result = failing_sweep
    index = pd.read_parquet(out / "index.parquet")
    assert list(index.columns[:6]) == ["run_id", "products.SRP", "seed", "status", "error", "wall_seconds"]
    assert {
        "markets_cleared",
        "procured_kwh",
        "procurement_cost_dkk",
        "unmet_kwh",
        "messages_rejected",
        "fingerprint",
    } <= set(index.columns)
    assert len(index) == 4 and index.run_id.is_unique
    assert index["status"].tolist() == ["completed", "completed", "failed", "failed"]
    assert index["seed"].tolist() == [1, 2, 1, 2]
    ok, bad = index[index.status == "completed"], index[index.status == "failed"]
    assert ok.error.isna().all()
    assert bad.error.str.startswith("RuntimeError: boom while clearing dso-bornholm-SRP-0-d000").all()
    # headline outcomes come from each run's manifest
    for row in ok.itertuples():
        manifest = json.loads((out / row.run_id / "manifest.json").read_text())
        assert manifest["completed"] is True and manifest["seed"] == row.seed
        assert row.markets_cleared == manifest["summary"]["markets_cleared"] == 2
        assert row.procured_kwh == pytest.approx(NEED_KWH) and row.unmet_kwh == 0
        assert row.procurement_cost_dkk == pytest.approx(manifest["summary"]["procurement_cost_dkk"])
        assert row.fingerprint == fingerprint(out / row.run_id)
        assert row.wall_seconds > 0
    assert ok.fingerprint.iloc[0] != ok.fingerprint.iloc[1]  # other seed, other outcome
    for row in bad.itertuples():
        manifest = json.loads((out / row.run_id / "manifest.json").read_text())
        assert manifest["completed"] is False and "boom" in manifest["error"]
        assert pd.isna(row.fingerprint)  # no fingerprint of a failed run's partial tables
        assert row.markets_cleared == 0 and row.markets_opened == 1  # its summary: it failed at the first clearing
    csv = pd.read_csv(out / "index.csv")
    assert csv.run_id.tolist() == index.run_id.tolist() and csv.status.tolist() == index.status.tolist()
    assert not result.ok and result.count("failed") == 2


def test_rerun_skips_completed_runs_on_an_existing_cluster(failing_sweep: tuple[Path, Any]) -> None:
    from distributed import LocalCluster

    out, first = failing_sweep
    before = {r["run_id"]: (out / r["run_id"] / "manifest.json").stat().st_mtime_ns for r in first.rows}
    raw = _raw(grid={"products.SRP": ["builtin", f"{__name__}:ExplodingSRP"]}, seeds=[1, 2])
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
    ) as cluster:
        again = run_sweep(raw, out, scheduler=cluster.scheduler_address, progress=False)
    assert [r["status"] for r in again.rows] == ["skipped", "skipped", "failed", "failed"]
    for old, new in zip(first.rows, again.rows, strict=True):
        assert new["run_id"] == old["run_id"]
        after = (out / new["run_id"] / "manifest.json").stat().st_mtime_ns
        assert (after == before[new["run_id"]]) == (new["status"] == "skipped")  # failed ones were run again
        if new["status"] == "skipped":  # outcomes still in the index
            assert new["fingerprint"] == old["fingerprint"] and new["markets_cleared"] == 2
    assert pd.read_parquet(out / "index.parquet").status.tolist() == ["skipped", "skipped", "failed", "failed"]


def test_cli_sweep_of_the_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sw"
    assert main(["sweep", str(EXAMPLE), "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    assert "4 run(s): 4 completed, 0 failed, 0 skipped" in capsys.readouterr().out
    index = pd.read_csv(out / "index.csv")
    assert index[PRICE].tolist() == [0.1, 0.1, 0.8, 0.8]
    # dearer bidding by agg-north raises the DSO's cost for the same procured volume, seed by seed
    cost = index.set_index([PRICE, "seed"]).procurement_cost_dkk
    assert cost[0.8, 1] > cost[0.1, 1] and cost[0.8, 2] > cost[0.1, 2]
    assert (index.procured_kwh == NEED_KWH).all()
    assert index.fingerprint.is_unique
    # nothing to do the second time: no cluster is started
    assert main(["sweep", str(EXAMPLE), "--out", str(out), "--no-progress"]) == 0
    assert "0 completed, 0 failed, 4 skipped" in capsys.readouterr().out
    # KPIs over seeds: each grid point's mean / std / t-interval are those of its two runs' kpis tables
    summary = pd.read_parquet(out / "kpis_summary.parquet")
    net = summary[(summary.scope == "run") & (summary.metric == "net_dkk")].set_index(PRICE)
    assert net.n.tolist() == [2, 2]
    for price, g in index.groupby(PRICE):
        values = [_run_kpi(out / rid, "net_dkk") for rid in g.run_id]
        assert g.kpi_seller_net_dkk.tolist() == pytest.approx(values)
        half = 12.706204736174698 * statistics.stdev(values) / math.sqrt(2)  # t(0.975, 1 dof)
        assert net.loc[price, "mean"] == pytest.approx(statistics.mean(values))
        assert net.loc[price, "std"] == pytest.approx(statistics.stdev(values))
        assert net.loc[price, "ci95_high"] - net.loc[price, "mean"] == pytest.approx(half)
        assert g.kpi_seller_net_dkk_mean.tolist() == pytest.approx([statistics.mean(values)] * 2)  # in the index
        assert g.kpi_seller_net_dkk_ci95_low.iloc[0] == pytest.approx(net.loc[price, "ci95_low"])
    assert main(["kpis", str(out), "--scope", "run"]) == 0
    assert "ci95_low" in capsys.readouterr().out
    con = sql(out)  # SQL over every run of the sweep, twins not among them
    assert con.execute("select count(distinct run_id) from markets").fetchone() == (4,)
    assert con.execute("select count(*) from kpis_summary").fetchone() == (len(summary),)


def _run_kpi(run_dir: Path, metric: str) -> float:
    k = pd.read_parquet(run_dir / "kpis.parquet")
    return float(k[(k.scope == "run") & (k.metric == metric) & k.product_id.isna()].value.iloc[0])


def test_cli_sweep_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "no such scenario file" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_raw(grid={"aggregators.0.biding.steps": [2]})))
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "aggregators.0.biding" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing ran
    assert main(["sweep", str(EXAMPLE), "--workers", "0"]) == 2
