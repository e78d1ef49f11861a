"""The compiled layer allocation (kernels.allocate_layers, kernels.allocate) against the numpy reference.

Both run the same IEEE operations in the same order, so they must agree exactly (up to the sign of a
zero, which no later sum sees): random cases with several groups, layers of different durations and
signs, greedy and proportional allocation, owner segments, previous offsets and a forced tier.
"""

import numpy as np
import pytest

from flech_sim.households import kernels
from flech_sim.households.fleet import _DF, allocate_layers
from flech_sim.households.flex import DeviceFlex, allocate

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")


def _flex(rng, n):
    """Random headroom with many exact zeros (ties in the greedy order) and a few rounded values."""
    f = []
    for _ in _DF:
        v = rng.exponential(1.0, n) * (rng.random(n) < 0.7)
        v = np.where(rng.random(n) < 0.2, np.round(v, 1), v)
        f.append(v[None, :])
    return DeviceFlex(*f)


def _case(rng):
    n = int(rng.integers(1, 60))
    n_groups = int(rng.integers(1, 6))
    group = np.sort(rng.integers(0, n_groups, n))
    n_layers = int(rng.integers(1, 4))
    durs = rng.choice([1, 2, 4, 8], size=int(rng.integers(1, 4)), replace=False)
    layers = rng.normal(0, 3, (n_layers, n_groups)) * (rng.random((n_layers, n_groups)) < 0.85)
    layers = np.where(rng.random(layers.shape) < 0.2, np.round(layers), layers)
    layer_dur = rng.choice(np.append(durs, 16), size=(n_layers, n_groups))  # 16: no headroom for it
    target = layers.sum(axis=0)
    used = (layers != 0) & (target != 0)
    # as HouseholdFleet._controlled: the layers of each group longest first
    order = np.argsort(np.where(used, -layer_dur, 1), axis=0, kind="stable")
    rank = max(int(used.sum(axis=0).max()), 1)
    layer_dur, layers, used = (np.take_along_axis(x, order, axis=0)[:rank] for x in (layer_dur, layers, used))
    tiers = [{int(d): _flex(rng, n) for d in durs}]
    if rng.random() < 0.4:  # a forced tier: more headroom for some households
        tiers.append({d: DeviceFlex(*(x + _flex(rng, n).__dict__[k] for k, x in f.__dict__.items()))
                      for d, f in tiers[0].items()})  # fmt: skip
    prev_off = rng.normal(0, 1, n) * (rng.random(n) < 0.5)
    prev_off = np.where(rng.random(n) < 0.2, np.round(prev_off), prev_off)
    segment = None
    if rng.random() < 0.5:  # owners: constant within a group, ascending with it
        seg_of_group = np.sort(rng.integers(0, 3, n_groups))
        segment = seg_of_group[group]
    return tiers, target, layers, layer_dur, used, group, prev_off, segment


@pytest.mark.parametrize("mode", ["greedy", "proportional"])
def test_compiled_layer_allocation_equals_numpy_on_random_cases(mode):
    rng = np.random.default_rng(17)
    nonzero = 0
    for _ in range(400):
        args = _case(rng)
        ref = allocate_layers(*args[:7], mode, args[7], "numpy")
        fast = allocate_layers(*args[:7], mode, args[7], "numba")
        np.testing.assert_array_equal(fast, ref)
        nonzero += int(np.count_nonzero(ref))
        # the offsets follow each group's net target's sign (a real allocation, not all zeros)
        assert np.all(ref * np.sign(args[1])[args[5]] >= 0)
    assert nonzero > 1000


@pytest.mark.parametrize("mode", ["greedy", "proportional"])
def test_compiled_allocate_equals_flex_allocate(mode):
    rng = np.random.default_rng(5)
    for _ in range(500):
        n, n_groups = int(rng.integers(1, 80)), int(rng.integers(1, 7))
        group = np.sort(rng.integers(0, n_groups, n))
        head = rng.exponential(1.0, n) * (rng.random(n) < 0.7)
        head = np.where(rng.random(n) < 0.3, np.round(head), head)  # ties
        prev = np.where(rng.random(n) < 0.5, head * rng.random(n) * 1.5, 0.0)
        need = rng.exponential(3.0, n_groups) * (rng.random(n_groups) < 0.8)
        segment = np.sort(rng.integers(0, 3, n_groups))[group] if rng.random() < 0.5 else None
        ref = allocate(head, group, need, prev, mode, segment)
        np.testing.assert_array_equal(kernels.allocate(head, group, need, prev, mode, segment), ref)
        # hand-checkable invariants: within headroom, at most the need per group
        assert np.all(ref <= head + 1e-12) and np.all(np.bincount(group, ref, n_groups) <= need + 1e-9)


def test_greedy_order_breaks_ties_as_lexsort():
    """Equal extras: households in the event (prev > 0) first, then in their original order."""
    head = np.array([1.0, 1.0, 1.0, 1.0])
    prev = np.array([0.0, 0.0, 0.5, 0.0])
    group = np.zeros(4, dtype=np.int64)
    need = np.array([2.0])
    out = kernels.allocate(head, group, need, prev)
    # keep 0.5 for household 2, then 1.5 more greedily: household 2's remaining 0.5, then household 0's 1.0
    np.testing.assert_array_equal(out, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(out, allocate(head, group, need, prev))


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        kernels.allocate(np.ones(2), np.zeros(2, dtype=np.int64), np.ones(1), np.zeros(2), "fair")


@pytest.mark.parametrize("mode", ["greedy", "proportional"])
def test_shared_controlled_rollout_equal_in_both_engines(mode):
    """A shared copy of two owners (separate_owners: the greedy sums restart at each owner) under the
    layered commitments of bench_households.py --rollout: both engines give the same outcomes."""
    import importlib.util
    from dataclasses import replace
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_households.py"
    spec = importlib.util.spec_from_file_location("bench_households", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = {}
    for e in ("numpy", "numba"):
        fleet, _ = bench.rollout_case(15, e)
        hh = np.flatnonzero((fleet.owner == 1) | (fleet.owner == 2))
        twin = fleet.forecast_copy(hh, separate_owners=True)
        controls = [c if c is None else replace(c, allocation=mode) for c in bench.rollout_controls(fleet, hh)]
        out[e] = [twin.step(c) for c in controls]
    controlled = 0
    for x, y in zip(out["numpy"], out["numba"], strict=True):
        for f in ("net_kw", "heat_kw", "ev_kw", "battery_kw", "allocated_kw", "achieved_kw", "shortfall_kw"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f), err_msg=f"step {x.step} {f}")
        if x.group_target_kw is not None:
            np.testing.assert_array_equal(x.group_achieved_kw, y.group_achieved_kw)
        controlled += int(np.any(x.allocated_kw))
    assert controlled > 80
