"""kernels.FloorCache: the plans' recovery floors from backward passes kept by their end (issue 12).

The cache must give exactly what kernels.plan_floor (and the numpy reference recovery_floor) gives for
any plan, whichever plans, steps and households filled it before; and it must really reuse kept passes
(a mark put into a kept pass shows in the floors), else the fast path is broken or not taken.
"""

import dataclasses
from datetime import datetime

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, generate_weather, kernels
from flech_sim.households.physics import recovery_floor, simulate_default

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")


@pytest.fixture(scope="module")
def weather():
    return generate_weather("winter", datetime(2024, 1, 8), 4 * 96, 15, np.random.SeedSequence(5))


def _weak(fleet, factor):
    """Heaters ``factor`` times as strong: homes need hours to recover, so floors depend on the horizon."""
    fleet.p = dataclasses.replace(fleet.p, p_heat_max=fleet.p.p_heat_max * factor)
    fleet._packed = kernels.pack(fleet.p)
    fleet._floors = kernels.FloorCache(fleet.n)
    return fleet


def _plan(fleet, t0, s, k, idx):
    tr = simulate_default(
        fleet.p.subset(idx), t0, fleet.ev_remaining_kwh[idx], fleet.soc_kwh[idx], s, k,
        lambda x: fleet._inputs(x, idx, True),
    )  # fmt: skip
    return tr.t_in


def _reference(fleet, t_ref, hor, s, idx):
    """recovery_floor over the whole plan, then each household's own horizon over its first rows."""
    k, r = t_ref.shape[0] - 1, fleet.recovery_steps
    p = fleet.p.subset(idx)
    to, ir = fleet._forecast_weather(s, k + r)
    want = recovery_floor(p, to, ir, t_ref)
    for i in np.flatnonzero(hor < k).tolist():
        to_h, ir_h = fleet._forecast_weather(s, int(hor[i]) + r)
        want[: hor[i] + 1, i] = recovery_floor(p.subset(np.array([i])), to_h, ir_h, t_ref[: hor[i] + 1, i : i + 1])[
            :, 0
        ]
    return want


def test_cache_equals_plan_floor_whatever_filled_it(weather):
    fleet = _weak(HouseholdFleet.create(80, weather, 7, engine="numba"), 0.25)
    for _ in range(30):
        fleet.step()
    rng = np.random.default_rng(8)
    cache, r = fleet._floors, fleet.recovery_steps
    s0 = fleet.step_index
    checked = differs = 0
    # Plans of random households, steps (forward and back), lengths and horizons, in random order: a
    # commitment's end (s + horizon) recurs, so later calls find passes kept by earlier ones.
    for _ in range(60):
        idx = np.sort(rng.choice(fleet.n, int(rng.integers(1, fleet.n)), replace=False))
        s = s0 + int(rng.integers(0, 10))
        k = int(rng.integers(1, 14))
        end = s0 + int(rng.integers(10, 24))  # a few shared absolute ends
        hor = np.clip(end - s + rng.integers(-1, 2, idx.size), 1, k + 2)
        t0 = fleet.t_in[idx] + rng.normal(0, 0.5, idx.size)  # each call a different plan
        t_ref = np.ascontiguousarray(_plan(fleet, t0, s, k, idx))
        to, ir = fleet._forecast_weather(s, k + r)
        pk = np.ascontiguousarray(fleet._packed[:, idx])
        got = cache.floors(pk, fleet._scalars, to, ir, t_ref, hor, r, s, idx)
        np.testing.assert_array_equal(got, kernels.plan_floor(pk, fleet._scalars, to, ir, t_ref, hor, r))
        np.testing.assert_array_equal(got, _reference(fleet, t_ref, hor, s, idx))
        checked += 1
        differs += int(np.any(got != recovery_floor(fleet.p.subset(idx), to, ir, t_ref)))
    assert checked == 60 and differs >= 5  # the horizons matter: a cache keyed wrongly would show


def test_kept_passes_are_reused_and_only_missing_rows_computed(weather):
    fleet = _weak(HouseholdFleet.create(40, weather, 9, engine="numba"), 0.25)
    for _ in range(20):
        fleet.step()
    cache, r, s, k = fleet._floors, fleet.recovery_steps, fleet.step_index, 6
    idx = np.arange(fleet.n)
    hor = np.full(fleet.n, k)
    to, ir = fleet._forecast_weather(s, k + r)
    t_ref = np.ascontiguousarray(_plan(fleet, fleet.t_in, s, k, idx))
    cache.floors(fleet._packed, fleet._scalars, to, ir, t_ref, hor, r, s, idx)
    xs, have = cache._ends[s + k, r]
    assert np.all(have == k + 1)
    # A mark in the kept passes of every other household shows in the next floors of the same end: the
    # next step's plan (one row on) of those households is not recomputed from the weather.
    saved = xs.copy()
    xs[: k + 1, ::2] += 1000.0
    to1, ir1 = fleet._forecast_weather(s + 1, k - 1 + r)
    t1 = np.ascontiguousarray(t_ref[1:] + 0.01)  # another plan: the pass does not depend on it
    second = cache.floors(fleet._packed, fleet._scalars, to1, ir1, t1, hor - 1, r, s + 1, idx)
    want = kernels.plan_floor(fleet._packed, fleet._scalars, to1, ir1, t1, hor - 1, r)  # a fresh pass
    hot = np.maximum(fleet.p.t_min, np.minimum(xs[k - 1 :: -1, :][:k], t1))
    np.testing.assert_array_equal(second[:, 1::2], want[:, 1::2])
    np.testing.assert_array_equal(second[:, ::2], hot[:, ::2])
    assert np.all(have == k + 1)  # nothing new computed
    # An earlier start extends the kept passes by its rows alone.
    xs[:] = saved
    to2, ir2 = fleet._forecast_weather(s - 2, k + 2 + r)
    t2 = np.ascontiguousarray(_plan(fleet, fleet.t_in, s - 2, k + 2, idx))
    third = cache.floors(fleet._packed, fleet._scalars, to2, ir2, t2, hor + 2, r, s - 2, idx)
    assert np.all(cache._ends[s + k, r][1] == k + 3)
    np.testing.assert_array_equal(third, kernels.plan_floor(fleet._packed, fleet._scalars, to2, ir2, t2, hor + 2, r))


def test_the_cache_drops_its_oldest_ends_within_its_bound():
    cache = kernels.FloorCache(10, max_cells=100)
    for end in range(8):
        cache._entry((end, 4), 3)
    assert sum(x.size for x, _ in cache._ends.values()) <= 100
    assert list(cache._ends) == [(5, 4), (6, 4), (7, 4)]
    xs, _ = cache._entry((7, 4), 9)  # grown: its kept rows come along
    assert xs.shape[0] >= 9 and (7, 4) in cache._ends


def test_copies_share_the_cache_and_repeat_rollouts_exactly(weather):
    """Two copies of the same homes stepped under the same commitments, then a copy of other homes: the
    second copy takes every pass from the first (nothing new computed), and every step equals the numpy
    engine's."""
    out = {}
    for e in ("numpy", "numba"):
        fleet = HouseholdFleet.create(60, weather, 11, n_owners=3, n_feeders=2, engine=e)
        fleet.p = dataclasses.replace(fleet.p, p_heat_max=fleet.p.p_heat_max * 0.3)
        if e == "numba":
            fleet._packed = kernels.pack(fleet.p)
        for _ in range(30):
            fleet.step()
        res, counts = [], []
        for owners in ([0, 1], [0, 1], [2]):
            hh = np.flatnonzero(np.isin(fleet.owner, owners))
            group = (fleet.owner * 2 + fleet.feeder)[hh]
            twin = fleet.forecast_copy(hh, separate_owners=True)
            n_groups = int(group.max()) + 1
            fc = fleet.forecast(4, 4, by=fleet.owner * 2 + fleet.feeder, households=hh)
            for i in range(16):
                target = -0.4 * fc.flex_down_kw[0, :n_groups] if i < 12 else None
                ctl = None if target is None else Control(target_kw=target, by=group, duration_steps=12 - i)
                res.append(twin.step(ctl))
            if e == "numba":
                assert twin._floors is fleet._floors
                counts.append(sum(int(h.sum()) for _, h in fleet._floors._ends.values()))
        out[e] = res
        if e == "numba":
            assert counts[0] > 0 and counts[1] == counts[0] < counts[2]
    moved = 0
    for x, y in zip(out["numpy"], out["numba"], strict=True):
        for f in ("net_kw", "heat_kw", "allocated_kw", "achieved_kw", "shortfall_kw"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f))
        moved += int(np.any(x.allocated_kw))
    assert moved >= 30


def test_ends_before_the_fleets_step_are_dropped_and_a_hit_is_kept_longest():
    cache = kernels.FloorCache(10, max_cells=90)
    for end in (3, 5, 9):
        cache._entry((end, 4), 3)
    cache._entry((3, 4), 2)  # a hit: used last, so dropped last
    cache._entry((12, 4), 3)
    assert list(cache._ends) == [(9, 4), (3, 4), (12, 4)]
    cache.drop_before(10)
    assert list(cache._ends) == [(12, 4)]


def test_passes_of_another_recovery_length_are_kept_apart(weather):
    """A fleet whose recovery_steps changes after its first floors (tests/test_flex_recovery.py does) must not
    take passes of the old length: the cache keys them by it too."""
    fleet = _weak(HouseholdFleet.create(30, weather, 3, engine="numba"), 0.25)
    s, k, idx = fleet.step_index, 4, np.arange(30)
    t_ref = np.ascontiguousarray(_plan(fleet, fleet.t_in, s, k, idx))
    hor = np.full(30, k)
    for r in (fleet.recovery_steps, 8):
        to, ir = fleet._forecast_weather(s, k + r)
        got = fleet._floors.floors(fleet._packed, fleet._scalars, to, ir, t_ref, hor, r, s, idx)
        np.testing.assert_array_equal(got, kernels.plan_floor(fleet._packed, fleet._scalars, to, ir, t_ref, hor, r))
    assert len(fleet._floors._ends) == 2
