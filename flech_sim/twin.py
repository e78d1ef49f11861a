"""The no-flexibility twin of a run, and the study tables computed from both at the end of the run.

The twin is the same scenario (same seed, weather, households, aggregators, data provider and metering)
with every buyer's markets withheld: timetable, congestion watch and balancing are removed, so buyers
send nothing and no flexibility is traded. All randomness comes from keyed seed streams
(:func:`flech_sim.households.child_seed`: world 1, spot 2, data provider 3, buyers 4), which do not
depend on what the buyers do, so the households' draws are identical and any difference in load is the
effect of the flexibility traded (tests/test_twin.py checks it).

The twin is a full run directory of its own in ``<run>/twin/``; its manifest says ``is_twin: true``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from . import kpis as K
from .results import _to_pandas
from .scenario import Scenario
from .schema import TABLES

TWIN_DIR = "twin"
NEEDED = ("markets", "awards", "activations", "settlements", "bids", "feeder_load", "portfolio_load", "households")
OPTIONAL = ("comfort", "comfort_compensation")  # read when present (run directories written before they existed)


def twin_scenario(scenario: Scenario) -> Scenario:
    """The scenario with every buyer's markets withheld (and no twin of its own)."""
    buyers = [b.model_copy(update={"markets": [], "congestion": None, "balancing": None}) for b in scenario.buyers]
    return scenario.model_copy(update={"buyers": buyers, "twin": False})


def run_twin(scenario: Scenario, out_dir: Path) -> dict[str, Any]:
    """Run the twin into ``out_dir/twin`` and mark its manifest; return what the parent's manifest records."""
    from .simulation import phase, run

    path = Path(out_dir) / TWIN_DIR
    started = time.perf_counter()
    result = run(twin_scenario(scenario), path)
    phase("study")  # back in the run's own study
    manifest_path = path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(is_twin=True, twin_of=str(out_dir))
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return {
        "run_dir": str(path),
        "completed": result.completed,
        "error": result.error,
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


COLUMNS = {
    "portfolio_load": ["metering_point", "location", "interval_start", "load_kw"],
    "bids": ["market_id", "product_id", "seller", "interval_start", "baseline_kw"],
    "awards": ["market_id", "bid_id", "product_id", "seller", "interval", "interval_start", "accepted_kw", "price"],
    "activations": ["market_id", "product_id", "seller", "bid_id", "interval_start", "quantity_kw"],
}
"""The columns the study reads of a table, where not all: the long tables are read without the ones no KPI
uses (their unique IDs are most of their size in memory)."""


def _read(run_dir: Path) -> dict[str, pd.DataFrame]:
    """The study's tables of a run, ``portfolio_load`` left out (:func:`_portfolio_load` aggregates it as it
    is read)."""
    tables = {
        name: _to_pandas(pq.read_table(Path(run_dir) / f"{name}.parquet", columns=COLUMNS.get(name)))
        for name in NEEDED
        if name != "portfolio_load"
    }
    for name in OPTIONAL:
        if (Path(run_dir) / f"{name}.parquet").is_file():
            tables[name] = _to_pandas(pq.read_table(Path(run_dir) / f"{name}.parquet"))
    tables["awards"] = _with_availability(Path(run_dir), tables["awards"])
    return tables


def _portfolio_load(run_dir: Path, bids: pd.DataFrame, markets: pd.DataFrame, start: pd.Timestamp) -> K.PortfolioLoad:
    """The run's ``portfolio_load`` aggregated a few row groups at a time, keeping the slot loads that the
    declared baselines of ``bids`` are compared with (:func:`flech_sim.kpis.baseline_errors`)."""
    wanted = K.baseline_slots(bids, markets, start)
    path = Path(run_dir) / "portfolio_load.parquet"
    return K.PortfolioLoad.from_parquet(path, start, wanted, columns=COLUMNS["portfolio_load"])


_AVAILABILITY_KEY = ["market_id", "bid_id", "interval"]


def _with_availability(run_dir: Path, awards: pd.DataFrame) -> pd.DataFrame:
    """``awards`` plus ``availability_dkk`` (NaN where none) from every product table that records
    availability payments per award interval (CRP's ``crp_awards``, or a plug-in's of the same shape):
    product-specific award fields live in the products' own tables, not in ``awards``."""
    parts = [
        pq.read_table(run_dir / f"{t.name}.parquet", columns=[*_AVAILABILITY_KEY, "availability_dkk"])
        for t in TABLES.values()
        if t.name != "awards"
        and {*_AVAILABILITY_KEY, "availability_dkk"} <= set(t.names)
        and (run_dir / f"{t.name}.parquet").is_file()
    ]
    if not parts:
        return awards.assign(availability_dkk=np.nan)
    avail = pd.concat([_to_pandas(p) for p in parts], ignore_index=True)
    return awards.merge(avail, on=_AVAILABILITY_KEY, how="left")


def finish_study(scenario: Scenario, out_dir: Path, row_counts: dict[str, int]) -> dict[str, Any]:
    """Twin (if the scenario asks for it), feeder_compare, rebound_events and kpis written into ``out_dir``.

    Returns ``{"twin": {...} or None, "kpis": headline KPIs}`` for the manifest; ``row_counts`` is updated.
    """
    out_dir = Path(out_dir)
    twin_info = run_twin(scenario, out_dir) if scenario.twin else None
    if twin_info is not None and not twin_info["completed"]:
        raise RuntimeError(f"the no-flexibility twin failed: {twin_info['error']}")
    dt = scenario.households.dt_minutes
    start = (
        pd.Timestamp(scenario.start).tz_localize(None)
        if pd.Timestamp(scenario.start).tzinfo is None
        else pd.Timestamp(scenario.start).tz_convert(None)
    )
    tables: dict[str, Any] = _read(out_dir)
    # compute_kpis compares the declared baselines of unawarded bids with the run's own load and of all bids
    # with the twin's: each portfolio_load is read keeping only what those comparisons join.
    unawarded = K.unawarded_bids(tables["bids"], tables["awards"])
    tables["portfolio_load"] = _portfolio_load(out_dir, unawarded, tables["markets"], start)
    twin: dict[str, Any] | None = None
    if twin_info is not None:
        twin = _read(out_dir / TWIN_DIR)
        twin["portfolio_load"] = _portfolio_load(out_dir / TWIN_DIR, tables["bids"], tables["markets"], start)
    events = None
    if twin is not None:
        compare = K.feeder_compare(tables["feeder_load"], twin["feeder_load"])
        schedule = K.scheduled_change(tables["markets"], tables["awards"], tables["activations"])
        events = K.rebound_events(schedule, tables["portfolio_load"], twin["portfolio_load"], dt)
        row_counts["feeder_compare"] = K.write_table(out_dir, "feeder_compare", compare)
        row_counts["rebound_events"] = K.write_table(out_dir, "rebound_events", events)
    kpis = K.compute_kpis(tables, twin, dt, start, events)
    row_counts["kpis"] = K.write_table(out_dir, "kpis", kpis)
    return {"twin": twin_info, "kpis": K.headlines(kpis)}
