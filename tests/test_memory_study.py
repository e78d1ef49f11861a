"""The study's batch-wise reading of ``portfolio_load`` gives exactly what reading the whole table gives.

The study (``flech_sim.twin.finish_study``) aggregates the longest table of a run a few row groups at a time
(``kpis.PortfolioLoad``) so that its memory does not grow with the horizon. These tests hold it to the
whole-table functions, bit for bit: on hand-made tables cut into row groups anywhere (inside a model step,
inside a slot, out of time order) and on a real run with a twin, SRP and mFRR markets.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flech_sim import kpis as K
from flech_sim import persistor as P
from flech_sim import twin as T
from flech_sim.results import _to_pandas
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run

from .conftest import REPO

T0 = pd.Timestamp("2026-01-12 00:00")
DT = 15


def _table(days: int, points: list[str], seed: int) -> pd.DataFrame:
    """A portfolio_load as the world writes it: day blocks, point-major inside a day."""
    rng = np.random.default_rng(seed)
    steps = 96
    rows = []
    for d in range(days):
        for p in points:
            for k in range(steps):
                rows.append((p, p.split("@")[1], T0 + pd.Timedelta(minutes=(d * steps + k) * DT), rng.normal(50, 9)))
    return pd.DataFrame(rows, columns=["metering_point", "location", "interval_start", "load_kw"])


def _write(df: pd.DataFrame, path: Path, row_group_rows: int) -> Path:
    t = pa.Table.from_pandas(df, preserve_index=False)
    t = t.set_column(2, "interval_start", t.column("interval_start").cast(pa.timestamp("s")))
    pq.write_table(t, path, row_group_size=row_group_rows)
    return path


def _bids(points: list[str], days: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bids with declared baselines into hourly (at a feeder) and 15-minute (everywhere) markets."""
    rng = np.random.default_rng(seed)
    sellers = sorted({p.split("@")[0] for p in points if not p.startswith("unaggregated")})
    markets = pd.DataFrame(
        {
            "market_id": ["h1", "h2", "q1"],
            "location": ["f1", "f2", "*"],
            "interval_minutes": [60, 60, 15],
        }
    )
    rows = []
    for m, minutes in (("h1", 60), ("h2", 60), ("q1", 15)):
        for s in sellers:
            for i in rng.choice(days * 24 * 60 // minutes, size=6, replace=False):
                start = T0 + pd.Timedelta(minutes=int(i) * minutes)
                for _ in range(2):  # two price steps of one interval
                    rows.append((m, "SRP" if minutes == 60 else "mFRR", s, start, rng.normal(100, 20)))
    bids = pd.DataFrame(rows, columns=["market_id", "product_id", "seller", "interval_start", "baseline_kw"])
    return bids, markets


POINTS = [f"{a}@{f}" for a in ("agg-a", "agg-b", "unaggregated") for f in ("f1", "f2")]


@pytest.mark.parametrize("row_group_rows", [7, 12, 96, 96 * 6, 10**6])
@pytest.mark.parametrize("order", ["day blocks", "time", "shuffled"])
def test_batch_wise_portfolio_load_equals_the_whole_table(tmp_path: Path, row_group_rows: int, order: str) -> None:
    days, n = 2, len(POINTS)
    df = _table(days, POINTS, seed=1)
    if order == "time":  # all points of a step, then the next step
        df = df.sort_values("interval_start", kind="stable").reset_index(drop=True)
    if order == "shuffled":  # out of time order: no cut where a later row group goes back in time
        df = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    path = _write(df, tmp_path / "portfolio_load.parquet", row_group_rows)
    whole = _to_pandas(pq.read_table(path))
    bids, markets = _bids(POINTS, days, seed=2)
    pl = K.PortfolioLoad.from_parquet(path, T0, K.baseline_slots(bids, markets, T0))

    pd.testing.assert_frame_equal(pl.aggregators, K.aggregator_load(whole), check_exact=True)
    got, want = K.baseline_errors(bids, markets, pl, T0), K.baseline_errors(bids, markets, whole, T0)
    assert len(want) == len(bids) // 2  # every (market, seller, interval) found its slot: nothing vacuous
    pd.testing.assert_frame_equal(got, want, check_exact=True)

    f = pq.ParquetFile(path)
    pieces = K.slot_pieces(f, T0, [15, 60])
    assert [g for piece in pieces for g in piece] == list(range(f.metadata.num_row_groups))
    ends = np.cumsum([f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)])[:-1]
    if order == "day blocks":  # a cut only at a day's end (before, a later point goes back to the day's start)
        expected = 1 + sum(int(e) % (96 * n) == 0 for e in ends)
    elif order == "time":  # a cut only at an hour's end (4 steps of every point)
        expected = 1 + sum(int(e) % (4 * n) == 0 for e in ends)
    else:
        expected = 1
    assert len(pieces) == expected
    hours = []
    for piece in pieces:  # no two pieces share an hour
        t = f.read_row_groups(piece, columns=["interval_start"]).column(0).to_pandas()
        hours.append(set((t - T0) // pd.Timedelta(minutes=60)))
    assert all(not (a & b) for i, a in enumerate(hours) for b in hours[i + 1 :])


def test_rebound_events_from_the_aggregated_loads(tmp_path: Path) -> None:
    run_pl, twin_pl = _table(2, POINTS, seed=4), _table(2, POINTS, seed=5)
    a_path, b_path = _write(run_pl, tmp_path / "a.parquet", 96 * 3), _write(twin_pl, tmp_path / "b.parquet", 96 * 3)
    a, b = K.PortfolioLoad.from_parquet(a_path, T0, {}), K.PortfolioLoad.from_parquet(b_path, T0, {})
    sched = pd.DataFrame(
        {
            "seller": ["agg-a", "agg-b", "agg-a"],
            "market_id": "m",
            "product_id": "SRP",
            "interval_start": [T0 + pd.Timedelta(hours=h) for h in (3, 5, 30)],
            "kw": [10.0, -4.0, 6.0],
            "minutes": 60,
            "price": 0.5,
        }
    )
    got = K.rebound_events(sched, a, b, DT)
    want = K.rebound_events(sched, _to_pandas(pq.read_table(a_path)), _to_pandas(pq.read_table(b_path)), DT)
    assert len(want) >= 3
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_year", REPO / "benchmarks" / "bench_year.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_year", module)
    spec.loader.exec_module(module)
    return module


def _whole(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Every study table read whole, all columns: the path before the study read in pieces."""
    tables = {n: _to_pandas(pq.read_table(run_dir / f"{n}.parquet")) for n in T.NEEDED}
    for n in T.OPTIONAL:
        if (run_dir / f"{n}.parquet").is_file():
            tables[n] = _to_pandas(pq.read_table(run_dir / f"{n}.parquet"))
    tables["awards"] = T._with_availability(run_dir, tables["awards"])
    return tables


def test_study_of_a_real_run_equals_the_whole_table_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "DEFAULT_BATCH_ROWS", 500)  # a row group per day of portfolio_load
    scenario = scenario_from_dict(_bench().year_scenario(days=3, households=160, aggregators=4, feeders=2))
    result = run(scenario, tmp_path / "run")
    assert result.completed, result.error
    out = tmp_path / "run"
    assert pq.ParquetFile(out / "portfolio_load.parquet").metadata.num_row_groups >= 3
    tables, twin = _whole(out), _whole(out / "twin")
    schedule = K.scheduled_change(tables["markets"], tables["awards"], tables["activations"])
    events = K.rebound_events(schedule, tables["portfolio_load"], twin["portfolio_load"], DT)
    kpis = K.compute_kpis(tables, twin, DT, T0, events)
    ref = tmp_path / "whole"
    ref.mkdir()
    K.write_table(ref, "rebound_events", events)
    K.write_table(ref, "kpis", kpis)
    for name in ("rebound_events", "kpis"):
        assert pq.read_table(out / f"{name}.parquet").equals(pq.read_table(ref / f"{name}.parquet")), name
    measured = kpis[kpis.metric.str.startswith("baseline") & kpis.value.notna()]
    assert {"baseline_mae_kw", "baseline_mae_unawarded_kw"} <= set(measured.metric)  # both comparisons ran
    assert len(events) > 0 and set(tables["markets"].interval_minutes) == {15, 60}
