"""The compiled baseline forecast (households/forecast_kernels.py) against the simulated one.

``baseline_power`` with the numba engine sums the default operation by group inside one loop; it
must equal, bit for bit, what simulating the trajectories and summing them gives, both with the
numpy reference (``engine="numpy"``) and with the numba trajectories (``forecast`` with flexibility
windows), for any grouping, selection, chunking and horizon (across days, past the weather).
"""

from datetime import datetime

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, generate_weather, kernels
from flech_sim.households.fleet import HouseholdFleet as Fleet

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")

START = datetime(2024, 1, 8)
N = 300


@pytest.fixture(scope="module")
def weather():
    return generate_weather("winter", START, 3 * 96, 15, np.random.SeedSequence(21))


def pair(weather, **kw):
    return [
        HouseholdFleet.create(N, weather, np.random.SeedSequence(8), n_feeders=5, n_owners=4, engine=e, **kw)
        for e in ("numpy", "numba")
    ]


def advance(fleets, steps, start):
    """Step both fleets alike: default operation, a shed of the feeders now and then (state off plan)."""
    for s in range(start, start + steps):
        ctl = None
        if s % 40 in range(10, 14):
            ctl = Control(target_kw=np.full(5, -15.0), by="feeder", duration_steps=14 - s % 40)
        for f in fleets:
            f.step(ctl)


def test_baseline_power_equals_the_simulated_baseline_across_days(weather):
    ref, fast = pair(weather)
    checked = 0
    for at, steps in ((0, 37), (37, 51), (88, 40), (128, 96), (224, 40)):  # evenings, nights, the horizon's end
        advance((ref, fast), steps, at)
        for k in (1, 17, 96, 150):  # within the day, across midnight, past the weather's end at the last
            for by in ("feeder", "owner"):
                want = ref.baseline_power(k, by=by)
                got = fast.baseline_power(k, by=by)
                assert got.shape == want.shape == (k, 5 if by == "feeder" else 4)
                np.testing.assert_array_equal(got, want, err_msg=f"step {fast.step_index} k {k} by {by}")
                # the numba trajectories summed as before: the same numbers
                np.testing.assert_array_equal(got, fast.forecast(k, 1, by=by).baseline_kw)
                checked += 1
    assert checked == 5 * 4 * 2
    assert fast.ev_remaining_kwh.any()  # cars were charging at some check: the EV sessions were read


@pytest.mark.parametrize("chunk", [1, 7, 64, 2048])
def test_selection_and_chunking_keep_the_reference_order(weather, chunk):
    ref, fast = pair(weather)
    advance((ref, fast), 70, 0)  # 17:30, cars arriving
    sel = np.flatnonzero(np.random.default_rng(4).random(N) < 0.6)
    mask = np.zeros(N, bool)
    mask[sel] = True
    group = np.random.default_rng(5).integers(0, 9, N)
    for households in (sel, mask):
        want = ref.forecast(40, 2, by=group, households=households, chunk=chunk).baseline_kw
        got = fast.forecast(40, 2, by=group, households=households, chunk=chunk, starts=np.zeros(0, np.int64))
        assert got.flex_down_kw.shape == (0, 9) and got.household is None
        np.testing.assert_array_equal(got.baseline_kw, want)
    # a group's sum over its own households, in order: the whole fleet's feeder loads add up
    total = fast.baseline_power(30, by="feeder").sum(axis=1)
    np.testing.assert_allclose(total, ref.forecast(30, 1, by=np.zeros(N, np.int64)).baseline_kw[:, 0], rtol=1e-12)


def test_the_compiled_path_is_taken_and_falls_back_where_it_cannot_apply(weather, monkeypatch):
    ref, fast = pair(weather)
    advance((ref, fast), 20, 0)

    def no_simulation(*a, **k):
        raise AssertionError("simulated the trajectories")

    monkeypatch.setattr(Fleet, "_simulate", no_simulation)
    fast.baseline_power(24, by="feeder")  # compiled: no trajectories
    with pytest.raises(AssertionError, match="simulated"):
        ref.baseline_power(24, by="feeder")  # the numpy engine is the reference: it simulates
    monkeypatch.undo()
    # perfect forecasts read the actual base load: no factors, so the simulated path, same result
    ref_p, fast_p = pair(weather, perfect_forecast=True)
    advance((ref_p, fast_p), 20, 0)
    assert fast_p._baseline_sums(24, *fast_p.group_index("feeder"), np.arange(N), 2048) is None
    np.testing.assert_array_equal(fast_p.baseline_power(24, by="feeder"), ref_p.baseline_power(24, by="feeder"))


def test_ev_session_table_gives_the_block_status(weather):
    fleet = pair(weather)[1]
    ev = fleet.ev_schedule
    for start, k in ((0, 5), (50, 100), (90, 200)):
        arr, dep, energy, row = ev.session_table(start, k)
        blk = ev.block(start, k)
        s = np.arange(start, start + k)[:, None]
        a1, d1, e1 = arr[row - 1], dep[row - 1], energy[row - 1]
        a2, d2, e2 = arr[row], dep[row], energy[row]
        has = fleet.p.has_ev
        conn = (((a1 <= s) & (s < d1)) | ((a2 <= s) & (s < d2))) & has
        arriving = ((a1 == s) | (a2 == s)) & has
        assert np.array_equal(conn, blk.connected) and np.array_equal(arriving, blk.arriving)
        assert np.array_equal(np.where(a2 == s, e2, np.where(a1 == s, e1, 0.0)) * has, blk.energy)
        assert blk.arriving.any() or k < 96
