"""The roll-out's controls computed at once (flech_sim.rollout) equal the reference built step by step in Python
(world.ReferenceControls: _step_targets, _control_at, _owners_control), Control for Control: same arrays,
dtypes, shapes, layer order and padding, same force, and the same per-owner exactness flags."""

import numpy as np
import pytest

from flech_sim.households.kernels import HAVE_NUMBA
from flech_sim.rollout import RolloutControls, dense_targets
from flech_sim.world import ReferenceControls

pytestmark = pytest.mark.skipif(not HAVE_NUMBA, reason="the compiled pass needs numba")


def assert_same_control(got, ref, where):
    if ref is None:
        assert got is None, where
        return
    assert got is not None, where
    for name in ("target_kw", "duration_steps", "force"):
        a, b = getattr(got, name), getattr(ref, name)
        assert type(a) is type(b), (where, name, type(a), type(b))
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, (where, name, a.dtype, b.dtype, a.shape, b.shape)
            np.testing.assert_array_equal(a, b, err_msg=f"{where} {name}")
            # the same sign of every zero too: the fleet's sums see the very same floats
            np.testing.assert_array_equal(np.signbit(a), np.signbit(b), err_msg=f"{where} {name} signs")
        else:
            assert a == b, (where, name, a, b)
    assert got.by is ref.by and got.allocation == ref.allocation and got.offset_kw is None


def nested_schedule(rng, n_cols, n_steps):
    """(columns, steps) kW: per column a few nested or overlapping blocks of either sign, with gaps, equal levels
    (a block ending where another of the same height starts), -0.0 and whole empty steps."""
    kw = np.zeros((n_cols, n_steps))
    for c in range(n_cols):
        for _ in range(rng.integers(0, 6)):
            a = int(rng.integers(0, n_steps))
            b = int(min(n_steps, a + rng.integers(1, 30)))
            level = float(rng.choice([0.5, 1.0, 2.0, rng.uniform(0.1, 9.0)]))
            kw[c, a:b] += level * (1.0 if rng.random() < 0.35 else -1.0)
        if n_steps > 5 and rng.random() < 0.3:  # a plateau: two blocks of the same level back to back
            a = int(rng.integers(0, n_steps - 4))
            kw[c, a : a + 4] = kw[c, a]
        if rng.random() < 0.2:
            kw[c, rng.integers(0, n_steps)] = -0.0
    if rng.random() < 0.3:
        kw[:, rng.integers(0, n_steps)] = 0.0
    return kw


def random_case(rng, one_column_first=False):
    """Owners (owner-major) of 1-3 group columns each, some groups without any owner of the copy, homes per group."""
    n_owners = int(rng.integers(1, 5))
    cols, g = [], 0
    for o in range(n_owners):
        if o == 0 and one_column_first:
            cols.append(np.array([0], dtype=np.int64))
            g = 1
            continue
        g += int(rng.integers(0, 2))  # a gap: a portfolio that is not in this copy
        n = int(rng.integers(1, 4))
        cols.append(np.arange(g, g + n, dtype=np.int64))
        g += n
    by = np.repeat(np.concatenate(cols), rng.integers(1, 4, size=sum(map(len, cols))))
    now = int(rng.integers(0, 50))
    plans = []
    for c in cols:
        base = now + int(rng.integers(-8, 6))
        plans.append(((base, nested_schedule(rng, len(c), int(rng.integers(1, 60)))), c))
    return plans, now, by, g


def force_of(rng, n_portfolios):
    f = rng.random(n_portfolios + 3) < 0.5
    return f if rng.random() < 0.6 else np.zeros_like(f)


def test_shared_controls_equal_the_reference_on_random_plans():
    rng = np.random.default_rng(20261202)
    seen = {"layers>1": 0, "padded": 0, "both signs": 0, "one column": 0, "none": 0, "forced": 0}
    for case in range(250):
        plans, now, by, n_portfolios = random_case(rng, one_column_first=case % 5 == 0)
        force = force_of(rng, n_portfolios)
        n_steps = int(rng.integers(1, 90))
        fast = RolloutControls(plans, now, n_steps, by, force)
        ref = ReferenceControls(plans, now, by, n_portfolios + 3, force)
        for i in range(n_steps):
            (a, ea), (b, eb) = fast.shared(i), ref.shared(i)
            assert_same_control(a, b, (case, i))
            assert ea == eb, (case, i, ea, eb)
            if b is None:
                seen["none"] += 1
                continue
            t, d = np.asarray(b.target_kw), np.asarray(b.duration_steps)
            seen["layers>1"] += len(t) > 1
            seen["padded"] += bool(d.max() > d[t != 0].max())  # rows past an owner's rank: a duration nobody holds
            seen["both signs"] += bool((t > 0).any() and (t < 0).any())
            seen["one column"] += len(plans[0][1]) == 1 and plans[0][1][0] == 0
            seen["forced"] += not isinstance(b.force, bool)
    assert all(seen.values()), seen  # every feature met, or the comparison proves little (inexact: below)


def test_single_owner_controls_equal_the_reference_on_random_plans():
    rng = np.random.default_rng(7)
    seen = {1: 0, 2: 0}
    for case in range(250):
        plans, now, by, n_portfolios = random_case(rng)
        plans = plans[-1:]  # the owner's own copy: its homes alone
        by = by[np.isin(by, plans[0][1])]
        force = force_of(rng, n_portfolios)
        n_steps = int(rng.integers(1, 90))
        fast = RolloutControls(plans, now, n_steps, by, force)
        ref = ReferenceControls(plans, now, by, n_portfolios + 3, force)
        for i in range(n_steps):
            a, b = fast.single(i), ref.single(i)
            assert_same_control(a, b, (case, i))
            if b is not None:
                seen[min(np.ndim(b.target_kw), 2)] += 1
    assert seen[1] and seen[2]  # single layers (an int duration) and stacks (an array of durations)


def test_a_one_column_owner_of_many_layers_is_flagged_as_the_reference_flags_it():
    """Eight or more nested layers in the first owner's one group column: numpy sums them pairwise, the copy's
    wider stack row by row; the fast path must flag exactly the steps the reference flags."""
    rng = np.random.default_rng(1)
    flags = set()
    for _ in range(60):
        n = 12
        kw = np.zeros((1, 30))
        for j in range(n):  # nested sheds ending one step apart: n layers at step 0
            kw[0, : n - j] -= 10.0 ** rng.uniform(-2.0, 2.0)
        other = (0, -np.ones((2, 5)))
        plans = [((0, kw), np.array([0])), (other, np.array([1, 2]))]
        by = np.repeat(np.arange(3), 2)
        fast, ref = RolloutControls(plans, 0, 20, by), ReferenceControls(plans, 0, by, 3, np.zeros(3, bool))
        for i in range(20):
            (a, ea), (b, eb) = fast.shared(i), ref.shared(i)
            assert_same_control(a, b, i)
            assert ea == eb
            flags.add(eb[0])
    assert flags == {True, False}


def test_dense_targets_hold_what_step_targets_hold():
    from flech_sim.world import _step_targets

    rng = np.random.default_rng(3)
    for _ in range(100):
        n_cols, now = int(rng.integers(1, 4)), int(rng.integers(0, 20))
        base, kw = now + int(rng.integers(-15, 10)), nested_schedule(rng, n_cols, int(rng.integers(1, 40)))
        cols = np.arange(n_cols) + 2
        dense = dense_targets((base, kw), n_cols, now)
        ref = _step_targets((base, kw), cols, n_cols + 2, now)
        assert not dense[-1].any()  # the walk's end
        for s in range(now, now + len(dense) + 5):
            want = ref[s][cols] if s in ref else np.zeros(n_cols)
            got = dense[s - now] if s - now < len(dense) else np.zeros(n_cols)
            np.testing.assert_array_equal(got, want)
        assert all(now <= s < now + len(dense) for s in ref)


def test_committed_and_shared_forecasts_are_the_same_with_either_controls(tmp_path, monkeypatch):
    """World level, the fleet's numba physics both times: the forecasts under commitments, alone and shared,
    are bit for bit the same whether their controls come from the compiled pass or from the reference."""
    from flech_sim.world import World

    from .test_shared_rollout import plans_for, world_of

    world = world_of(tmp_path, "numba")
    world.start()
    world.env.run(until=17 * 60)
    now = world.fleet.step_index
    first, duration = now + 6, 4
    plans = plans_for(world, now, first, duration)
    unforced = {o: p for o, p in plans.items() if not world._force[world.owners.index(o) * len(world.feeders)]}
    built = []
    real = World._controls

    def spy(self, *a):
        built.append(type(c := real(self, *a)))
        return c

    monkeypatch.setattr(World, "_controls", spy)

    def forecasts():
        alone = [world._forecast_committed(o, now, first, duration, *p) for o, p in plans.items()]
        return alone + list(world._forecast_shared(now, first, duration, unforced).values())

    fast = forecasts()
    assert set(built) == {RolloutControls}
    monkeypatch.setattr(
        World, "_controls", lambda self, p, now, n, by: ReferenceControls(p, now, by, self.n_portfolios, self._force)
    )
    ref = forecasts()
    assert len(fast) == len(ref) == len(plans) + len(unforced)
    for a, b in zip(fast, ref, strict=True):
        for name in ("baseline_kw", "flex_down_kw", "flex_up_kw", "rebound_down_kwh"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert np.abs(a.baseline_kw).sum() > 0


def test_run_lengths_of_all_feeders_at_once_equal_the_walk_per_feeder(tmp_path):
    """World._run_length (vectorised over feeders) against its reference on random schedules: runs of either sign
    through the window's end, reaching the schedule's end or the two-day cap, gaps before a later commitment,
    windows reaching past the schedule or before its base."""
    from flech_sim.world import _run_length_reference

    from .test_shared_rollout import world_of

    world = world_of(tmp_path, "numba")
    cap = 2 * world.steps_per_day
    rng = np.random.default_rng(11)
    seen = set()
    for _ in range(400):
        n = int(rng.integers(1, cap + 60))
        sched = nested_schedule(rng, int(rng.integers(1, 6)), n)
        if rng.random() < 0.3:
            sched[:, : int(rng.integers(0, n))] = -1.0  # a run long enough for the cap
        duration = int(rng.integers(1, 12))
        j = int(rng.integers(-duration - 3, n + 3))
        for sign in (-1.0, 1.0):
            got = world._run_length(sched, j, duration, sign)
            want = _run_length_reference(sched, j, duration, sign, cap)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want, err_msg=f"{j} {duration} {sign}")
            seen.update({"held" if (want > duration).any() else "not held", "gap" if (want == 0).any() else ""})
            seen.add("capped" if (want == cap).any() else "")
    assert {"held", "not held", "gap", "capped"} <= seen, seen
