"""headroom_from_plans with the numba engine (one simulation per household from its state, one more from
its plan only if it is in an event) against the numpy reference (both directions simulated in full).

The values must agree exactly: every household's trajectory, floor and window are its own."""

from datetime import datetime

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, generate_weather, kernels

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")

N = 240


@pytest.fixture(scope="module")
def fleets():
    w = generate_weather("winter", datetime(2024, 1, 8), 3 * 96, 15, np.random.SeedSequence(31))
    return [
        HouseholdFleet.create(N, w, np.random.SeedSequence(9), n_feeders=4, n_owners=2, engine=e)
        for e in ("numpy", "numba")
    ]


def test_headroom_from_plans_equals_the_reference_with_events_both_ways(fleets):
    ref, fast = fleets
    checked = 0
    for s in range(80):
        ctl = None
        if 30 <= s < 60:  # feeder 0 sheds, feeder 2 takes more, for a long commitment
            ctl = Control(target_kw=np.array([-20.0, 0.0, 12.0, 0.0]), by="feeder", duration_steps=60 - s)
        for f in (ref, fast):
            f.step(ctl)
        if s in (20, 35, 50, 59, 62):
            assert np.array_equal(ref._in_event, fast._in_event)
            if s in (35, 50):  # the events are under way in both directions, not everywhere
                assert (fast._in_event < 0).any() and (fast._in_event > 0).any() and (fast._in_event == 0).any()
            hh = np.flatnonzero(np.random.default_rng(s).random(N) < 0.7)
            for d in (1, 4, 20):
                for by in ("feeder", "owner"):
                    want, got = ref.headroom_from_plans(d, hh, by), fast.headroom_from_plans(d, hh, by)
                    for name, a, b in zip(("down", "up", "rebound"), want, got, strict=True):
                        np.testing.assert_array_equal(b, a, err_msg=f"step {s} d {d} by {by} {name}")
                    checked += 1
    assert checked == 5 * 3 * 2
    # the shed feeder's households hold their plan: they still offer headroom downwards
    assert ref.headroom_from_plans(4, np.arange(N), "feeder")[0].sum() > 0
