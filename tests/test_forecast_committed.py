"""Forecasts under commitments step one owner's households, not the fleet (issue 12).

A forecast copy of just the owner's households must give, bit for bit, what a copy of the whole
fleet gives for them: every household's physics and every group's allocation depend only on the
households of that group.
"""

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, generate_weather
from flech_sim.households.kernels import HAVE_NUMBA
from flech_sim.world import _control_at

from .test_delivery import perfect
from .test_households_fleet import START

N, FEEDERS, OWNERS, OWNER = 300, 3, 3, 1
ENGINES = ["numpy", "numba"] if HAVE_NUMBA else ["numpy"]


@pytest.fixture(scope="module")
def weather():
    return generate_weather("winter", START, 3 * 96, 15, np.random.SeedSequence(11))


def fleet_in_events(weather, engine):
    """A fleet (forecast errors on) after a day, whose owners are all in the middle of a shed."""
    fleet = HouseholdFleet.create(
        N, weather, np.random.SeedSequence(5), n_feeders=FEEDERS, n_owners=OWNERS, engine=engine
    )
    groups = fleet.owner * FEEDERS + fleet.feeder
    for _ in range(70):
        fleet.step()
    shed = -0.3 * fleet.forecast(8, 8, by=groups).flex_down_kw[0]
    for j in range(3):
        fleet.step(Control(target_kw=shed, by=groups, duration_steps=8 - j))
    return fleet, groups


def controls(fleet, groups):
    """Layered controls on the owner's groups only (a long shed, a short call against it, a forced one), then none."""
    n_groups = int(groups.max()) + 1
    long_kw, call = np.zeros(n_groups), np.zeros(n_groups)
    mine = np.arange(n_groups) // FEEDERS == OWNER
    long_kw[mine], call[mine] = -4.0, 1.5
    force = mine & (np.arange(n_groups) % FEEDERS == 0)
    out = [Control(target_kw=np.array([long_kw, call]), by=groups, duration_steps=np.array([6, 2]))]
    out += [Control(target_kw=long_kw, by=groups, duration_steps=5 - j, force=force) for j in range(4)]
    return [*out, None, None, Control(target_kw=-long_kw, by=groups, duration_steps=2), None]


@pytest.mark.parametrize("engine", ENGINES)
def test_subset_copy_steps_the_owners_households_exactly_as_the_full_copy(weather, engine):
    fleet, groups = fleet_in_events(weather, engine)
    hh = np.flatnonzero(fleet.owner == OWNER)
    assert 0 < hh.size < N and fleet._in_event[hh].any()  # the roll-out starts mid-event
    full, sub = fleet.forecast_copy(), fleet.forecast_copy(hh)
    assert sub.n == hh.size
    g_sub = groups[hh]
    n_groups = int(groups.max()) + 1
    moved = 0
    for c_full in controls(fleet, groups):
        c_sub = None
        if c_full is not None:
            width = int(g_sub.max()) + 1
            c_sub = Control(
                target_kw=np.asarray(c_full.target_kw)[..., :width],
                by=g_sub,
                duration_steps=c_full.duration_steps,
                force=np.asarray(c_full.force)[:width] if np.ndim(c_full.force) else c_full.force,
            )
        a, b = full.step(c_full), sub.step(c_sub)
        for name in ("net_kw", "heat_kw", "ev_kw", "battery_kw", "allocated_kw", "achieved_kw"):
            np.testing.assert_array_equal(getattr(a, name)[hh], getattr(b, name), err_msg=name)
        mine = np.unique(g_sub)
        np.testing.assert_array_equal(np.bincount(groups, a.net_kw, n_groups)[mine], np.bincount(g_sub, b.net_kw)[mine])
        moved += int(np.count_nonzero(b.allocated_kw))
        for name in ("t_in", "soc_kwh", "ev_remaining_kwh", "_tw_t", "_in_event", "_prev_off"):
            np.testing.assert_array_equal(getattr(full, name)[hh], getattr(sub, name), err_msg=name)
        hf = full.headroom_from_plans(4, hh, groups)
        hs = sub.headroom_from_plans(4, np.arange(hh.size), g_sub)
        for x, y in zip(hf, hs, strict=True):
            np.testing.assert_array_equal(x[mine], y[mine])
    assert moved > 0  # the controls did move households
    np.testing.assert_array_equal(full.comfort.forced_degree_minutes[hh], sub.comfort.forced_degree_minutes)
    assert fleet.step_index == 73 and sub.step_index == full.step_index == 73 + len(controls(fleet, groups))


def test_subset_copy_leaves_the_fleet_untouched(weather):
    fleet, _ = fleet_in_events(weather, ENGINES[-1])
    before = (fleet.t_in.copy(), fleet.soc_kwh.copy(), fleet.step_index, fleet.comfort)
    sub = fleet.forecast_copy(np.flatnonzero(fleet.owner == OWNER))
    for _ in range(5):
        sub.step()
    np.testing.assert_array_equal(fleet.t_in, before[0])
    np.testing.assert_array_equal(fleet.soc_kwh, before[1])
    assert fleet.step_index == before[2] and fleet.comfort is before[3]


def test_subset_copy_checks_its_indices(weather):
    fleet, _ = fleet_in_events(weather, ENGINES[-1])
    for bad in (np.array([3, 2]), np.array([1, 1]), np.array([N])):
        with pytest.raises(ValueError):
            fleet.forecast_copy(bad)


def full_fleet_forecast(world, owner, now, first, duration, schedule):
    """The forecast under commitments as made before issue 12: the whole fleet stepped (baseline and
    the window's flexibility held for ``duration``), the reference the owner's roll-out must equal."""
    feeders = world.feeders_of(owner)
    cols = world.owners.index(owner) * len(world.feeders) + np.array([world.feeders.index(f) for f in feeders])
    targets = {}
    for j in np.flatnonzero(schedule.any(axis=0)).tolist():
        targets[now + j] = vec = np.zeros(world.n_portfolios)
        vec[cols] = schedule[:, j]
    twin = world.fleet.forecast_copy()
    baseline, flex = [], None
    for s in range(now, first + duration):
        if s == first:
            flex = twin.headroom_from_plans(duration, world.households_of(owner), world.portfolio)
        res = twin.step(world._forced(_control_at(targets, s, world.portfolio)))
        baseline.append(np.bincount(world.portfolio, res.net_kw, world.n_portfolios)[cols])
    return np.array(baseline), tuple(f[cols] for f in flex)


def test_world_forecast_under_commitments_equals_the_full_fleet_roll_out(tmp_path):
    import simpy

    from flech_sim.households import child_seed
    from flech_sim.persistor import Persistor
    from flech_sim.world import World

    s = perfect("default")
    world = World(simpy.Environment(), s, child_seed(np.random.SeedSequence(3), 1), Persistor(tmp_path / "w", s.start))
    owner = "agg-north"
    pf = world.portfolio_of(owner)
    world.start()
    world.env.run(until=7 * 60)
    now = world.env.now // world.dt
    shed_from, first, duration = now + 3, now + 9, 4
    flex = pf.forecast(shed_from, 6).flex_down_kw[0]
    schedule = np.zeros((len(pf.feeders), first + duration - now))
    schedule[:, shed_from - now : first - now] = -0.7 * flex[:, None]  # a shed ending before the window
    fc = pf.forecast(first, duration, schedule=(now, schedule))
    base, (down, up, rebound) = full_fleet_forecast(world, owner, now, first, duration, schedule)
    assert np.abs(base[3:9].sum(axis=1) - base[:3].mean(axis=1).sum()).max() > 1.0  # the shed shows
    np.testing.assert_array_equal(fc.baseline_kw, base)
    np.testing.assert_array_equal(fc.flex_down_kw[0], down)
    np.testing.assert_array_equal(fc.flex_up_kw[0], up)
    np.testing.assert_array_equal(fc.rebound_down_kwh[0], rebound)
