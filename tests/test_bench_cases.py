"""The benchmark cases of issue 12 are valid scenarios of the size they claim (no timing here)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from flech_sim.scenario import scenario_from_dict

from .conftest import REPO


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


def test_vs_assume_case_has_n_sellers_and_an_hourly_market_for_each_day() -> None:
    bench = _load("bench_vs_assume")
    s = scenario_from_dict(bench.flech_scenario(sellers=7, households=3, days=2))
    assert len(s.aggregators) == 7
    assert all(sum(a.households.values()) == 3 and a.bidding.steps == 1 for a in s.aggregators)
    (dso,) = s.buyers
    starts = sorted(m.request_time.hour for m in dso.markets)
    assert starts == list(range(24)) and {m.count for m in dso.markets} == {2}
    assert all(len(m.need_kw) == 1 and m.interval_minutes == 60 for m in dso.markets)
    assert s.horizon_hours == 24 * 4  # two days past the last request: every market settles


def test_year_case_spreads_households_over_aggregators_and_feeders() -> None:
    bench = _load("bench_year")
    s = scenario_from_dict(bench.year_scenario(days=3, households=100_000, aggregators=20, feeders=20))
    assert sum(sum(a.households.values()) for a in s.aggregators) == 100_000
    assert s.horizon_hours == 72
