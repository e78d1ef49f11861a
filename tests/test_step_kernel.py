"""The compiled controlled step (kernels.order_layers, start_twins, plan_floor, headroom, controlled_tail)
against the numpy reference, for exact equality.

Both engines run the same IEEE operations in the same order, so a group-target step must give the same
powers, allocations and shortfalls bit for bit (up to the sign of a zero, which no sum sees). The
compiled path also reuses last step's plans and floors: the roll-outs below hold layered commitments
long enough for that reuse to carry most of the rows, so a floor kept where it should have been
recomputed (or the reverse) shows up as a difference.
"""

import dataclasses
from datetime import datetime

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, generate_weather, kernels
from flech_sim.households.ev import EvStep
from flech_sim.households.fleet import order_layers
from flech_sim.households.flex import Deviation, window_flex
from flech_sim.households.physics import recovery_floor, simulate_default

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")

FIELDS = ("net_kw", "heat_kw", "ev_kw", "battery_kw", "allocated_kw", "achieved_kw", "shortfall_kw")


@pytest.fixture(scope="module")
def weather():
    return generate_weather("winter", datetime(2024, 1, 8), 4 * 96, 15, np.random.SeedSequence(3))


def test_order_layers_equal_numpy_on_random_cases():
    rng = np.random.default_rng(1)
    sorted_some = 0
    for _ in range(600):
        n_layers, n_groups = int(rng.integers(1, 6)), int(rng.integers(1, 7))
        layers = rng.normal(0, 2, (n_layers, n_groups)) * (rng.random((n_layers, n_groups)) < 0.6)
        if rng.random() < 0.2:  # layers that cancel: a group asked for no net change
            layers[-1] = -layers[:-1].sum(axis=0) if n_layers > 1 else layers[-1]
        dur = rng.integers(1, 6, (n_layers, n_groups))  # many ties: the sort must be stable
        target = layers.sum(axis=0)
        ref = order_layers(layers, dur, target)
        got = kernels.order_layers(layers, dur, target)
        for a, b in zip(ref, got, strict=True):
            assert a.shape == b.shape and a.dtype.kind == b.dtype.kind
            np.testing.assert_array_equal(a, b)
        # invariants: used layers first, longest first among them; every used duration listed once
        lay, d, used, needed, _, _ = ref
        assert np.all(np.diff(used.astype(int), axis=0) <= 0)
        assert np.all(np.where(used[1:], np.diff(d, axis=0) <= 0, True))
        np.testing.assert_array_equal(needed, np.unique(d[used]) if used.any() else [1])
        sorted_some += int(n_layers > 1 and not np.array_equal(lay, layers[: lay.shape[0]]))
    assert sorted_some > 50


def test_start_twins_equal_numpy():
    rng = np.random.default_rng(2)
    n = 300
    in_event = rng.choice([-1.0, 0.0, 1.0], n)
    asked = rng.choice([-1.0, 0.0, 1.0], n)
    state = tuple(rng.normal(20, 2, n) for _ in range(3))
    twins = tuple(rng.normal(20, 2, n) for _ in range(3))
    ev = EvStep(rng.random(n) < 0.5, rng.integers(0, 90, n), rng.random(n) < 0.2, rng.random(n) * 10)
    free, out = kernels.start_twins(in_event, asked, state, twins, ev)
    want_free = (in_event == 0) | (in_event != asked)
    np.testing.assert_array_equal(free, want_free)
    np.testing.assert_array_equal(out[0], np.where(want_free, state[0], twins[0]))
    rem = np.where(ev.arriving, ev.energy, twins[1] - np.where(ev.connected, 0.0, twins[1]))
    np.testing.assert_array_equal(out[1], np.where(want_free, state[1], rem))
    np.testing.assert_array_equal(out[2], np.where(want_free, state[2], twins[2]))


def _weak(fleet, factor):
    """The fleet with heaters ``factor`` times as strong: a home then needs hours to recover, so its floor
    depends on how far ahead it looks (with full-size heaters most floors are T_min whatever the horizon)."""
    fleet.p = dataclasses.replace(fleet.p, p_heat_max=fleet.p.p_heat_max * factor)
    if fleet.engine == "numba":
        fleet._packed = kernels.pack(fleet.p)
    return fleet


def _plans(fleet, k, s0=0):
    idx = np.arange(fleet.n)
    tr = simulate_default(
        fleet.p, fleet.t_in, fleet.ev_remaining_kwh, fleet.soc_kwh, s0, k, lambda s: fleet._inputs(s, idx, True)
    )
    return tr


def test_plan_floor_equals_recovery_floor_per_horizon(weather):
    fleet = _weak(HouseholdFleet.create(60, weather, 4, engine="numba"), 0.25)
    for _ in range(30):
        fleet.step()
    r, s, k = fleet.recovery_steps, fleet.step_index, 12
    tr = _plans(fleet, k, s)
    t_out, irr = fleet._forecast_weather(s, k + r)
    rng = np.random.default_rng(4)
    horizon = rng.integers(1, k + 3, fleet.n)  # some beyond the plan: those look k ahead
    got = kernels.plan_floor(fleet._packed, fleet._scalars, t_out, irr, tr.t_in, horizon, r)
    want = _floor_reference(fleet, tr.t_in, horizon, s, k)
    np.testing.assert_array_equal(got, want)
    # the horizons matter here: a floor looking k ahead differs from each household's own in many places
    assert np.count_nonzero(want != recovery_floor(fleet.p, t_out, irr, tr.t_in)) > 20


def _floor_reference(fleet, t_ref, hor, s, k):
    """recovery_floor over the whole plan, then each household's own horizon over its first rows."""
    r = fleet.recovery_steps
    to, ir = fleet._forecast_weather(s, k + r)
    want = recovery_floor(fleet.p, to, ir, t_ref)
    for i in range(fleet.n):
        if hor[i] < k:
            to_h, ir_h = fleet._forecast_weather(s, hor[i] + r)
            sub = fleet.p.subset(np.array([i]))
            want[: hor[i] + 1, i] = recovery_floor(sub, to_h, ir_h, t_ref[: hor[i] + 1, i : i + 1])[:, 0]
    return want


def test_headroom_equals_window_flex_of_each_duration(weather):
    fleet = HouseholdFleet.create(80, weather, 6, engine="numba")
    for _ in range(20):
        fleet.step()
    s, k = fleet.step_index, 10
    tr = _plans(fleet, k, s)
    t_out, irr = fleet._forecast_weather(s, k + fleet.recovery_steps)
    tr = type(tr)(**{**tr.__dict__, "t_floor": recovery_floor(fleet.p, t_out, irr, tr.t_in)})
    rng = np.random.default_rng(8)
    act = np.arange(fleet.n)
    start = tuple(x + rng.normal(0, 0.3, fleet.n) for x in (fleet.t_in, fleet.ev_remaining_kwh, fleet.soc_kwh))
    force = rng.random(fleet.n) < 0.5
    durs = np.array([1, 3, 4, 10])
    got = kernels.headroom(
        fleet._packed, fleet._scalars, tr, durs, s, force, act, (fleet.t_in, fleet.ev_remaining_kwh, fleet.soc_kwh),
        start,
    )  # fmt: skip
    dev = Deviation(*(a - b for a, b in zip((fleet.t_in, fleet.ev_remaining_kwh, fleet.soc_kwh), start, strict=True)))
    for j, d in enumerate(durs):
        for tier, forced in ((0, False), (1, True)):
            f = window_flex(fleet.p, tr.head(int(d)), int(d), s, dev, forced, starts=np.zeros(1, np.int64))
            want = np.array([getattr(f, x)[0] for x in f.__dataclass_fields__])
            if tier == 1:  # forced only where force
                f0 = window_flex(fleet.p, tr.head(int(d)), int(d), s, dev, False, starts=np.zeros(1, np.int64))
                want = np.where(force, want, np.array([getattr(f0, x)[0] for x in f0.__dataclass_fields__]))
            np.testing.assert_array_equal(got[tier, j], want)
    assert np.count_nonzero(got[1] != got[0]) > 0  # forcing frees more headroom somewhere


def _random_controls(rng, fleet, hh, group, steps):
    """Layered group targets over a copy of several owners: long commitments with shorter calls inside,
    gaps, sign flips, per-group force; durations count down as a commitment runs (plans are reused)."""
    n_groups = int(group.max()) + 1
    fc = fleet.forecast(8, 8, by=fleet.owner * fleet.n_feeders + fleet.feeder, households=hh)
    down, up = fc.flex_down_kw[0, :n_groups], fc.flex_up_kw[0, :n_groups]
    out = []
    end_long = int(rng.integers(20, 40))
    for s in range(steps):
        if s % 37 in (30, 31, 32):
            out.append(None)
            continue
        if s == end_long:
            end_long = s + int(rng.integers(15, 40))
        sign = -1.0 if (s // 25) % 2 == 0 else 1.0
        base = (-down if sign < 0 else up) * rng.uniform(0.1, 0.6) * (rng.random(n_groups) < 0.8)
        left = end_long - s
        rows, durs = [base], [np.full(n_groups, left)]
        if rng.random() < 0.5:  # a short call against (or with) the long one
            rows.append(-0.5 * base * rng.choice([-1.0, 1.0]))
            durs.append(np.minimum(rng.integers(1, 5, n_groups), left))
        force = rng.random(n_groups) < 0.3 if rng.random() < 0.4 else False
        alloc = "greedy" if rng.random() < 0.7 else "proportional"
        if len(rows) == 1 and rng.random() < 0.5:
            out.append(Control(target_kw=base, by=group, duration_steps=left, force=force, allocation=alloc))
        else:
            out.append(
                Control(target_kw=np.array(rows), by=group, duration_steps=np.array(durs), force=force,
                        allocation=alloc)
            )  # fmt: skip
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shared_copy_random_rollout_equal_in_both_engines(weather, seed):
    """Random layered commitments of three owners in one copy (separate_owners) and of one owner alone,
    stepped by both engines: every household's powers, allocations and shortfalls agree exactly."""
    n_owners, n_feeders, per = 4, 3, 30
    out = {}
    for e in ("numpy", "numba"):
        fleet = HouseholdFleet.create(
            n_owners * per, weather, 10 + seed, n_feeders=n_feeders, n_owners=n_owners, engine=e
        )
        if seed:  # weak heaters: floors that depend on each owner's horizon
            _weak(fleet, 0.2 * seed)
        for _ in range(36):
            fleet.step()
        results = []
        for owners, separate in (([0, 1, 3], True), ([2], False)):
            hh = np.flatnonzero(np.isin(fleet.owner, owners))
            group = (fleet.owner * n_feeders + fleet.feeder)[hh]
            twin = fleet.forecast_copy(hh, separate_owners=separate)
            controls = _random_controls(np.random.default_rng(seed + 100 * len(owners)), fleet, hh, group, 90)
            results += [twin.step(c) for c in controls]
        out[e] = results
    controlled = 0
    for x, y in zip(out["numpy"], out["numba"], strict=True):
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f), err_msg=f"step {x.step} {f}")
        if x.group_target_kw is not None:
            np.testing.assert_array_equal(x.group_achieved_kw, y.group_achieved_kw)
            np.testing.assert_array_equal(x.group_shortfall_kw, y.group_shortfall_kw)
        controlled += int(np.any(x.allocated_kw))
    assert controlled > 120
