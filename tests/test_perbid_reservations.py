"""An aggregator's running reservation sum and its record of awards, once no bid is open (issue 12).

In exact arithmetic the two agree when nothing is open; in floats the running sum can keep the last
bits of what was added and taken back. Where that is all they differ by, the sum takes the awards'
values, so the world sees one plan and rolls the seller's homes out once per market, not twice;
residue where nothing was awarded stays (it decides whether forecasts are made under commitments).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import simpy

from flech_sim import world as world_mod
from flech_sim.agents.aggregator import Aggregator
from flech_sim.fingerprint import fingerprint
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_vs_assume import flech_scenario


def _agg(reserved: dict[str, tuple[int, np.ndarray]], open_bids: int = 0, now: int = 0) -> Aggregator:
    """An aggregator holding only what _settle_reservations reads: the clock, the step, its reservations."""
    env = simpy.Environment(initial_time=now)
    agg = object.__new__(Aggregator)
    agg.env, agg.dt, agg._version = env, 15, 0
    agg._reserved = dict(reserved)
    agg._open = {str(i): None for i in range(open_bids)}  # type: ignore[misc]
    return agg


def test_last_bit_residue_takes_the_awards_values() -> None:
    awarded = np.array([[0.0, 6.993, 6.993, 0.0]])
    running = awarded + np.array([[0.0, 8.9e-16, -8.9e-16, 0.0]])
    agg = _agg({"down": (10, running), "awarded-down": (8, np.hstack([np.zeros((1, 2)), awarded]))}, now=150)
    agg._settle_reservations()
    base, r = agg._reserved["down"]
    assert base == 8 and np.array_equal(r[:, 2:], awarded)
    assert r is not agg._reserved["awarded-down"][1]  # a copy: later bids add to the running sum alone
    assert agg._version == 1


def test_residue_where_nothing_was_awarded_stays() -> None:
    running = np.array([[1.8e-15, 0.0, 6.0091217000000001, 0.0]])
    awarded = np.array([[0.0, 0.0, 6.0091217, 0.0]])
    agg = _agg({"up": (0, running), "awarded-up": (0, awarded)})
    agg._settle_reservations()
    assert agg._reserved["up"][1] is running and agg._version == 0


def test_nothing_changes_while_a_bid_is_open_or_the_two_agree() -> None:
    running = np.array([[0.0, 2.0 + 4.4e-16]])
    agg = _agg({"up": (0, running), "awarded-up": (0, np.array([[0.0, 2.0]]))}, open_bids=1)
    agg._settle_reservations()
    assert agg._reserved["up"][1] is running and agg._version == 0
    same = np.array([[0.0, 2.0, 0.0]])
    agg = _agg({"up": (0, same), "awarded-up": (0, same[:, :2].copy())})
    agg._settle_reservations()  # equal over every step from now on (zeros past the shorter array)
    assert agg._reserved["up"][1] is same and agg._version == 0


def test_a_real_difference_is_never_overwritten() -> None:
    running = np.array([[0.0, 2.0, 1.0]])
    agg = _agg({"up": (0, running), "awarded-up": (0, np.array([[0.0, 2.0, 1.5]]))})
    agg._settle_reservations()
    assert agg._reserved["up"][1] is running


def _run_counting(tmp: Path, monkeypatch: pytest.MonkeyPatch, settle: bool) -> tuple[str, int, int]:
    """(fingerprint, shared roll-outs, of which plans differing by less than 1e-9 kW) of a small bench case."""
    calls = {"shared": 0, "residue": 0}
    orig = world_mod.World._forecast_shared

    def counting(self: Any, now: int, first: int, duration: int, plans: dict[str, Any]) -> Any:
        calls["shared"] += 1
        for (s_base, s), (a_base, a) in plans.values():
            if s_base == a_base and s.shape == a.shape and not np.array_equal(s, a) and np.abs(s - a).max() < 1e-9:
                calls["residue"] += 1
        return orig(self, now, first, duration, plans)

    monkeypatch.setattr(world_mod.World, "_forecast_shared", counting)
    if not settle:
        monkeypatch.setattr(Aggregator, "_settle_reservations", lambda self: None)
    scenario = scenario_from_dict(flech_scenario(6, 5, 2))
    result = run(scenario, tmp)
    assert result.completed, result.error
    return fingerprint(tmp), calls["shared"], calls["residue"]


def test_settled_reservations_leave_outcomes_unchanged_and_drop_residue_plans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp_new, shared_new, residue_new = _run_counting(tmp_path / "new", monkeypatch, settle=True)
    monkeypatch.undo()
    fp_old, shared_old, residue_old = _run_counting(tmp_path / "old", monkeypatch, settle=False)
    assert fp_new == fp_old
    assert residue_old > 0  # the case does show the residue (else this test checks nothing)
    assert residue_new == 0
    assert shared_new == shared_old  # the same roll-outs are shared: only their second runs go


def test_plan_is_made_once_per_reservation_state_and_read_only() -> None:
    r = np.zeros((1, 20))
    r[0, 5:9] = 3.0
    agg = _agg({"up": (0, r), "awarded-up": (0, r.copy())})
    agg.feeders, agg._plan_made = ["f"], ((), None)
    plan = agg._plan(5, 4)
    assert plan is not None and np.array_equal(plan[0][1], [[0, 0, 0, 0, 0, 3, 3, 3, 3]])
    assert agg._plan(5, 4) is plan  # the world's question and the seller's own: one answer
    assert not plan[0][1].flags.writeable and not plan[1][1].flags.writeable
    agg._reserved["up"][1][0, 5:9] = 0.0
    assert agg._plan(5, 4) is plan  # still cached: only a new version (every _reserve bumps it) says stale
    agg._version += 1
    assert agg._plan(5, 4) is None
