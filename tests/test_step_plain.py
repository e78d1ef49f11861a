"""The plain step (no control) of the numba engine: EV events, default powers and the state's advance in
one compiled pass (kernels.plain_step), against the numpy reference and the unfused kernels, exactly."""

from datetime import datetime

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, generate_weather, kernels
from flech_sim.households.ev import EvStep

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")

FIELDS = ("net_kw", "base_kw", "heat_kw", "ev_kw", "battery_kw", "pv_kw", "allocated_kw", "by_feeder_kw")
STATE = ("t_in", "ev_remaining_kwh", "soc_kwh", "ev_unmet_kwh", "violation_steps", "violation_degree_minutes")


@pytest.fixture(scope="module")
def weather():
    return generate_weather("winter", datetime(2024, 1, 8), 3 * 96, 15, np.random.SeedSequence(21))


def test_plain_step_equals_the_unfused_kernels():
    rng = np.random.default_rng(3)
    w = generate_weather("summer", datetime(2024, 6, 1), 10, 15, np.random.SeedSequence(1))
    fleet = HouseholdFleet.create(500, w, 2, engine="numba")
    P, sc = fleet._packed, fleet._scalars
    t_in, rem, soc = rng.normal(20.5, 1.5, 500), rng.random(500) * 20, rng.random(500) * 8
    base = rng.random(500) * 2
    ev = EvStep(rng.random(500) < 0.5, rng.integers(0, 90, 500), rng.random(500) < 0.2, rng.random(500) * 15)
    before = (t_in.copy(), rem.copy(), soc.copy())
    t2, r2, s2, rows, unmet = kernels.plain_step(P, sc, -3.0, 250.0, t_in, rem, soc, base, ev)
    r1, u1 = kernels.ev_events(rem, ev)
    dp = kernels.default_powers(P, sc, -3.0, 250.0, t_in, r1, soc, base, ev.connected)
    t1, r1, s1, net = kernels.advance(P, sc, -3.0, t_in, r1, soc, dp, base, dp[3], dp[4], dp[5])
    for a, b in ((t2, t1), (r2, r1), (s2, s1), (rows[:6], dp), (rows[6], net), (unmet, u1)):
        np.testing.assert_array_equal(a, b)
    assert np.any(unmet > 0) and np.any(rows[4] > 0)  # cars left unmet and cars charged: both branches run
    for a, b in zip((t_in, rem, soc), before, strict=True):  # new arrays: the inputs are untouched
        np.testing.assert_array_equal(a, b)


def test_plain_and_controlled_steps_equal_in_both_engines(weather):
    """Plain steps (fused) between controlled ones, on the fleet and on a forecast copy: every result and
    the state after each step agree exactly with the numpy engine."""
    out = {}
    for e in ("numpy", "numba"):
        fleet = HouseholdFleet.create(120, weather, 8, n_feeders=3, n_owners=2, engine=e)
        got = []
        for i in range(150):
            ctl = None
            if 60 <= i < 70:
                ctl = Control(target_kw=np.full(2, -5.0), by="owner", duration_steps=70 - i)
            r = fleet.step(ctl)
            got.append([getattr(r, f).copy() for f in FIELDS] + [getattr(fleet, f).copy() for f in STATE])
        twin = fleet.forecast_copy(np.arange(0, 120, 2))
        for _ in range(40):
            r = twin.step()
            got.append([getattr(r, f).copy() for f in FIELDS] + [getattr(twin, f).copy() for f in STATE[:4]])
        out[e] = got
    for a, b in zip(out["numpy"], out["numba"], strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert sum(int(np.any(s[6])) for s in out["numba"]) >= 8  # the controlled steps did move homes
    assert sum(int(np.any(s[3] > 0)) for s in out["numba"]) > 20  # EVs charged in plain steps


def test_the_plain_step_takes_the_fused_kernel(weather, monkeypatch):
    fleet = HouseholdFleet.create(30, weather, 4, engine="numba")
    fleet.step()

    def broken(*a, **k):
        raise AssertionError("the plain step must not take the unfused kernels")

    for name in ("ev_events", "default_powers", "advance"):
        monkeypatch.setattr(kernels, name, broken)
    calls = []
    fused = kernels.plain_step
    monkeypatch.setattr(kernels, "plain_step", lambda *a: calls.append(1) or fused(*a))
    fleet.step()
    assert calls == [1]


def test_owners_horizon_over_groups_equals_the_per_household_max(weather):
    """HouseholdFleet._owners_horizon reduces over groups when each has one owner; a grouping whose groups
    span owners takes the per-household path. Both give each household its owner's longest duration."""
    fleet = HouseholdFleet.create(90, weather, 5, n_feeders=3, n_owners=3, engine="numba")
    rng = np.random.default_rng(6)
    for by in (fleet.owner * 3 + fleet.feeder, fleet.feeder):  # one owner per group; groups spanning owners
        n_groups = int(by.max()) + 1
        longest = rng.integers(0, 20, n_groups)
        act = np.sort(rng.choice(90, 50, replace=False))
        want = np.array([max(longest[by[j]] for j in act if fleet.owner[j] == fleet.owner[i]) for i in act])
        np.testing.assert_array_equal(fleet._owners_horizon(act, by, longest), want)
