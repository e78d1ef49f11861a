"""Aggregators asking about the same window at the same moment share one roll-out under their commitments
(issue 12): the world's shared path must give every owner, bit for bit, what its own roll-out gives."""

import numpy as np
import pytest
import simpy

from flech_sim.households import child_seed
from flech_sim.households.kernels import HAVE_NUMBA
from flech_sim.persistor import Persistor
from flech_sim.scenario import DispatchConfig
from flech_sim.world import World

from .test_delivery import perfect

ENGINES = ["numpy", "numba"] if HAVE_NUMBA else ["numpy"]
# id, households per feeder, may force: a first owner on the first feeder alone (one group column), others
LAYOUT = [
    ("agg-a", {"feeder-1": 40}, False),
    ("agg-b", {"feeder-1": 60, "feeder-2": 50}, False),
    ("agg-c", {"feeder-2": 70}, False),
    ("agg-d", {"feeder-1": 30, "feeder-2": 40}, True),
    ("agg-e", {"feeder-1": 50, "feeder-2": 30}, True),
    ("agg-f", {"feeder-1": 45, "feeder-2": 35}, False),
]


def world_of(tmp_path, engine):
    base = perfect("default")
    template = base.aggregators[0]
    aggs = [
        template.model_copy(update={"id": i, "households": hh, "dispatch": DispatchConfig(force=force)})
        for i, hh, force in LAYOUT
    ]
    hh = base.households.model_copy(update={"perfect_forecast": False})
    s = base.model_copy(update={"aggregators": aggs, "households": hh})
    world = World(simpy.Environment(), s, child_seed(np.random.SeedSequence(7), 1), Persistor(tmp_path / "w", s.start))
    world.fleet.engine = engine
    return world


def plans_for(world, now, first, duration):
    """Per owner, (schedule, awarded) of different shapes: a long shed through the window with a short
    call against it, sheds of other lengths, consume-more, awards that differ from the schedule; agg-c none."""
    rng = np.random.default_rng(3)
    n = first + duration + 12 - now
    out = {}
    for j, (o, _, _) in enumerate(LAYOUT):
        if o == "agg-c":
            continue
        nf = len(world.feeders_of(o))
        fc = world.portfolio_of(o).forecast(now + 1, 4 + j)
        kw = fc.flex_down_kw[0]
        sched = np.zeros((nf, n))
        start, end = 1 + j % 3, first - now + duration + (j % 4) * 3  # some run on past the window
        sched[:, start:end] = -(0.4 + 0.1 * j) * kw[:, None]
        sched[-1, end - 1 - j % 3 : end] = 0.0  # the last feeder's shed ends sooner: rows its others do not use
        sched[:, start + 2 : start + 4] += (0.2 + 0.05 * j) * kw[:, None]  # a call against the shed
        if j % 2:
            sched[:, end + 3 : end + 6] = 0.3 * fc.flex_up_kw[0][:, None]  # consume more after a gap
        awarded = sched * (rng.uniform(0.3, 0.9, size=sched.shape) > 0.5) if j % 3 else sched.copy()
        out[o] = ((now, sched), (now, awarded))
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_shared_roll_out_equals_each_owners_own(tmp_path, engine):
    world = world_of(tmp_path, engine)
    world.start()
    world.env.run(until=17 * 60)  # evening: heating on, EVs arriving
    now = world.fleet.step_index
    first, duration = now + 6, 4
    plans = plans_for(world, now, first, duration)
    assert any(not np.array_equal(p[0][1], p[1][1]) for p in plans.values())
    assert len(plans) == 5 and all(world._shareable(o) for o in plans)
    for force in (False, True):
        part = {o: p for o, p in plans.items() if world._force[world.owners.index(o) * len(world.feeders)] == force}
        shared = world._forecast_shared(now, first, duration, part)
        assert set(shared) == set(part)  # nobody left out here: at most a few layers a step
        for o, (sched, awarded) in part.items():
            own = world._forecast_committed(o, now, first, duration, sched, awarded)
            got = shared[o]
            assert got.feeders == own.feeders and got.start_step == own.start_step
            for name in ("baseline_kw", "flex_down_kw", "flex_up_kw", "rebound_down_kwh"):
                a, b = getattr(got, name), getattr(own, name)
                assert a.shape == b.shape, (o, name)
                np.testing.assert_array_equal(a, b, err_msg=f"{o} {name}")
            assert np.abs(own.flex_down_kw).sum() > 0  # a real window, not an empty one
    assert world.fleet.step_index == now  # forecasts never step the real fleet


def test_world_serves_each_owner_from_the_shared_roll_out_only_under_its_own_plan(tmp_path):
    world = world_of(tmp_path, ENGINES[-1])
    world.start()
    world.env.run(until=17 * 60)
    now = world.fleet.step_index
    first, duration = now + 6, 4
    plans = plans_for(world, now, first, duration)
    asked = []
    for o in plans:
        world.share_commitments(o, lambda f, d, o=o: asked.append((o, f, d)) or plans[o])
    world.share_commitments("agg-c", lambda f, d: asked.append(("agg-c", f, d)) or None)
    fc = world.portfolio_of("agg-b").forecast(first, duration, schedule=plans["agg-b"][0], awarded=plans["agg-b"][1])
    # everyone but the asker was asked once, for this window; agg-c has no commitments
    assert sorted(asked) == sorted((o, first, duration) for o in ("agg-a", "agg-c", "agg-d", "agg-e", "agg-f"))
    key, made = world._shared_committed
    assert key == (now, first, duration) and set(made) == {"agg-a", "agg-b", "agg-d", "agg-e", "agg-f"}
    assert fc is made["agg-b"][1]
    f = world.portfolio_of("agg-f")
    assert f.forecast(first, duration, schedule=plans["agg-f"][0], awarded=plans["agg-f"][1]) is made["agg-f"][1]
    # another plan than the one the roll-out was made under: computed alone, exactly as its own roll-out
    sched, awarded = plans["agg-f"]
    other = (now, sched[1] * 0.5)
    alone = f.forecast(first, duration, schedule=(now, sched[1] * 0.5), awarded=awarded)
    assert alone is not made["agg-f"][1]
    ref = world._forecast_committed("agg-f", now, first, duration, other, awarded)
    np.testing.assert_array_equal(alone.baseline_kw, ref.baseline_kw)
    np.testing.assert_array_equal(alone.flex_down_kw, ref.flex_down_kw)
    assert len(asked) == 5  # the same window again: nobody is asked twice


def fleet_levels(ctl, n_groups):
    """The (kW, duration) rows fleet._controlled allocates level by level: used rows longest first, then
    the rest in order, as many levels as the most-used group has."""
    layers, dur = ctl.layers(n_groups)
    target = layers.sum(axis=0)
    used = (layers != 0) & (target != 0)
    order = np.argsort(np.where(used, -dur, 1), axis=0, kind="stable")
    rank = max(int(used.sum(axis=0).max()), 1)
    return (np.take_along_axis(x, order, axis=0)[:rank] for x in (layers, dur, used))


def test_owners_control_gives_each_column_its_owners_own_levels():
    from flech_sim.world import _control_at, _owners_control

    # Two owners of two groups each (owner-major): owner 0 holds groups 0-1, owner 1 groups 2-3. Owner 0's
    # groups hold one layer each, of different lengths (two rows, rank 1); owner 1's group 2 holds three.
    n, s = 4, 10
    own0, own1 = {}, {}
    for k in range(s, s + 8):
        own0[k] = v = np.zeros(n)
        v[0] = -2.0
        v[1] = -1.0 if k < s + 3 else 0.0
        own1[k] = w = np.zeros(n)
        w[2] = -1.0 - (1.0 if k < s + 5 else 0.0) - (0.5 if k < s + 2 else 0.0)  # three nested sheds
        w[3] = -1.0
    by = np.repeat(np.arange(n), 3)
    ctl, exact = _owners_control([(own0, np.array([0, 1])), (own1, np.array([2, 3]))], s, by)
    assert exact == [True, True]
    layers, dur, used = fleet_levels(ctl, n)
    held = set(dur[used].tolist())
    for targets, cols in ((own0, [0, 1]), (own1, [2, 3])):
        alone = _control_at(targets, s, by[by <= max(cols)])
        a_layers, a_dur, a_used = fleet_levels(alone, max(cols) + 1)
        r = len(a_layers)
        np.testing.assert_array_equal(layers[:r, cols], a_layers[:, cols])
        np.testing.assert_array_equal(dur[:r, cols], a_dur[:, cols])
        np.testing.assert_array_equal(used[:r, cols], a_used[:, cols])
        # levels past the owner's own rank: no change and a duration nobody holds (no headroom)
        assert not layers[r:, cols].any() and not (set(dur[r:, cols].ravel().tolist()) & held)
    assert len(layers) == 3 and dur.shape == (3, n)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_copy_of_several_owners_keeps_each_owners_recovery_horizon(engine):
    """A home's recovery floor looks as far ahead as the longest layer its group's control holds; in a copy
    of several owners each owner's homes keep their own owner's horizon, not the longest of the copy."""
    from dataclasses import replace

    from flech_sim.households import HouseholdFleet, generate_weather

    from .test_households_fleet import START

    w = generate_weather("winter", START, 3 * 96, 15, np.random.SeedSequence(11))
    w = replace(w, outdoor_temp_c=w.outdoor_temp_c - 20.0)  # so cold that some heaters fall behind: their floor rises
    fleet = HouseholdFleet.create(200, w, np.random.SeedSequence(5), n_owners=2, engine=engine)
    for _ in range(40):
        fleet.step()
    twin = fleet.forecast_copy(separate_owners=True)
    act, s, long_k = np.arange(fleet.n), fleet.step_index, 40
    horizon = np.where(fleet.owner == 1, 6, long_k)  # owner 1 holds 6 steps, owner 0 forty
    tr = twin._simulate(act, twin.t_in, twin.ev_remaining_kwh, twin.soc_kwh, s, long_k)
    got = twin._owners_floor(tr, act, horizon, s)
    mine = np.flatnonzero(fleet.owner == 1)
    alone = twin._simulate(mine, twin.t_in[mine], twin.ev_remaining_kwh[mine], twin.soc_kwh[mine], s, 6)
    np.testing.assert_array_equal(got.t_floor[:7, mine], alone.t_floor)
    np.testing.assert_array_equal(got.t_floor[:, fleet.owner == 0], tr.t_floor[:, fleet.owner == 0])
    assert not np.array_equal(tr.t_floor[:7, mine], alone.t_floor)  # the horizon matters here


def test_owners_control_flags_a_one_column_owner_whose_layer_sum_numpy_orders_otherwise():
    """The first owner on the first feeder alone has one group column: numpy sums its stack of 8 or more
    layers pairwise, the copy's wider stack row by row. Where the two differ it is flagged (rolled out alone)."""
    from flech_sim.world import _owners_control

    rng = np.random.default_rng(0)
    by = np.repeat(np.arange(3), 2)
    other = {10: np.array([0.0, -1.0, -1.0])}  # a second owner (groups 1-2), one layer
    seen = set()
    for n_layers in (3, 9):
        for _ in range(300):
            kw = rng.uniform(0.1, 50.0, n_layers)
            own = {10 + j: np.array([-kw[j:].sum(), 0.0, 0.0]) for j in range(n_layers)}  # nested sheds
            ctl, exact = _owners_control([(own, np.array([0])), (other, np.array([1, 2]))], 10, by)
            rows = np.asarray(ctl.target_kw)[:n_layers, 0]  # the owner's layers, as its own control has them
            assert len(np.flatnonzero(np.asarray(ctl.target_kw)[:, 0])) == n_layers and exact[1]
            by_row = rows[0]
            for x in rows[1:]:
                by_row = by_row + x
            agree = rows[:, None].sum(axis=0)[0] == by_row
            assert exact[0] is bool(agree)
            seen.add((n_layers, bool(agree)))
    assert seen == {(3, True), (9, True), (9, False)}


def test_a_run_with_shared_roll_outs_equals_one_without(tmp_path, monkeypatch):
    """End to end: the reference scenario with two aggregators on two feeders gives the same fingerprint
    (every table) whether their committed forecasts share roll-outs or each makes its own."""
    from flech_sim.scenario import load_scenario
    from flech_sim.simulation import run

    from .conftest import REPO

    s = load_scenario(REPO / "tests" / "reference_scenarios" / "srp_block_bids.yaml")
    made = []
    real = World._forecast_shared
    monkeypatch.setattr(World, "_forecast_shared", lambda self, *a: made.append(1) or real(self, *a))
    shared = run(s, tmp_path / "shared")
    assert shared.completed and made  # rolled out together at least once
    monkeypatch.setattr(World, "share_commitments", lambda self, owner, plan: None)
    made.clear()
    alone = run(s, tmp_path / "alone")
    assert alone.completed and not made
    assert shared.manifest["fingerprint"] == alone.manifest["fingerprint"]
