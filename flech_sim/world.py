"""The physical world: every household on every feeder, stepped on the SimPy clock.

Not an agent and not part of the platform. No participant holds the World:
the run's wiring hands each role a narrow view of it -- an aggregator a
:class:`Portfolio` (forecast and control *its own* households), a DSO a
:class:`GridView` (its feeders' limits, load forecast and measured load), the
data provider a :class:`MeterFeed` (the meters it publishes). None of them can
read or write anybody else's state through it.

One vectorised :class:`~flech_sim.households.HouseholdFleet` holds all
households, so 10,000 of them cost one numpy step per interval. A
*portfolio* is one aggregator's households on one feeder; its metering
point is ``<aggregator>@<feeder>``. Households not in any aggregator are
the owner ``UNAGGREGATED`` and only load the feeders.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import simpy

from .constants import MINUTES_PER_DAY
from .households import Control, CsvBaseLoad, HouseholdFleet, child_seed, generate_weather, load_weather_csv
from .households.kernels import HAVE_NUMBA
from .metering import metering_point
from .persistor import Persistor
from .rollout import RolloutControls
from .scenario import Scenario

UNAGGREGATED = "unaggregated"
SAMPLE_POOL = 256  # candidates per aggregator for the first-dispatched part of the temperature sample
# A change is not sold on a feeder with a commitment starting this soon after it (but not right
# after it): its rebound, 1-3 hours of recovery, would land in that commitment.
REBOUND_GAP_STEPS = 32
FORECAST_BATCH = 8192  # households simulated together in a forecast: bounds its memory (~100 MB a day ahead)

Plan = tuple[tuple[int, np.ndarray], tuple[int, np.ndarray]]  # (schedule, awarded): see Portfolio.forecast


@dataclass(frozen=True)
class PortfolioForecast:
    """One aggregator's forecast: one column per feeder of its portfolio (``feeders``).

    baseline_kw: (steps, feeders) expected load per model step from ``start_step`` on.
    flex_*: (windows, feeders), per window start from ``first_window`` on, the constant
    change (kW) its households can hold for ``duration_steps`` steps; rebound_down_kwh:
    energy drawn back after a full down change. Matrices rather than per-feeder dicts,
    because an aggregator answers a market on every feeder at once.
    """

    start_step: int
    first_window: int
    duration_steps: int
    feeders: tuple[str, ...]
    baseline_kw: np.ndarray
    flex_down_kw: np.ndarray
    flex_up_kw: np.ndarray
    rebound_down_kwh: np.ndarray

    @property
    def last_window(self) -> int:
        return self.first_window + len(self.flex_down_kw) - 1


class GridView:
    """What a DSO sees of the grid: its feeders, their limits, its load forecast and SCADA
    measurement of them. Read-only; the DSO never touches households."""

    def __init__(self, world: World, feeders: tuple[str, ...]) -> None:
        self._world = world
        self.feeders = feeders
        self.dt = world.dt
        self._index = {f: world.feeders.index(f) for f in feeders}
        self._limits = {f: float(world.limits[i]) for f, i in self._index.items()}

    def limit_kw(self, feeder: str) -> float:
        return self._limits[feeder]

    @property
    def now_step(self) -> int:
        """The first model step :meth:`forecast` covers (the next one the world will simulate)."""
        return int(self._world.fleet.step_index)

    def forecast(self, horizon_steps: int) -> dict[str, np.ndarray]:
        """Per feeder, the expected load (kW) of the next ``horizon_steps`` model steps without new control."""
        fc = self._world.feeder_forecast(horizon_steps)
        return {f: fc[:, i] for f, i in self._index.items()}

    def load_now(self, feeder: str) -> float:
        """The feeder's load over the last simulated step."""
        return self._world.feeder_load_now(feeder)


class Portfolio:
    """An aggregator's handle on its own households (all its feeders): forecast and control them.
    It cannot name another owner, so nobody reads or steers someone else's portfolio."""

    def __init__(self, world: World, owner: str) -> None:
        self._world = world
        self.owner = owner
        self.dt = world.dt
        self.feeders = tuple(world.feeders_of(owner))

    def forecast(
        self,
        first_step: int,
        duration_steps: int,
        last_first_step: int | None = None,
        schedule: tuple[int, np.ndarray] | None = None,
        awarded: tuple[int, np.ndarray] | None = None,
    ) -> PortfolioForecast:
        """Baseline and flexibility of windows starting in [first_step, last_first_step].

        ``schedule``: (first model step, (len(feeders), steps) signed kW) the changes the
        owner has already committed to (negative = shed). When it holds any change, the
        forecast is of the one window at ``first_step`` and is made *under* those
        commitments; ``awarded`` (same form): the part of them already ordered, which the declared
        baseline is stepped under (default: all of ``schedule``)."""
        return self._world.forecast(self.owner, first_step, duration_steps, last_first_step, schedule, awarded)

    def schedule(self, start: int, interval_minutes: int, change_kw: np.ndarray) -> None:
        """A consumption change (negative = shed): (len(feeders), intervals) kW from ``start``."""
        self._world.schedule(self.owner, list(self.feeders), start, interval_minutes, change_kw)

    def share_commitments(self, plan: Callable[[int, int], Plan | None]) -> None:
        """Register ``plan(first_step, duration_steps)``: the (schedule, awarded) the owner would pass to
        :meth:`forecast` for that window now, or None without commitments. When another owner asks for a
        forecast of the same window at the same moment, the world then rolls both out in one pass; the
        owner's own request is served from it only if it passes exactly the same schedule and awards."""
        self._world.share_commitments(self.owner, plan)


class MeterFeed:
    """The data provider's feed of meter readings: the aggregated portfolios' metering points
    and, if asked for, each of their households' own meter. Nothing else of the world."""

    def __init__(self, world: World, household_meters: bool) -> None:
        self._world = world
        self.dt = world.dt
        self.portfolio_points = tuple(p for p in world.active_points if not p.startswith(UNAGGREGATED + "@"))
        owned = np.flatnonzero(world.owner < world.owners.index(UNAGGREGATED))
        self.household_meters = household_meters
        self._households = owned if household_meters else np.zeros(0, dtype=np.int64)
        self.household_points = tuple(
            household_point(world.points[world.portfolio[h]], int(h)) for h in self._households.tolist()
        )
        if household_meters:
            world.keep_household_series = True  # the world keeps per-household days only for a household feed

    @property
    def points(self) -> tuple[str, ...]:
        """Every metering point this feed publishes (the platform registers them)."""
        return self.portfolio_points + self.household_points

    def portfolio_day(self, point: str, day: int) -> np.ndarray:
        return self._world.metered(point, day)

    def household_days(self, day: int) -> list[tuple[str, np.ndarray]]:
        """(household point, net load per step) of every household meter for a past day."""
        if not self.household_meters:
            return []
        loads = self._world.household_day(day)
        return [(p, loads[h]) for p, h in zip(self.household_points, self._households.tolist(), strict=True)]


def _control_at(targets: dict[int, np.ndarray], s: int, portfolio: np.ndarray) -> Control | None:
    """The fleet's control at step ``s`` from a signed plan of per-step kW changes per portfolio
    (a forecast's view of its commitments: one sum per step, no award boundaries).

    The plan is read as layers: from ``s`` on, each level of change a portfolio keeps at the same
    sign is held until the step it drops below (the skyline of the plan), so a short call on top
    of a long award is held for its own steps, not the award's, just as real dispatch does."""
    n_groups = int(portfolio.max()) + 1  # the fleet counts groups up to the last one with households
    return _layered_control(_skyline(targets, s, n_groups), portfolio)


def _skyline(targets: dict[int, np.ndarray], s: int, n_groups: int) -> dict[int, np.ndarray]:
    """_control_at's layers at ``s``: {duration (steps): kW change per group}; each group's from its own column."""
    target = targets.get(s)
    layers: dict[int, np.ndarray] = {}
    if target is None or not target.any():
        return layers
    for g in np.flatnonzero(target[:n_groups]).tolist():
        sign, level, k = np.sign(target[g]), abs(float(target[g])), s + 1
        while level > 0:
            nxt = targets.get(k)
            x = float(nxt[g]) if nxt is not None else 0.0
            here = abs(x) if np.sign(x) == sign else 0.0
            if here < level:  # the part above `here` ends at k
                layers.setdefault(k - s, np.zeros(n_groups))[g] += sign * (level - here)
                level = here
            k += 1
    return layers


def _step_targets(sched: tuple[int, np.ndarray], cols: np.ndarray, n_groups: int, now: int) -> dict[int, np.ndarray]:
    """A schedule (base step, (owner's feeders, steps) kW) as the roll-out's targets from ``now`` on:
    {step: kW change per group}, the owner's rows in its group columns ``cols``."""
    base, change = sched
    change = np.asarray(change, dtype=float).reshape(len(cols), -1)
    out: dict[int, np.ndarray] = {}
    for j in np.flatnonzero(change.any(axis=0)).tolist():
        if base + j >= now:
            out[base + j] = vec = np.zeros(n_groups)
            vec[cols] = change[:, j]
    return out


def _same(a: tuple[int, np.ndarray], b: tuple[int, np.ndarray]) -> bool:
    """Whether two schedules (base step, kW) are the same plan."""
    return a[0] == b[0] and np.array_equal(a[1], b[1])


def _owners_control(
    plans: list[tuple[dict[int, np.ndarray], np.ndarray]], s: int, by: np.ndarray
) -> tuple[Control | None, list[bool]]:
    """One Control at step ``s`` for a copy holding several owners' roll-outs (``forecast_copy(...,
    separate_owners=True)``), and per owner whether the copy steps it exactly as its own control would.

    ``plans``: per owner, its targets and its group columns. Each column gets the layers its owner's own
    control (:func:`_control_at`) gives it, in the same order, so the fleet allocates them level by level
    as the owner's own: rows of a duration the owner does not hold here, and its unused rows past its own
    rank, get a duration nobody holds (no headroom: they add exactly 0). The one sum across layers the
    fleet makes is checked against the owner's own: numpy sums a one-column stack of 8 or more layers
    pairwise, not row by row (the first owner with only the first feeder)."""
    own, n_groups = [], int(by.max()) + 1
    for targets, cols in plans:
        layers = _skyline(targets, s, n_groups)
        durations = sorted(layers, reverse=True)
        alone = np.array([layers[d][: int(cols.max()) + 1] for d in durations])  # as _layered_control has it
        own.append((cols, durations, alone))
    if not any(d for _, d, _ in own):
        return None, [True] * len(plans)
    n_rows = max(len(d) for _, d, _ in own)
    pad = max(max(d) for _, d, _ in own if d) + 1
    target = np.zeros((n_rows, n_groups))
    duration = np.full((n_rows, n_groups), pad, dtype=np.int64)
    for cols, durations, alone in own:
        if not durations:
            continue
        t = alone[:, cols]
        # The owner's own rank (fleet._controlled): its rows used by a column, sorted first; the rest keep their order.
        used = (t != 0) & (t.sum(axis=0) != 0)
        rank = max(int(used.sum(axis=0).max()), 1)
        d = np.repeat(np.array(durations, dtype=np.int64)[:, None], len(cols), axis=1)
        spare = np.cumsum(~used, axis=0) + used.sum(axis=0)  # 1 + the level an unused row lands at
        d[~used & (spare > rank)] = pad
        target[: len(durations), cols], duration[: len(durations), cols] = t, d
    whole = target.sum(axis=0)
    exact = [not d or np.array_equal(whole[cols], alone.sum(axis=0)[cols]) for cols, d, alone in own]
    return Control(target_kw=target, by=by, duration_steps=duration), exact


def _layered_control(layers: dict[int, np.ndarray], portfolio: np.ndarray) -> Control | None:
    """One Control from {duration (steps): kW change per group} (one layer per duration)."""
    if not layers:
        return None
    durations = sorted(layers, reverse=True)
    n_groups = int(portfolio.max()) + 1
    target = np.array([layers[d][:n_groups] for d in durations])
    if len(durations) == 1:
        return Control(target_kw=target[0], by=portfolio, duration_steps=durations[0])
    return Control(target_kw=target, by=portfolio, duration_steps=np.array(durations, dtype=np.int64))


def _run_length_reference(sched: np.ndarray, j: int, duration: int, sign: float, cap: int) -> np.ndarray:
    """World._run_length feeder by feeder, walking each run (``cap``: the most steps it may reach)."""
    out = np.full(sched.shape[0], duration, dtype=np.int64)
    end = j + duration
    for f in range(sched.shape[0]):
        k, nxt = end, sched[f, end] if end < sched.shape[1] else 0.0
        if np.sign(nxt) == sign:
            while k < sched.shape[1] and k - j < cap and np.sign(sched[f, k]) == sign:
                k += 1
            out[f] = k - j
        elif nxt == 0 and sched[f, end : end + REBOUND_GAP_STEPS].any():
            out[f] = 0
    return out


class ReferenceControls:
    """The reference for :class:`~flech_sim.rollout.RolloutControls`: a roll-out's controls step by step, from
    dicts of step targets (:func:`_step_targets`), by :func:`_control_at` and :func:`_owners_control`."""

    def __init__(
        self,
        plans: list[tuple[tuple[int, np.ndarray], np.ndarray]],
        now: int,
        by: np.ndarray,
        n_portfolios: int,
        force: np.ndarray,
    ) -> None:
        self._now, self._by, self._force = now, by, force
        self._targets = [(_step_targets(sched, cols, n_portfolios, now), cols) for sched, cols in plans]

    def single(self, i: int) -> Control | None:
        """Step ``i``'s control of a one-owner roll-out."""
        return _with_force(_control_at(self._targets[0][0], self._now + i, self._by), self._force)

    def shared(self, i: int) -> tuple[Control | None, list[bool]]:
        """Step ``i``'s control of a several-owner roll-out, and per owner whether it is stepped exactly."""
        ctl, exact = _owners_control(self._targets, self._now + i, self._by)
        return _with_force(ctl, self._force), exact


def _with_force(ctl: Control | None, force: np.ndarray) -> Control | None:
    """``ctl`` with each portfolio's ``force``; unchanged if nobody forces."""
    if ctl is None or not force.any() or ctl.target_kw is None:
        return ctl
    return replace(ctl, force=force[: np.shape(ctl.target_kw)[-1]])  # targets: (groups,) or (layers, groups)


def household_point(portfolio: str, household: int) -> str:
    """A household's own metering point within its portfolio."""
    return f"{portfolio}#{household}"


class World:
    def __init__(
        self, env: simpy.Environment, scenario: Scenario, seed: np.random.SeedSequence, persistor: Persistor
    ) -> None:
        cfg = scenario.households
        self.env = env
        self.persistor = persistor
        self.dt = cfg.dt_minutes
        self.steps_per_day = MINUTES_PER_DAY // self.dt
        self.feeders = sorted(scenario.feeders)
        self.limits = np.array([scenario.feeders[f].limit_kw for f in self.feeders])
        self.owners = [*sorted(a.id for a in scenario.aggregators), UNAGGREGATED]
        counts = {a.id: a.households for a in scenario.aggregators} | {UNAGGREGATED: scenario.unaggregated}
        owner, feeder = [], []
        for o, name in enumerate(self.owners):
            for f, fname in enumerate(self.feeders):
                n = counts[name].get(fname, 0)
                owner += [o] * n
                feeder += [f] * n
        self.owner = np.array(owner, dtype=np.int64)
        self.feeder = np.array(feeder, dtype=np.int64)
        nf = len(self.feeders)
        self.portfolio = self.owner * nf + self.feeder
        self.n_portfolios = len(self.owners) * nf
        self.points = [metering_point(o, f) for o in self.owners for f in self.feeders]
        present = np.bincount(self.portfolio, minlength=self.n_portfolios) > 0
        self.active_points = [p for p, ok in zip(self.points, present, strict=True) if ok]
        # Weather covers the horizon plus two days, so day-ahead forecasts near the end still have inputs.
        n_steps = int(scenario.horizon_minutes // self.dt) + 2 * self.steps_per_day
        if cfg.weather_csv:
            weather = load_weather_csv(cfg.weather_csv, scenario.start, n_steps, self.dt)
        else:
            weather = generate_weather(cfg.season, scenario.start, n_steps, self.dt, child_seed(seed, 1))
        base_load = (
            CsvBaseLoad(cfg.base_load_csv, len(self.owner), scenario.start, n_steps, self.dt)
            if cfg.base_load_csv
            else None
        )
        self.fleet = HouseholdFleet.create(
            len(self.owner),
            weather,
            child_seed(seed, 2),
            cfg.fleet,
            feeder=self.feeder,
            owner=self.owner,
            perfect_forecast=cfg.perfect_forecast,
            base_load=base_load,
        )
        self._households_of: dict[str, np.ndarray] = {}
        self._feeders_of: dict[str, list[str]] = {}
        self._shared_forecast: tuple[tuple[int, ...] | None, list[np.ndarray]] = (None, [])
        self._plans: dict[str, Callable[[int, int], Plan | None]] = {}  # owner -> its commitments (share_commitments)
        # (now, first, duration) -> {owner: (the plan it was made under, its forecast)}: the last window's roll-out
        self._shared_committed: tuple[tuple[int, int, int] | None, dict[str, tuple[Plan, PortfolioForecast]]]
        self._shared_committed = (None, {})
        self._persisted = 0  # model steps already written to the load tables
        # step -> {end step of the award asking for it: kW change per portfolio (negative = shed)}
        self._targets: dict[int, dict[int, np.ndarray]] = {}
        n_days = n_steps // self.steps_per_day + 1
        self._meter = np.zeros((self.n_portfolios, n_days * self.steps_per_day))
        self._achieved = np.zeros_like(self._meter)
        self._feeder_kw = np.zeros((nf, n_days * self.steps_per_day))
        # Dispatch terms per owner (unaggregated homes are never dispatched): may it breach comfort, and
        # what a degree-hour of breach it caused costs it.
        terms = {a.id: a.dispatch for a in scenario.aggregators}
        self._force = np.repeat([bool(terms[o].force) if o in terms else False for o in self.owners], nf)
        self._compensation = np.array(
            [terms[o].comfort_compensation_dkk_per_degree_hour if o in terms else 0.0 for o in self.owners]
        )
        self._charged_minutes = np.zeros(len(self.owner))  # forced degree-minutes already charged, per home
        self._init_temperature_sample(cfg.record_households, child_seed(seed, 3))
        self.keep_household_series = False  # the data provider turns it on for household meters
        self._hh_days: dict[int, np.ndarray] = {}

    def _init_temperature_sample(self, rec: int, seed: np.random.SeedSequence) -> None:
        """The homes whose indoor temperature is written (household_temperatures), in two strata.

        Per owner, ``rec`` of its heated homes at random (unheated homes keep a constant temperature:
        nothing to watch) -- aggregated homes, eligible for dispatch, and unaggregated ones, never
        dispatched. Dispatch touches few homes (greedy allocation disturbs as few as it can), so a random
        draw rarely holds one: each aggregator also takes the first ``rec`` of its homes to be dispatched,
        written from the start of that day. Those come from a pool of candidates drawn at random, whose
        temperatures are buffered for the day: the memory is bounded by the pool, not the fleet."""
        rng = np.random.default_rng(seed)
        heated = self.fleet.p.has_heat
        pool, quota, selection = [], [], []
        unagg = self.owners.index(UNAGGREGATED)
        for o in range(len(self.owners)):
            homes = rng.permutation(np.flatnonzero((self.owner == o) & heated))
            take = homes[: 0 if rec == 0 else rec if o == unagg else max(SAMPLE_POOL, 2 * rec)]
            pool.append(take)
            selection.append(np.where(np.arange(len(take)) < rec, 1, 0))  # 1 = random, 2 = first dispatched
            quota.append(0 if o == unagg else rec)
        order = np.argsort(np.concatenate(pool), kind="stable") if pool else np.zeros(0, dtype=np.int64)
        self._pool = np.concatenate(pool).astype(np.int64)[order]  # households, ascending
        self._selection = np.concatenate(selection).astype(np.int8)[order]
        self._quota = np.array(quota, dtype=np.int64)  # first-dispatched places still free, per owner
        self._temps = np.zeros((len(self._pool), self.steps_per_day))
        self._dispatched = np.zeros((len(self._pool), self.steps_per_day), dtype=bool)

    def _sample_step(self, k: int, allocated: np.ndarray) -> None:
        """Buffer step ``k`` of the day for the pool; homes dispatched for the first time join the sample."""
        if not len(self._pool):
            return
        self._temps[:, k] = self.fleet.t_in[self._pool]
        moved = allocated[self._pool] != 0
        self._dispatched[:, k] = moved
        new = np.flatnonzero(moved & (self._selection == 0))
        if new.size and self._quota.any():
            for i in new.tolist():
                o = self.owner[self._pool[i]]
                if self._quota[o] > 0:
                    self._quota[o] -= 1
                    self._selection[i] = 2

    def _controls(
        self, plans: list[tuple[tuple[int, np.ndarray], np.ndarray]], now: int, n_steps: int, by: np.ndarray
    ) -> RolloutControls | ReferenceControls:
        """Every step's control of a roll-out of ``n_steps`` from ``now`` of a copy grouped ``by``, under
        ``plans`` (per owner, owner-major: its schedule and its group columns), with each portfolio's force.
        From one compiled pass (flech_sim.rollout) with the fleet's numba engine, else (``FLECH_KERNELS=numpy``)
        from the reference, step by step in Python; both give the same Controls."""
        if self.fleet.engine == "numba" and HAVE_NUMBA:
            return RolloutControls(plans, now, n_steps, by, self._force)
        return ReferenceControls(plans, now, by, self.n_portfolios, self._force)

    def _forced(self, ctl: Control | None) -> Control | None:
        """``ctl`` with each portfolio's force (its aggregator's dispatch.force); unchanged if nobody forces."""
        return _with_force(ctl, self._force)

    # -- narrow views, one per role (handed out once, by the run's wiring) -----------------
    def grid_view(self, feeders: list[str] | tuple[str, ...] = ()) -> GridView:
        """A DSO's view of ``feeders`` (default: every feeder)."""
        return GridView(self, tuple(feeders) or tuple(self.feeders))

    def portfolio_of(self, owner: str) -> Portfolio:
        return Portfolio(self, owner)

    def meter_feed(self, household_meters: bool) -> MeterFeed:
        return MeterFeed(self, household_meters)

    # -- aggregators' handles ------------------------------------------------------------
    def households_of(self, owner: str) -> np.ndarray:
        if owner not in self._households_of:
            self._households_of[owner] = np.flatnonzero(self.owner == self.owners.index(owner))
        return self._households_of[owner]

    def feeders_of(self, owner: str) -> list[str]:
        """The feeders where ``owner`` has households, in the world's (sorted) order."""
        if owner not in self._feeders_of:
            o = self.owners.index(owner)
            present = np.bincount(self.feeder[self.owner == o], minlength=len(self.feeders)) > 0
            self._feeders_of[owner] = [f for f, ok in zip(self.feeders, present, strict=True) if ok]
        return list(self._feeders_of[owner])

    def forecast(
        self,
        owner: str,
        first_step: int,
        duration_steps: int,
        last_first_step: int | None = None,
        schedule: tuple[int, np.ndarray] | None = None,
        awarded: tuple[int, np.ndarray] | None = None,
    ) -> PortfolioForecast:
        """One aggregator's baseline, and the flexibility it can hold through windows of
        ``duration_steps`` model steps starting anywhere in [first_step, last_first_step],
        simulated from its households' current state on forecast inputs.

        The fleet may or may not have stepped the current interval yet (SimPy orders same-time
        events by arrival), so offsets are taken from the fleet's own step counter.
        """
        now = self.fleet.step_index
        last = first_step if last_first_step is None else last_first_step
        if first_step < now or last < first_step:
            raise ValueError(f"windows from step {first_step} to {last}: already simulated or empty")
        if schedule is not None and np.any(schedule[1]):
            plan = (schedule, schedule if awarded is None else awarded)
            return self._committed(owner, now, first_step, duration_steps, plan)
        key = (now, first_step, duration_steps, last)
        if self._shared_forecast[0] != key:
            self._shared_forecast = (key, self._forecast_all(now, first_step, duration_steps, last))
        fc = self._shared_forecast[1]
        feeders, cols = self.feeders_of(owner), self._columns(owner)
        return PortfolioForecast(
            start_step=now,
            first_window=first_step,
            duration_steps=duration_steps,
            feeders=tuple(feeders),
            baseline_kw=fc[0][:, cols],
            flex_down_kw=fc[1][:, cols],
            flex_up_kw=fc[2][:, cols],
            rebound_down_kwh=fc[3][:, cols],
        )

    def _columns(self, owner: str) -> np.ndarray:
        """The owner's group columns (owner-major, one per feeder it has households on)."""
        nf = len(self.feeders)
        return self.owners.index(owner) * nf + np.array(
            [self.feeders.index(f) for f in self.feeders_of(owner)], np.int64
        )

    def share_commitments(self, owner: str, plan: Callable[[int, int], Plan | None]) -> None:
        """See :meth:`Portfolio.share_commitments`."""
        self._plans[owner] = plan

    def _shareable(self, owner: str) -> bool:
        """Whether the owner's roll-out can be shared: it has households."""
        return bool(self.feeders_of(owner))

    def _committed(self, owner: str, now: int, first: int, duration: int, plan: Plan) -> PortfolioForecast:
        """The owner's forecast under its commitments: from the roll-out shared by every owner asking about
        this window now (made at the first request for it), if made under exactly its plan, else its own."""
        key = (now, first, duration)
        if self._shared_committed[0] != key and self._shareable(owner):
            plans = {owner: plan}
            for o, provide in self._plans.items():
                if o != owner and self._shareable(o):
                    p = provide(first, duration)
                    if p is not None and np.any(p[0][1]):
                        plans[o] = p
            done: dict[str, tuple[Plan, PortfolioForecast]] = {}
            nf = len(self.feeders)
            for force in (False, True):  # forced and unforced owners allocate in different tiers: apart
                part = {o: p for o, p in plans.items() if bool(self._force[self.owners.index(o) * nf]) == force}
                if len(part) > 1:
                    done |= {o: (part[o], fc) for o, fc in self._forecast_shared(now, first, duration, part).items()}
            self._shared_committed = (key, done)
        if self._shared_committed[0] == key and owner in self._shared_committed[1]:
            made, fc = self._shared_committed[1][owner]
            if all(_same(a, b) for a, b in zip(made, plan, strict=True)):
                return fc
        return self._forecast_committed(owner, now, first, duration, plan[0], plan[1])

    def _forecast_committed(
        self,
        owner: str,
        now: int,
        first: int,
        duration: int,
        schedule: tuple[int, np.ndarray],
        awarded: tuple[int, np.ndarray] | None = None,
    ) -> PortfolioForecast:
        """One owner's forecast of the window [first, first + duration) under its commitments.

        A forecast copy of the owner's households alone (its cost follows the portfolio, not the
        fleet) is stepped from now by the same controlled physics as real dispatch, on forecast
        inputs. The window's flexibility is that of the households in the state they reach at its
        start under ``schedule`` (everything the owner may have to deliver: buffers drained by
        earlier activations, rebound under way). The baseline is the load stepped under ``awarded``
        (what it has been ordered to deliver; default ``schedule``), so the rebound of earlier
        activations and changes already sold in the window are in it and never count as this
        market's delivery.

        The flexibility is judged as dispatch will judge it (households already in an event against
        their plan) and, in the direction of a commitment running on past the window, as if held
        until that commitment ends, so selling the window never takes the energy a longer
        commitment needs; none is offered where its rebound would land in a later commitment.
        """
        feeders, cols = self.feeders_of(owner), self._columns(owner)
        hh = self.households_of(owner)
        groups = self.portfolio[hh]  # the forecast copy's group indices
        k = first - now + duration
        plan = (schedule, schedule if awarded is None else awarded)

        def run(sched: tuple[int, np.ndarray], until: int, flex_too: bool) -> tuple[np.ndarray, Any]:
            twin = self.fleet.forecast_copy(hh)  # the owner's households alone: its groups sum the same
            baseline, flex = np.zeros((until - now, len(cols))), None
            controls = self._controls([(sched, cols)], now, until - now, groups)
            for i, s in enumerate(range(now, until)):
                if flex_too and s == first:
                    flex = self._owners_flex(twin, [owner], groups, {owner: cols}, {owner: plan}, first, duration)[
                        owner
                    ]
                res = twin.step(controls.single(i))
                baseline[i] = np.bincount(groups, res.net_kw, self.n_portfolios)[cols]
            return baseline, flex

        same = _same(plan[1], schedule)
        baseline, flex = run(schedule, now + k, True) if same else run(schedule, first + 1, True)
        if not same:
            baseline = run(plan[1], now + k, False)[0]
        assert flex is not None
        return PortfolioForecast(
            start_step=now,
            first_window=first,
            duration_steps=duration,
            feeders=tuple(feeders),
            baseline_kw=baseline,
            flex_down_kw=flex[0],
            flex_up_kw=flex[1],
            rebound_down_kwh=flex[2],
        )

    def _forecast_shared(
        self, now: int, first: int, duration: int, plans: dict[str, Plan]
    ) -> dict[str, PortfolioForecast]:
        """:meth:`_forecast_committed` of several owners at once, bit for bit: ``plans`` maps each owner to
        its (schedule, awarded). An owner the copy could not step exactly (see :func:`_owners_control`)
        is left out.

        Every household's physics and every group's allocation depend only on its own group's households,
        so one copy holding all their households (``separate_owners``: each owner keeps its own allocation
        sums and recovery horizon), stepped under all their commitments at once (each owner's layers in its
        own columns, :func:`_owners_control`), gives each owner what its own roll-out gives, at the cost of
        one roll-out instead of one per owner; and one more, of the owners whose awards differ from their
        schedule, for the baselines stepped under the awards alone."""
        k = first - now + duration
        names = sorted(plans, key=self.owners.index)  # owner-major: each owner's groups contiguous
        cols = {o: self._columns(o) for o in names}

        def run(owners: list[str], plan: int, until: int, flex_too: bool) -> tuple[np.ndarray, dict[str, Any]]:
            hh = np.concatenate([self.households_of(o) for o in owners])
            groups = self.portfolio[hh]
            twin = self.fleet.forecast_copy(hh, separate_owners=True)
            controls = self._controls([(plans[o][plan], cols[o]) for o in owners], now, until - now, groups)
            baseline, flex = np.zeros((until - now, self.n_portfolios)), {}
            for i, s in enumerate(range(now, until)):
                if flex_too and s == first:
                    flex = self._owners_flex(twin, owners, groups, cols, plans, first, duration)
                ctl, exact = controls.shared(i)
                inexact.update(o for o, ok in zip(owners, exact, strict=True) if not ok)
                res = twin.step(ctl)
                baseline[i] = np.bincount(groups, res.net_kw, self.n_portfolios)
            return baseline, flex

        inexact: set[str] = set()

        base, flex = run(names, 0, now + k, True)
        differ = [o for o in names if not _same(plans[o][1], plans[o][0])]
        awarded = run(differ, 1, now + k, False)[0] if differ else base
        out = {}
        for o in (o for o in names if o not in inexact):  # those are rolled out alone when they ask
            f = flex[o]
            out[o] = PortfolioForecast(
                start_step=now,
                first_window=first,
                duration_steps=duration,
                feeders=tuple(self.feeders_of(o)),
                baseline_kw=(awarded if o in differ else base)[:, cols[o]],
                flex_down_kw=f[0],
                flex_up_kw=f[1],
                rebound_down_kwh=f[2],
            )
        return out

    def _owners_flex(
        self,
        twin: HouseholdFleet,
        owners: list[str],
        groups: np.ndarray,
        cols: dict[str, np.ndarray],
        plans: dict[str, Plan],
        first: int,
        duration: int,
    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each owner's window flexibility from a copy of its households (and perhaps others'): one headroom
        per duration any of them needs, over the households of those that need it. A change in the direction
        of a commitment that runs on past the window must leave that commitment its energy: it is sized as if
        held until the run ends (the fleet then holds it only for its own steps, so the longer commitment keeps
        what this one did not take)."""
        held, rows, at = {}, {}, 0
        for o in owners:
            schedule = plans[o][0]
            sched = np.asarray(schedule[1], dtype=float).reshape(len(cols[o]), -1)
            held[o] = {sign: self._run_length(sched, first - schedule[0], duration, sign) for sign in (-1.0, 1.0)}
            n = len(self.households_of(o))
            rows[o], at = np.arange(at, at + n), at + n
        out = {o: [np.zeros((1, len(cols[o]))) for _ in range(3)] for o in owners}
        needs = {o: (set(held[o][-1.0].tolist()) | set(held[o][1.0].tolist())) - {0} for o in owners}
        for d in sorted(set().union(*needs.values())):
            who = [o for o in owners if d in needs[o]]
            f = twin.headroom_from_plans(d, np.concatenate([rows[o] for o in who]), groups)
            for o in who:
                dn, up = held[o][-1.0] == d, held[o][1.0] == d
                out[o][0][0, dn] = f[0][cols[o]][dn]
                out[o][1][0, up] = f[1][cols[o]][up]
                out[o][2][0, dn] = f[2][cols[o]][dn]
        return {o: (v[0], v[1], v[2]) for o, v in out.items()}

    def _run_length(self, sched: np.ndarray, j: int, duration: int, sign: float) -> np.ndarray:
        """Per feeder (row of ``sched``), the steps a change of ``sign`` in the window
        [j, j + duration) must be sized for: until the feeder's commitments of that sign that are
        held at the window's end or start right after it end (at least ``duration``, at most two
        days, the weather the world keeps ahead). 0 when another commitment starts within
        REBOUND_GAP_STEPS after a gap: the change's rebound would land inside it.

        All feeders at once; :func:`_run_length_reference` (a walk per feeder) is the reference."""
        cap, end, n = 2 * self.steps_per_day, j + duration, sched.shape[1]
        if end < 0:  # a window before the schedule's base (negative indices): as the reference reads them
            return _run_length_reference(sched, j, duration, sign, cap)
        out = np.full(sched.shape[0], duration, dtype=np.int64)
        if end >= n:
            return out
        nxt = sched[:, end]
        same = np.sign(sched[:, end : max(end, min(n, j + cap))]) == sign  # the run of that sign from the end on
        ran = np.zeros(len(nxt), dtype=np.int64)
        if same.shape[1]:
            ran = np.where(same.all(axis=1), same.shape[1], same.argmin(axis=1))
        held = np.sign(nxt) == sign
        out[held] = end + ran[held] - j
        out[~held & (nxt == 0) & sched[:, end : end + REBOUND_GAP_STEPS].any(axis=1)] = 0
        return out

    def _forecast_all(self, now: int, first_step: int, duration_steps: int, last: int) -> list[np.ndarray]:
        """Every aggregator's forecast for the same windows, in one pass per batch of owners.

        Aggregators receive the same bid requests at the same moment, so they ask for the
        same windows; simulating all their households at once costs little more than one
        aggregator's share. Each aggregator still sees only its own columns, and each owner's
        households form one chunk, so its sums are exactly what a forecast of its households
        alone would give.
        """
        fcs = []
        batch: list[np.ndarray] = []
        owners = [self.households_of(o) for o in self.owners if o != UNAGGREGATED]
        for i, hh in enumerate(owners):
            batch.append(hh)
            if i + 1 < len(owners) and sum(map(len, batch)) + len(owners[i + 1]) <= FORECAST_BATCH:
                continue
            sel = np.concatenate(batch)
            # Grouped by portfolio: the fleet counts groups up to the last portfolio with
            # households, so every aggregator's own columns exist.
            fcs.append(
                self.fleet.forecast(
                    last - now + duration_steps,
                    duration_steps,
                    by=self.portfolio,
                    households=sel,
                    chunk=max(len(sel), 1),
                    starts=np.arange(first_step - now, last - now + 1),
                )
            )
            batch = []
        names = ("baseline_kw", "flex_down_kw", "flex_up_kw", "rebound_down_kwh")
        # An owner's columns come from one batch and are zero in the others: the sum is exact.
        return [sum((getattr(f, nm) for f in fcs[1:]), getattr(fcs[0], nm)) for nm in names]

    def schedule(
        self, owner: str, feeders: list[str], start: int, interval_minutes: int, change_kw: np.ndarray
    ) -> None:
        """Ask the owner's households for a consumption change (negative = shed): ``change_kw``
        is (len(feeders), intervals), one row per feeder, one column per market interval."""
        change = np.asarray(change_kw, dtype=float).reshape(len(feeders), -1)
        if not change.any():
            return
        o = self.owners.index(owner) * len(self.feeders)
        groups = np.array([o + self.feeders.index(f) for f in feeders], dtype=np.int64)
        # Each feeder holds its change until the end of this award's run of same-sign intervals:
        # a later award is a new commitment, sized on its own, not a reason to plan this one longer.
        sign = np.sign(change)
        run_end = np.zeros(change.shape, dtype=np.int64)  # model step ending each interval's run
        for i in range(change.shape[1] - 1, -1, -1):
            own = -(-(start + (i + 1) * interval_minutes) // self.dt)
            nxt = run_end[:, i + 1] if i + 1 < change.shape[1] else np.zeros(len(feeders), dtype=np.int64)
            same = (i + 1 < change.shape[1]) & (sign[:, i] == (sign[:, i + 1] if i + 1 < change.shape[1] else 0))
            run_end[:, i] = np.where(same & (sign[:, i] != 0), nxt, own)
        for i in map(int, np.flatnonzero(change.any(axis=0))):
            q = change[:, i]
            t0 = start + int(i) * interval_minutes
            ends = [(int(e), (q != 0) & (run_end[:, i] == e)) for e in np.unique(run_end[q != 0, i])]
            for s in range(t0 // self.dt, -(-(t0 + interval_minutes) // self.dt)):
                at = self._targets.setdefault(s, {})
                for e, sel in ends:
                    vec = at.get(e)
                    if vec is None:
                        vec = at[e] = np.zeros(self.n_portfolios)
                    vec[groups[sel]] += q[sel]

    # -- meters and grid ------------------------------------------------------------------
    def metered(self, point: str, day: int) -> np.ndarray:
        """True net load (kW) of a portfolio per step of a past day."""
        g = self.points.index(point)
        s = day * self.steps_per_day
        if (day + 1) * self.steps_per_day > self.fleet.step_index:
            raise ValueError(f"day {day} is not over yet")
        return self._meter[g, s : s + self.steps_per_day].copy()

    def household_day(self, day: int) -> np.ndarray:
        """(n_households, steps) net load of a past day; handed over once (then forgotten)."""
        if (day + 1) * self.steps_per_day > self.fleet.step_index:
            raise ValueError(f"day {day} is not over yet")
        return self._hh_days.pop(day)

    def feeder_load_now(self, feeder: str) -> float:
        """The feeder's load over the last simulated step (the DSO's measurement)."""
        s = self.fleet.step_index - 1
        return float(self._feeder_kw[self.feeders.index(feeder), max(s, 0)])

    def feeder_forecast(self, horizon_steps: int) -> np.ndarray:
        """(horizon, n_feeders) expected load without new control: the DSO's load forecast."""
        return self.fleet.baseline_power(horizon_steps, by="feeder")

    # -- the clock ----------------------------------------------------------------------
    def start(self) -> None:
        self.env.process(self._run())

    def _control(self, s: int) -> Control | None:
        """This step's commitments as layers: each award's change held until its own end, so a
        15-minute call inside a day-long award is allocated as a 15-minute change; with each
        portfolio's force."""
        at = self._targets.pop(s, {})
        return self._forced(_layered_control({e - s: v for e, v in at.items() if v.any()}, self.portfolio))

    def _run(self) -> Generator[simpy.Event, Any, None]:
        """Step the fleet at the start of every interval; the step covers [t, t + dt)."""
        while True:
            s = self.fleet.step_index
            res = self.fleet.step(self._control(s))
            net = np.bincount(self.portfolio, res.net_kw, self.n_portfolios)
            self._meter[:, s] = net
            self._achieved[:, s] = np.bincount(self.portfolio, res.achieved_kw, self.n_portfolios)
            self._feeder_kw[:, s] = res.by_feeder_kw
            k = s % self.steps_per_day
            if self.keep_household_series:
                day = self._hh_days.setdefault(s // self.steps_per_day, np.zeros((self.fleet.n, self.steps_per_day)))
                day[:, k] = res.net_kw
            self._sample_step(k, res.allocated_kw)
            if k == self.steps_per_day - 1:
                self._persist(s + 1)  # a whole day: written now, at its last step
            yield self.env.timeout(self.dt)

    def _persist(self, until_step: int) -> None:
        """Write the simulated steps not yet written, up to ``until_step`` (within one day)."""
        dt = self.dt
        s0 = self._persisted
        spd = until_step - s0
        if spd <= 0:
            return
        self._persisted = until_step
        k0 = s0 % self.steps_per_day
        minutes = (s0 + np.arange(spd)) * dt
        active = [self.points.index(p) for p in self.active_points]
        self.persistor.append_columns(
            "portfolio_load",
            {
                "metering_point": np.repeat([self.points[g] for g in active], spd).tolist(),
                "location": np.repeat([self.feeders[g % len(self.feeders)] for g in active], spd).tolist(),
                "interval_start": np.tile(minutes, len(active)),
                "load_kw": self._meter[active, s0 : s0 + spd].ravel(),
                "reduction_kw": -self._achieved[active, s0 : s0 + spd].ravel(),
            },
        )
        nf = len(self.feeders)
        self.persistor.append_columns(
            "feeder_load",
            {
                "feeder": np.repeat(self.feeders, spd).tolist(),
                "interval_start": np.tile(minutes, nf),
                "load_kw": self._feeder_kw[:, s0 : s0 + spd].ravel(),
                "limit_kw": np.repeat(self.limits, spd),
            },
        )
        rows = np.flatnonzero(self._selection > 0)
        if len(rows):
            p = self.fleet.p
            hh = self._pool[rows]
            unagg = self.owners.index(UNAGGREGATED)
            self.persistor.append_columns(
                "household_temperatures",
                {
                    "household": np.repeat(hh, spd),
                    "metering_point": np.repeat([self.points[g] for g in self.portfolio[hh]], spd).tolist(),
                    "stratum": np.repeat(np.where(self.owner[hh] == unagg, "unaggregated", "aggregated"), spd).tolist(),
                    "selection": np.repeat(
                        np.where(self._selection[rows] == 2, "first_dispatched", "random"), spd
                    ).tolist(),
                    "interval_start": np.tile(minutes + dt, len(hh)),
                    # the buffers are refilled every day: copies, no views
                    "t_in_c": self._temps[rows, k0 : k0 + spd].ravel(),
                    "t_min_c": np.repeat(p.t_min[hh], spd),
                    "t_max_c": np.repeat(p.t_max[hh], spd),
                    "dispatched": self._dispatched[rows, k0 : k0 + spd].ravel(),
                },
            )
        self._charge_comfort(int(s0 // self.steps_per_day) * self.steps_per_day * dt)

    def _charge_comfort(self, day_minute: int) -> None:
        """One comfort_compensation row per aggregator whose dispatch caused breaches since the last charge:
        the degree-hours times its price, paid to its households (the same figure per home in ``comfort``)."""
        forced = self.fleet.comfort.forced_degree_minutes
        new = forced - self._charged_minutes
        self._charged_minutes = forced.copy()
        unagg = self.owners.index(UNAGGREGATED)
        dh = np.bincount(self.owner, new, len(self.owners)) / 60.0
        homes = np.bincount(self.owner, new > 0, len(self.owners))
        due = [o for o in np.flatnonzero(dh > 0).tolist() if o != unagg]
        if due:
            self.persistor.append_columns(
                "comfort_compensation",
                {
                    "aggregator": [self.owners[o] for o in due],
                    "payee": ["households"] * len(due),
                    "day": [day_minute] * len(due),
                    "households": homes[due],
                    "degree_hours": dh[due],
                    "price_dkk_per_degree_hour": self._compensation[due],
                    "compensation_dkk": dh[due] * self._compensation[due],
                },
            )

    def finalize(self) -> None:
        """The steps of the last (partial) day, then one row per household: its devices,
        comfort band and what control cost it in comfort."""
        self._persist(self.fleet.step_index)
        p, f = self.fleet.p, self.fleet
        self.persistor.append_columns(
            "households",
            {
                "household": np.arange(f.n),
                "metering_point": [self.points[g] for g in self.portfolio],
                "owner": [self.owners[o] for o in self.owner],
                "feeder": [self.feeders[i] for i in self.feeder],
                "heating": np.array(["none", "heat_pump", "panel"])[p.heat_type].tolist(),
                "has_ev": p.has_ev,
                "has_battery": p.bat_cap > 0,
                "has_pv": p.kwp > 0,
                "t_min_c": p.t_min,
                "t_max_c": p.t_max,
                "comfort_violation_steps": f.violation_steps,
                "comfort_violation_degree_minutes": f.violation_degree_minutes,
                "ev_unmet_kwh": f.ev_unmet_kwh,
            },
        )
        c = f.comfort
        self.persistor.append_columns(
            "comfort",
            {
                "household": np.arange(f.n),
                "metering_point": [self.points[g] for g in self.portfolio],
                "owner": [self.owners[o] for o in self.owner],
                "feeder": [self.feeders[i] for i in self.feeder],
                "heating": np.array(["none", "heat_pump", "panel"])[p.heat_type].tolist(),
                "dispatched_steps": c.dispatched_steps,
                "breach_steps": c.breach_steps,
                "degree_hours_below": c.below_degree_minutes / 60.0,
                "degree_hours_above": c.above_degree_minutes / 60.0,
                "forced_breach_steps": c.forced_steps,
                "forced_degree_hours_below": c.forced_below_degree_minutes / 60.0,
                "forced_degree_hours_above": c.forced_above_degree_minutes / 60.0,
                "compensation_dkk": c.forced_degree_minutes / 60.0 * self._compensation[self.owner],
            },
        )
