"""Layered control: several commitments of one group, each held for its own duration (issue 10, item 1).

A short call inside a long award must be allocated as a short change: sized as if it had to be held
as long as the award around it, most of it would not be given at all.
"""

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, generate_weather

from .test_households_fleet import START, assert_comfort

N = 400
LONG, SHORT = 24, 1  # steps: a 6-hour award and a 15-minute call at its start


@pytest.fixture(scope="module")
def weather():
    return generate_weather("winter", START, 4 * 96, 15, np.random.SeedSequence(2024))


def fleet_at(weather, engine="numba", start=70):
    fleet = HouseholdFleet.create(
        N, weather, np.random.SeedSequence(7), n_feeders=1, n_owners=1, perfect_forecast=True, engine=engine
    )
    for _ in range(start):
        fleet.step()
    return fleet


def sizes(fleet):
    """(what the group holds for LONG steps, what it gives for one step) from the same state."""
    return fleet.forecast(LONG, LONG).flex_down_kw[0, 0], fleet.forecast(SHORT, SHORT).flex_down_kw[0, 0]


def test_a_short_call_on_a_long_award_is_given_with_its_own_duration(weather):
    fleet = fleet_at(weather)
    long_kw, short_kw = sizes(fleet)
    award, call = 0.6 * long_kw, 0.8 * (short_kw - long_kw)
    assert call > award  # the call is larger than anything holdable for the whole award
    base = fleet.forecast(LONG, 1, starts=np.zeros(0, dtype=np.int64)).baseline_kw[:, 0]
    layered = Control(target_kw=np.array([[-award], [-call]]), duration_steps=np.array([LONG, SHORT]))
    res = fleet.step(layered)
    np.testing.assert_allclose(base[0] - res.by_owner_kw[0], award + call, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(res.group_target_kw, [-(award + call)])
    # ... and the award is still held through its remaining steps after the call
    for j in range(1, LONG):
        res = fleet.step(Control(target_kw=np.array([-award]), duration_steps=LONG - j))
        assert res.group_shortfall_kw[0] < 0.02 * award, j
    assert_comfort(fleet)


def test_summed_into_one_long_target_the_same_call_falls_short(weather):
    """The former allocation, for contrast: one target held for the award's duration."""
    fleet = fleet_at(weather)
    long_kw, short_kw = sizes(fleet)
    award, call = 0.6 * long_kw, 0.8 * (short_kw - long_kw)
    res = fleet.step(Control(target_kw=np.array([-(award + call)]), duration_steps=LONG))
    assert res.group_shortfall_kw[0] > 0.5 * call


def test_a_call_against_the_award_lowers_the_change_now(weather):
    """A 'consume more' call inside a shed: the net change this step is the shed minus the call."""
    fleet = fleet_at(weather)
    long_kw, _ = sizes(fleet)
    base = fleet.forecast(1, 1, starts=np.zeros(0, dtype=np.int64)).baseline_kw[0, 0]
    award, call = 0.6 * long_kw, 0.25 * long_kw
    res = fleet.step(Control(target_kw=np.array([[-award], [call]]), duration_steps=np.array([LONG, SHORT])))
    np.testing.assert_allclose(base - res.by_owner_kw[0], award - call, rtol=1e-9, atol=1e-6)


def test_layers_agree_between_numba_and_numpy(weather):
    ref, fast = fleet_at(weather, "numpy"), fleet_at(weather, "numba")
    long_kw, short_kw = sizes(ref)
    ctl = Control(
        target_kw=np.array([[-0.6 * long_kw], [-0.5 * (short_kw - long_kw)]]), duration_steps=np.array([LONG, 2])
    )
    for j in range(LONG):
        c = ctl if j < 2 else Control(target_kw=np.array([-0.6 * long_kw]), duration_steps=LONG - j)
        a, b = ref.step(c), fast.step(c)
        np.testing.assert_array_equal(a.net_kw, b.net_kw)
    np.testing.assert_array_equal(ref.t_in, fast.t_in)


def test_layered_control_checks_its_shape():
    with pytest.raises(ValueError, match="one row per layer"):
        Control(target_kw=np.zeros((2, 3)), duration_steps=np.array([4, 1, 1]))
