"""HouseholdFleet: vectorised state of N households, stepped one interval at a time.

Forecasts and headroom use the *forecast* inputs (perturbed weather, expected base
load); the physics uses the actual ones, so a request judged feasible can still
fall short. A household under control follows its reference plan plus its
offset: a twin of its state, started from the actual state when it entered
control and run in default operation on forecast inputs. Tying offsets to that
plan (not to a feedback controller acting on the deviated state) is what lets a
reduction last; released households return to default operation, and their
controllers then recover the deficit - the rebound. A group's commitments come as layers,
each with its own duration (see Control); a household whose share ends while its group still
asks the same way stays on its plan, so its rebound waits until the group's commitments end.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from . import forecast_kernels, kernels
from .comfort import ComfortRecord
from .control import Control, Forecast, GroupBy, StepResult, group_sum
from .ev import EvSchedule, EvStep
from .flex import Deviation, DeviceFlex, allocate, flex_for_durations, split_devices, window_flex
from .params import FleetSpec, SeedLike, as_seed_sequence, child_seed
from .physics import (
    RECOVERY_HOURS,
    DefaultPowers,
    StepInputs,
    Trajectory,
    battery_limits,
    battery_step,
    default_powers,
    ev_events,
    ev_max,
    heat_to_reach,
    recovery_floor,
    simulate_default,
    thermal_step,
)
from .population import HouseholdParams, build_params
from .profiles import BaseLoad, BaseLoadSource
from .weather import Weather, perturb_weather


class HouseholdFleet:
    """N households with heating, EV, battery, PV and base load; feeder and owner per household."""

    def __init__(
        self,
        params: HouseholdParams,
        weather: Weather,
        base_load: BaseLoadSource,
        ev_schedule: EvSchedule,
        feeder: np.ndarray,
        owner: np.ndarray,
        *,
        forecast_weather: Weather | None = None,
        base_forecast: Literal["actual", "expected"] = "expected",
        engine: kernels.Engine | None = None,
    ):
        n = params.n
        self.feeder, self.owner = (np.asarray(x, dtype=np.int64) for x in (feeder, owner))
        for name, x in (("feeder", self.feeder), ("owner", self.owner)):
            if x.shape != (n,) or (n and x.min() < 0):
                raise ValueError(f"{name} must be {n} non-negative integers")
        if base_load.n_households != n:
            raise ValueError(f"base load has {base_load.n_households} households, params {n}")
        fw = forecast_weather or weather
        if weather.dt_minutes * 60 != round(params.dt_h * 3600) or fw.dt_minutes != weather.dt_minutes:
            raise ValueError("weather, forecast weather and params must share dt")
        if base_forecast not in ("actual", "expected"):
            raise ValueError("base_forecast must be 'actual' or 'expected'")
        self.p, self.weather, self.forecast_weather = params, weather, fw
        self.base_load, self.ev_schedule, self._base_fc = base_load, ev_schedule, base_forecast
        self.n_feeders = int(self.feeder.max()) + 1 if n else 0
        self.n_owners = int(self.owner.max()) + 1 if n else 0
        self.dt_minutes = weather.dt_minutes
        # Steps past a trajectory's end a shed home must still recover over on its own heater (the
        # comfort floor of flexibility and dispatch: physics.recovery_floor).
        self.recovery_steps = round(RECOVERY_HOURS * 60 / weather.dt_minutes)
        # numba kernels (default) or the numpy reference: bit-identical results, see kernels.py.
        self.engine: kernels.Engine = engine or kernels.default_engine()
        if self.engine not in ("numba", "numpy") or (self.engine == "numba" and not kernels.HAVE_NUMBA):
            raise ValueError(f"engine {self.engine!r} is not available")
        if self.engine == "numba":
            self._packed, self._scalars = kernels.pack(params), kernels.scalars(params)
        # State (read it, do not write it).
        self.t_in = params.t_set.copy()
        self.ev_remaining_kwh = np.zeros(n)
        self.soc_kwh = params.soc_init.copy()
        self._tw_t, self._tw_rem, self._tw_soc = self.t_in.copy(), np.zeros(n), self.soc_kwh.copy()
        self._prev_off = np.zeros(n)
        # Direction of the event a household is in (0 = free): it can stay in it at no change while
        # its group still asks that way, following its plan instead of recovering (see _controlled).
        self._in_event = np.zeros(n)
        # Records: comfort breaches (steps and degree-minutes) and EV energy missing at departure.
        self.violation_steps = np.zeros(n, dtype=np.int64)
        self.violation_degree_minutes = np.zeros(n)
        self.ev_unmet_kwh = np.zeros(n)
        self.comfort = ComfortRecord.empty(self.t_in)  # breaches per household, and the part dispatch caused
        self.step_index = 0
        self._forecasting = False  # a forecast copy (see forecast_copy) steps on forecast inputs
        self._separate_owners = False  # a copy of several owners' roll-outs at once (see forecast_copy)
        # What a forecast copy of the same households shares with the previous ones (see _subset).
        self._subsets: dict[bytes, _Subset] = {}
        # The reference plans simulated in the last controlled step (numba engine): (step, households, plans,
        # per household whether its state after that step is its plan's: see _plans).
        self._plan: _Plan | None = None
        # Each household's index in the fleet this one was copied from (None: this is it), and the backward
        # passes of the plans' floors by their end, shared with every forecast copy (numba engine: see _plans).
        self._root_rows: np.ndarray | None = None
        self._floors = kernels.FloorCache(n) if self.engine == "numba" else None

    @classmethod
    def create(
        cls,
        n_households: int,
        weather: Weather,
        seed: SeedLike,
        spec: FleetSpec | Mapping[str, Any] | None = None,
        *,
        feeder: np.ndarray | None = None,
        owner: np.ndarray | None = None,
        n_feeders: int = 1,
        n_owners: int = 1,
        perfect_forecast: bool = False,
        forecast_temp_sd: float = 1.0,
        forecast_irr_rel_sd: float = 0.2,
        base_load: BaseLoadSource | None = None,
        engine: kernels.Engine | None = None,
    ) -> HouseholdFleet:
        """Draw a fleet from `spec`. Default grouping: feeders in contiguous blocks, owners round-robin
        (aggregators compete on every feeder). perfect_forecast: forecasts see the actual weather
        and base load."""
        ss = as_seed_sequence(seed)
        spec = spec if isinstance(spec, FleetSpec) else FleetSpec.from_dict(spec)
        n, dt = int(n_households), weather.dt_minutes
        params = build_params(spec, n, dt, child_seed(ss, 1))
        base = base_load or BaseLoad(params.annual_kwh, weather.start, dt, child_seed(ss, 2))
        evs = EvSchedule(params, weather.start, dt, child_seed(ss, 3))
        fw = (
            weather
            if perfect_forecast
            else perturb_weather(weather, child_seed(ss, 4), forecast_temp_sd, forecast_irr_rel_sd)
        )
        feeder = (np.arange(n) * n_feeders) // max(n, 1) if feeder is None else feeder
        owner = np.arange(n) % n_owners if owner is None else owner
        return cls(
            params,
            weather,
            base,
            evs,
            feeder,
            owner,
            forecast_weather=fw,
            base_forecast="actual" if perfect_forecast else "expected",
            engine=engine,
        )

    @property
    def n(self) -> int:
        return self.p.n

    def group_index(self, by: GroupBy) -> tuple[np.ndarray, int]:
        """(group of each household, number of groups) for 'owner', 'feeder' or an index array."""
        if isinstance(by, str):
            if by == "owner":
                return self.owner, self.n_owners
            if by == "feeder":
                return self.feeder, self.n_feeders
            raise ValueError(f"unknown grouping {by!r}")
        g = np.asarray(by, dtype=np.int64)
        if g.shape != (self.n,) or (self.n and g.min() < 0):
            raise ValueError(f"group index must be {self.n} non-negative integers")
        return g, int(g.max()) + 1 if self.n else 0

    def _inputs(self, s: int, idx: np.ndarray | None, forecast: bool) -> StepInputs:
        forecast = forecast or self._forecasting
        w = self.forecast_weather if forecast else self.weather
        i = min(s, w.n_steps - 1)  # beyond the weather horizon a forecast persists the last value
        use_expected = forecast and self._base_fc == "expected"
        base = (self.base_load.expected if use_expected else self.base_load.at)(s, idx)
        return StepInputs(float(w.outdoor_temp_c[i]), float(w.irradiance_w_m2[i]), base, self.ev_schedule.at(s, idx))

    def forecast(
        self,
        horizon_steps: int,
        duration_steps: int = 4,
        by: GroupBy = "owner",
        households: np.ndarray | None = None,
        per_household: bool = False,
        chunk: int = 2048,
        starts: np.ndarray | None = None,
    ) -> Forecast:
        """Baseline and flexibility for the next `horizon_steps` steps, summed by group.

        Simulates default operation from the actual state on forecast inputs, in chunks
        of households so memory stays ~ chunk × horizon. `households`: indices or mask
        to restrict to (e.g. one aggregator's portfolio). `starts`: window starts (steps
        from now) to compute flexibility for; the flex/rebound arrays then have one row
        per start instead of one per step (much cheaper for one long window). With no
        starts and not per household (the baseline alone), the numba engine sums the
        baseline in one compiled pass instead (forecast_kernels): the same numbers.
        """
        k, d = int(horizon_steps), int(duration_steps)
        if k < 1 or d < 1:
            raise ValueError("horizon_steps and duration_steps must be >= 1")
        group, n_groups = self.group_index(by)
        sel = self._selection(households)
        names = ("baseline_kw", "flex_down_kw", "flex_up_kw", "rebound_down_kwh", "rebound_up_kwh")
        rows = k if starts is None else len(starts)
        if rows == 0 and not per_household:  # the baseline alone: the compiled path when it applies
            baseline = self._baseline_sums(k, group, n_groups, sel, chunk)
            if baseline is not None:
                empty = {nm: np.zeros((0, n_groups)) for nm in names[1:]}
                return Forecast(self.step_index, d, baseline, **empty, household=None, household_index=None)
        tot = {nm: np.zeros((k if nm == "baseline_kw" else rows, n_groups)) for nm in names}
        hh: dict[str, list[np.ndarray]] = {nm: [] for nm in names}
        for c0 in range(0, sel.size, chunk):
            idx = sel[c0 : c0 + chunk]
            p = self.p.subset(idx)
            tr = self._simulate(
                idx,
                self.t_in[idx],
                self.ev_remaining_kwh[idx],
                self.soc_kwh[idx],
                self.step_index,
                k + d - 1,
                floor=starts is None or len(starts) > 0,
            )
            if self.engine == "numba":
                f = kernels.window_flex(
                    np.ascontiguousarray(self._packed[:, idx]), self._scalars, tr, d, self.step_index, starts=starts
                )
            else:
                f = window_flex(p, tr, d, self.step_index, starts=starts)
            for nm, v in zip(names, (tr.net[:k], f.down, f.up, f.rebound_down, f.rebound_up), strict=True):
                tot[nm] += group_sum(v, group[idx], n_groups)
                if per_household:
                    hh[nm].append(v)
        household = {nm: np.concatenate(v, axis=1) if v else np.zeros((k, 0)) for nm, v in hh.items()}
        return Forecast(
            self.step_index,
            d,
            **tot,
            household=household if per_household else None,
            household_index=sel if per_household else None,
        )

    def _selection(self, households: np.ndarray | None) -> np.ndarray:
        """Household indices (int64) of ``households``: indices or a mask (all if None)."""
        sel = np.arange(self.n) if households is None else np.asarray(households)
        if sel.dtype == bool:
            if sel.shape != (self.n,):
                raise ValueError(f"household mask must have length {self.n}")
            sel = np.flatnonzero(sel)
        return sel.astype(np.int64)

    def _baseline_sums(
        self, k: int, group: np.ndarray, n_groups: int, sel: np.ndarray, chunk: int
    ) -> np.ndarray | None:
        """``forecast``'s baseline_kw (k steps, summed by ``group`` over ``sel`` in chunks of ``chunk``) by
        forecast_kernels.baseline_sums, bit for bit: no per-household arrays, no flexibility windows.
        None where it does not apply (the numpy engine, or inputs that do not expose what the kernel
        reads: the expected base load's factors and the EV sessions); the caller then simulates."""
        factors, mean = getattr(self.base_load, "expected_factors", None), getattr(self.base_load, "mean_kw", None)
        sessions = getattr(self.ev_schedule, "session_table", None)
        if self.engine != "numba" or self._base_fc != "expected" or factors is None or mean is None or sessions is None:
            return None
        s0 = self.step_index
        t_out, irr = self._forecast_weather(s0, k)
        return forecast_kernels.baseline_sums(
            self._packed, self._scalars, sel, group, n_groups, int(chunk), self.t_in, self.ev_remaining_kwh,
            self.soc_kwh, t_out, irr, factors(s0, k), mean, s0, sessions(s0, k),
        )  # fmt: skip

    def _simulate(
        self,
        idx: np.ndarray | None,
        t0: np.ndarray,
        rem0: np.ndarray,
        soc0: np.ndarray,
        s0: int,
        k_steps: int,
        floor: bool = True,
        packed: np.ndarray | None = None,
    ) -> Trajectory:
        """Default operation of households `idx` (all if None) on forecast inputs, by the fleet's engine;
        ``floor``: with its recovery floor (the comfort floor of flexibility) over ``recovery_steps`` more.
        ``packed``: the numba engine's parameters of ``idx`` when the caller has them already."""
        t_out_h, irr_h = self._forecast_weather(s0, k_steps + self.recovery_steps)
        if self.engine == "numpy":
            p = self.p if idx is None else self.p.subset(idx)
            tr = simulate_default(p, t0, rem0, soc0, s0, k_steps, lambda s: self._inputs(s, idx, True))
            return dataclasses.replace(tr, t_floor=recovery_floor(p, t_out_h, irr_h, tr.t_in)) if floor else tr
        n = t0.size
        t_out, irr = t_out_h[:k_steps], irr_h[:k_steps]
        expected_block = getattr(self.base_load, "expected_block", None)
        if self._base_fc == "expected" and expected_block is not None:
            base = expected_block(s0, k_steps, idx)  # the same products as `expected` step by step
        else:
            base = np.empty((k_steps, n))
            fetch = self.base_load.expected if self._base_fc == "expected" else self.base_load.at
            for k in range(k_steps):
                base[k] = fetch(s0 + k, idx)
        ev = self.ev_schedule.block(s0, k_steps, idx)
        conn, dep, arriving, energy = ev.connected, ev.dep_step, ev.arriving, ev.energy
        if packed is None:
            packed = self._packed if idx is None else np.ascontiguousarray(self._packed[:, idx])
        tr = kernels.simulate_default(
            packed, self._scalars, t0, rem0, soc0, t_out, irr, base, conn, dep, arriving, energy
        )
        if not floor:
            return tr
        return dataclasses.replace(tr, t_floor=kernels.recovery_floor(packed, self._scalars, t_out_h, irr_h, tr.t_in))

    def forecast_copy(self, households: np.ndarray | None = None, separate_owners: bool = False) -> HouseholdFleet:
        """A copy of the fleet in its current state whose ``step`` uses the *forecast* inputs.

        Stepping it under the commitments an aggregator has made predicts, with the same
        controlled physics as real dispatch, the state its households will be in when a
        later window starts (drained buffers, rebound) without touching the real fleet.

        ``households``: indices (ascending) of the households to keep, e.g. one aggregator's
        portfolio, so a forecast costs its own homes, not the fleet's. Every household's physics
        and every group's allocation depend only on the households of that group, so the
        copy's values are bit for bit the full copy's at those indices (row ``j`` is household
        ``households[j]``); group sums over it equal the full fleet's for every group it holds
        whole.

        ``separate_owners``: the copy holds several owners' roll-outs at once (each owner's groups
        contiguous in the grouping): the greedy allocation's running sums and the recovery floor's
        horizon are then each owner's own, so an owner's households step bit for bit as in a copy
        of its households alone, given that its groups' layers are the ones it would be given alone.
        """
        twin = copy.copy(self)
        if households is not None:
            idx = np.asarray(households, dtype=np.int64)
            sub = self._subset(idx)
            twin.p, twin.feeder, twin.owner = sub.p, sub.feeder, sub.owner
            twin.base_load, twin.ev_schedule = sub.base_load, sub.ev_schedule  # type: ignore[assignment]
            if sub.packed is not None:  # the numba engine's
                twin._packed = sub.packed
            twin._subsets = {}  # indices into the copy, not into this fleet
            twin._plan = None
            twin._root_rows = idx if self._root_rows is None else self._root_rows[idx]
            twin.comfort = ComfortRecord(
                *(getattr(self.comfort, f.name)[idx] for f in dataclasses.fields(ComfortRecord))
            )
        for name in _STATE:
            v = getattr(self, name)
            setattr(twin, name, v.copy() if households is None else v[idx])  # fancy indexing copies
        twin._forecasting = True
        twin._separate_owners = separate_owners
        return twin

    def _subset(self, idx: np.ndarray) -> _Subset:
        """The static part of a copy of households ``idx``, kept for the next copy of the same households
        (a run copies each aggregator's portfolio for every bid request): parameters, groups and the
        input sources, whose EV status they cache by day. All read-only, so copies share them."""
        key = idx.tobytes()
        sub = self._subsets.get(key)
        if sub is not None:
            return sub
        if idx.ndim != 1 or (idx.size and (np.any(np.diff(idx) <= 0) or idx[0] < 0 or idx[-1] >= self.n)):
            raise ValueError("households must be ascending indices into the fleet, without repeats")
        packed = np.ascontiguousarray(self._packed[:, idx]) if self.engine == "numba" else None
        sub = _Subset(
            self.p.subset(idx),
            self.feeder[idx],
            self.owner[idx],
            _SubsetBaseLoad(self.base_load, idx),
            _SubsetEvSchedule(self.ev_schedule, idx),
            packed,
        )
        if len(self._subsets) >= _KEEP_SUBSETS:
            self._subsets.pop(next(iter(self._subsets)))
        self._subsets[key] = sub
        return sub

    def headroom_from_plans(
        self, duration_steps: int, households: np.ndarray, by: GroupBy
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(down kW, up kW, rebound kWh of the down change) per group that ``households`` can
        hold for ``duration_steps`` from now, as dispatch would judge it: a household already in
        an event in that direction is measured against its plan (deviation included, no recovery
        to give up), the others against default operation from their state. A forecast from
        default operation alone would count a shed household's recovery as flexibility."""
        d, idx = int(duration_steps), np.asarray(households, dtype=np.int64)
        group, n_groups = self.group_index(by)
        g = group[idx]
        if self.engine == "numba":
            down, up, rebound = self._headroom_from_plans_shared(d, idx)
            return group_sum(down, g, n_groups), group_sum(up, g, n_groups), group_sum(rebound, g, n_groups)
        out = []
        for sign in (-1.0, 1.0):
            plan = self._in_event[idx] == sign
            t0 = np.where(plan, self._tw_t[idx], self.t_in[idx])
            rem0 = np.where(plan, self._tw_rem[idx], self.ev_remaining_kwh[idx])
            soc0 = np.where(plan, self._tw_soc[idx], self.soc_kwh[idx])
            tr = self._simulate(idx, t0, rem0, soc0, self.step_index, d)
            dev = Deviation(self.t_in[idx] - t0, self.ev_remaining_kwh[idx] - rem0, self.soc_kwh[idx] - soc0)
            out.append(window_flex(self.p.subset(idx), tr, d, self.step_index, dev, starts=np.zeros(1, np.int64)))
        return (
            group_sum(out[0].down[0], g, n_groups),
            group_sum(out[1].up[0], g, n_groups),
            group_sum(out[0].rebound_down[0], g, n_groups),
        )

    def _headroom_from_plans_shared(self, d: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """headroom_from_plans per household (down, up, rebound of the down change), by the numba kernels,
        simulating each household once from its state and once more from its plan only if it is in an
        event: a free household starts both directions from the same state, and every household's
        trajectory, floor and window depend on its own inputs alone, so the values are those of one
        simulation of all households per direction (the numpy path), at n + (households in events) instead
        of 2 n household simulations."""
        s, in_event = self.step_index, self._in_event[idx]
        pk = np.ascontiguousarray(self._packed[:, idx])
        starts = np.zeros(1, np.int64)

        def flex(rows: np.ndarray | None, plan: bool) -> DeviceFlex:
            """The window's headroom of households ``idx[rows]`` (all if None), from their plans or states."""
            sub, p = (idx, pk) if rows is None else (idx[rows], np.ascontiguousarray(pk[:, rows]))
            t_in, rem, soc = self.t_in[sub], self.ev_remaining_kwh[sub], self.soc_kwh[sub]
            t0, rem0, soc0 = (self._tw_t[sub], self._tw_rem[sub], self._tw_soc[sub]) if plan else (t_in, rem, soc)
            tr = self._simulate(sub, t0, rem0, soc0, s, d, packed=p)
            dev = Deviation(t_in - t0, rem - rem0, soc - soc0)
            return kernels.window_flex(p, self._scalars, tr, d, s, dev, starts=starts)

        free = flex(None, False)
        down, up, rebound = free.down[0].copy(), free.up[0].copy(), free.rebound_down[0].copy()
        for sign in (-1.0, 1.0):
            rows = np.flatnonzero(in_event == sign)
            if rows.size:
                f = flex(rows, True)
                if sign < 0:
                    down[rows], rebound[rows] = f.down[0], f.rebound_down[0]
                else:
                    up[rows] = f.up[0]
        return down, up, rebound

    def baseline_power(
        self, horizon_steps: int, by: GroupBy = "owner", households: np.ndarray | None = None
    ) -> np.ndarray:
        """Expected net power (K, G) without control; `forecast` gives flexibility as well. The DSO's load
        forecast: with the numba engine one compiled pass sums it by group (see forecast_kernels)."""
        return self.forecast(horizon_steps, 1, by, households, starts=np.zeros(0, dtype=np.int64)).baseline_kw

    def step(self, control: Control | None = None) -> StepResult:
        """Advance one step under `control` (None = default operation); returns what the meters see."""
        s = self.step_index
        if s >= self.weather.n_steps:
            raise IndexError(f"step {s} is beyond the weather horizon ({self.weather.n_steps} steps)")
        inp = self._inputs(s, None, False)
        if self._floors is not None and not self._forecasting:
            self._floors.drop_before(s)  # every plan of this fleet or a copy of it from now on ends later
        groups: tuple[np.ndarray | None, ...] = (None, None, None)
        if self.engine == "numba" and control is None:
            # EV events, default powers and the state's advance in one compiled pass (kernels.plain_step)
            self.t_in, self.ev_remaining_kwh, self.soc_kwh, rows, unmet = kernels.plain_step(
                self._packed, self._scalars, inp.t_out, inp.irr, self.t_in, self.ev_remaining_kwh, self.soc_kwh,
                inp.base, inp.ev,
            )  # fmt: skip
            self.ev_unmet_kwh += unmet
            dp, net = DefaultPowers(*rows[:6]), rows[6]
            heat, ev, bat = dp.heat, dp.ev, dp.bat
            alloc, achieved, short = self._release()
        else:
            dp, net, heat, ev, bat, alloc, achieved, short, groups = self._step_apart(control, s, inp)
        if not self._forecasting:  # a forecast copy is thrown away: its breaches are never read (11 % of a roll-out)
            self._record_comfort(heat, alloc, inp, dp)
        self.step_index += 1
        return StepResult(
            s,
            net,
            inp.base,
            heat,
            ev,
            bat,
            dp.pv,
            alloc,
            achieved,
            short,
            group_sum(net, self.feeder, self.n_feeders),
            group_sum(net, self.owner, self.n_owners),
            *groups,
        )

    def _release(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Default operation: no household is held or in an event; (allocated, achieved, shortfall) are zero."""
        self._prev_off = np.zeros(self.n)
        self._in_event = np.zeros(self.n)
        self._plan = None
        return np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)

    def _step_apart(self, control: Control | None, s: int, inp: StepInputs) -> tuple[Any, ...]:
        """:meth:`step`'s physics as separate calls (under control, or by the numpy engine): EV events,
        default powers, the control's allocation, the state's advance."""
        p, fast = self.p, self.engine == "numba"
        self.ev_remaining_kwh, unmet = (kernels.ev_events if fast else ev_events)(self.ev_remaining_kwh, inp.ev)
        self.ev_unmet_kwh += unmet
        if fast:
            rows = kernels.default_powers(
                self._packed,
                self._scalars,
                inp.t_out,
                inp.irr,
                self.t_in,
                self.ev_remaining_kwh,
                self.soc_kwh,
                inp.base,
                inp.ev.connected,
            )
            dp = DefaultPowers(*rows)
        else:
            dp = default_powers(p, self.t_in, self.ev_remaining_kwh, self.soc_kwh, inp)
        heat, ev, bat = dp.heat, dp.ev, dp.bat
        groups: tuple[np.ndarray | None, ...] = (None, None, None)
        if control is None:
            alloc, achieved, short = self._release()
        else:
            heat, ev, bat, alloc, achieved, short, groups = self._controlled(control, s, inp, dp)
        if fast:
            self.t_in, self.ev_remaining_kwh, self.soc_kwh, net = kernels.advance(
                self._packed,
                self._scalars,
                inp.t_out,
                self.t_in,
                self.ev_remaining_kwh,
                self.soc_kwh,
                rows,
                inp.base,
                np.ascontiguousarray(heat),
                np.ascontiguousarray(ev),
                np.ascontiguousarray(bat),
            )
        else:
            net = inp.base + heat + ev + bat - dp.pv
            t_new = thermal_step(self.t_in, inp.t_out, dp.eta * heat + dp.gains, p.r, p.a)
            self.t_in = np.where(p.has_heat, t_new, p.t_set)
            self.ev_remaining_kwh = np.maximum(self.ev_remaining_kwh - ev * p.dt_h, 0.0)
            self.soc_kwh = battery_step(p, self.soc_kwh, bat)
        return dp, net, heat, ev, bat, alloc, achieved, short, groups

    def _controlled(self, c: Control, s: int, inp: StepInputs, dp: Any) -> tuple[Any, ...]:
        p, n = self.p, self.n
        if c.offset_kw is None:
            group, n_groups = self.group_index(c.by)
            layers, layer_dur = c.layers(n_groups)
            if layers.shape[1] != n_groups:
                raise ValueError(f"target_kw must have one value per group ({n_groups})")
            target = layers.sum(axis=0)
            asked = np.sign(target)[group]
        else:
            asked = np.sign(np.broadcast_to(np.asarray(c.offset_kw, float), (n,)))
        fast = self.engine == "numba"
        # Households not in control last step, or asked now for the opposite change, start a fresh
        # reference plan from their actual state: a 'consume more' after a shed is measured against
        # the recovering household, not against the plan the shed left behind.
        if fast:
            free, twins = kernels.start_twins(
                self._in_event, asked, (self.t_in, self.ev_remaining_kwh, self.soc_kwh),
                (self._tw_t, self._tw_rem, self._tw_soc), inp.ev,
            )  # fmt: skip
            self._tw_t, self._tw_rem, self._tw_soc = twins
        else:
            free = (self._in_event == 0) | (self._in_event != asked)
            self._tw_t = np.where(free, self.t_in, self._tw_t)
            self._tw_rem = np.where(free, self.ev_remaining_kwh, ev_events(self._tw_rem, inp.ev)[0])
            self._tw_soc = np.where(free, self.soc_kwh, self._tw_soc)
        # Only households that can be asked for a change need their reference plan simulated: the
        # others get no offset (zero headroom below), so they are free and re-planned next step.
        if c.offset_kw is not None:
            act = np.flatnonzero(np.broadcast_to(np.asarray(c.offset_kw, float), (n,)))
            dur = np.broadcast_to(np.asarray(c.duration_steps, dtype=np.int64), (n,))
            needed = np.unique(dur[act])
            shortest = dur
        else:
            act = np.flatnonzero(target[group])
            layers, layer_dur, used, needed, shortest_g, longest_g = (kernels.order_layers if fast else order_layers)(
                layers, layer_dur, target
            )
            shortest = shortest_g[group]
        whole = act.size == n  # then the fleet's own parameters and inputs serve, without gathering
        # The numba engine needs only the packed parameters of `act`, the numpy reference their params.
        pa = None if fast else p.subset(act)
        pk = (self._packed if whole else np.ascontiguousarray(self._packed[:, act])) if fast else None
        tw = (self._tw_t[act], self._tw_rem[act], self._tw_soc[act])
        k_plan = int(needed.max()) if act.size else 1
        # A copy of several owners: each household's floor looks as far ahead as its own owner's commitments.
        horizon = None
        if self._separate_owners and c.offset_kw is None and act.size:
            horizon = self._owners_horizon(act, group, longest_g)
        if pk is not None:  # numba
            tr = self._plans(act, tw, free, s, k_plan, pk, horizon)
        else:
            tr = self._simulate(None if whole else act, *tw, s, k_plan)
            if horizon is not None:
                tr = self._owners_floor(tr, act, horizon, s)
        force = self._force_mask(c)
        if pk is not None and c.offset_kw is None:  # numba, group targets: the rest in two compiled calls
            state = (self.t_in, self.ev_remaining_kwh, self.soc_kwh)
            heads = kernels.headroom(
                pk, self._scalars, tr, needed, s, force[act] if force.any() else None, act, state, tw
            )
            out, exact = kernels.controlled_tail(
                self._packed, self._scalars, inp.t_out, s, state, inp.ev, dp.gains, dp.eta, ~force,
                (dp.heat, dp.ev, dp.bat), group, free, asked, act, heads, needed, shortest[act], tr, np.sign(target),
                layers, layer_dur, used, self._prev_off, c.allocation, self.owner if self._separate_owners else None,
            )  # fmt: skip
            heat, ev, bat, off, achieved, short, self._in_event = out
            self._move_twins(tr, act)
            self._prev_off = off
            if self._plan is not None and self._forecasting:
                self._plan.exact = exact
            return heat, ev, bat, off.copy(), achieved, short, _group_sums(target, achieved, group, n_groups)
        dev = Deviation(self.t_in[act] - tw[0], self.ev_remaining_kwh[act] - tw[1], self.soc_kwh[act] - tw[2])
        by_dur = [self._headroom(pa, tr, needed, s, dev, act, False, pk)]
        if force.any():  # comfort-respecting headroom first, breaches only for the excess
            forced = self._headroom(pa, tr, needed, s, dev, act, True, pk)
            by_dur.append({d: _where_flex(force, forced[d], by_dur[0][d]) for d in forced})
        # Devices are split on the headroom of each household's shortest commitment (the most it may give now).
        tiers = [_pick(f, shortest) for f in by_dur]
        groups: tuple[np.ndarray | None, ...] = (None, None, None)
        if c.offset_kw is not None:
            off = np.broadcast_to(np.asarray(c.offset_kw, float), (n,))
        else:
            off = allocate_layers(
                by_dur, target, layers, layer_dur, used, group, self._prev_off, c.allocation,
                self.owner if self._separate_owners else None, self.engine,
            )  # fmt: skip
        if fast:
            heads = np.array([[getattr(f, x)[0] for x in _DF[:6]] for f in tiers])
            o_bat, o_ev, o_heat = kernels.split_devices(off, heads)
        else:
            o_bat, o_ev, o_heat = split_devices(off, tiers)
        # A household whose share ends while its group still asks the same way (a short call inside
        # a long award, or a greedy re-allocation) stays on its plan at no change rather than
        # recovering: its rebound would land inside the group's remaining commitment, undoing it.
        ctl = (off != 0) | (~free & (asked != 0)) if c.offset_kw is None else off != 0
        # This step's limits on actual inputs: physical always; comfort and deadline unless forced. The
        # comfort floor is the plan's recovery floor (not T_min): after release the home must be able to
        # stay in its band on its own heater.
        if fast:
            floor = p.t_min.copy()
            if tr.t_floor is not None:
                floor[act] = tr.t_floor[1]
            ref = (_scatter(tr.heat[0], act, n), _scatter(tr.ev[0], act, n), _scatter(tr.bat[0], act, n))
            heat, ev, bat, achieved, short = kernels.dispatch(
                self._packed, self._scalars, inp.t_out, s, self.t_in, self.ev_remaining_kwh, self.soc_kwh,
                inp.ev, dp.gains, dp.eta, ~force, floor, ref, (o_heat, o_ev, o_bat), ctl, (dp.heat, dp.ev, dp.bat), off,
            )  # fmt: skip
        else:
            heat, ev, bat, achieved, short = self._dispatch_numpy(
                s, inp, dp, tr, act, force, off, ctl, o_heat, o_ev, o_bat
            )
        if c.target_kw is not None:
            groups = _group_sums(target, achieved, group, n_groups)
        self._move_twins(tr, act)
        self._prev_off = off.copy()
        self._in_event = np.where(ctl, asked, 0.0)
        if self._plan is not None and self._forecasting:
            # Started from the actual state and run in default operation on the plans' inputs: the state
            # after this step is the plan's first row (see _plans).
            self._plan.exact = free[act] & ~ctl[act]
        return heat, ev, bat, off.copy(), achieved, short, groups

    def _move_twins(self, tr: Trajectory, act: np.ndarray) -> None:
        """The twins of ``act`` move along their plans; that only matters for households still in control next step."""
        self._tw_t[act], self._tw_rem[act], self._tw_soc[act] = tr.t_in[1], tr.ev_rem_end[0], tr.soc_end[0]

    def _plans(
        self,
        act: np.ndarray,
        tw: tuple[np.ndarray, ...],
        free: np.ndarray,
        s: int,
        k: int,
        pk: np.ndarray,
        horizon: np.ndarray | None = None,
    ) -> Trajectory:
        """Reference plans of households ``act`` from their twins ``tw`` over ``k`` steps, with their floors
        (numba engine; what ``_simulate`` gives, then :meth:`_owners_floor` when ``horizon``, per household
        of act its owner's, is given). A household still on the plan simulated last step takes
        its rows from that plan one step on: its twin is that plan's state after one step and the
        inputs are functions of the step alone, so a new simulation would repeat the same operations.
        The same holds for a household re-planned from its actual state (``free``) when that state is
        its last plan's after one step: in a forecast copy (whose inputs are the plans' own) a household
        that started its plan from its actual state and then ran in default operation (_controlled
        records which). Only the other households are simulated. A floor row is the plan's row capped by a
        backward pass from where its horizon ends (recovery_steps past it), which depends on the household
        and that end alone: the fleet and its copies keep those passes (kernels.FloorCache), so a plan ending
        where an earlier one did, in this copy or another, reuses them."""
        last, self._plan = self._plan, None
        n = self.n
        if last is None or last.step != s - 1 or not act.size or k > last.tr.heat.shape[0] - 1:
            tr = self._simulate(None if act.size == n else act, tw[0], tw[1], tw[2], s, k, False, pk)
        else:
            prev, tr_old = last.act, last.tr
            pos = np.minimum(np.searchsorted(prev, act), prev.size - 1)
            cont = (prev[pos] == act) & (~free[act] | last.exact[pos])
            fresh = np.flatnonzero(~cont)
            aligned = not fresh.size and act.size == prev.size  # then act is prev: rows are slices
            new = None
            if fresh.size:
                pk_f = np.ascontiguousarray(pk[:, fresh])
                new = self._simulate(act[fresh], tw[0][fresh], tw[1][fresh], tw[2][fresh], s, k, False, pk_f)
            kept = None if aligned else np.flatnonzero(cont)

            def rows(name: str, stop: int) -> np.ndarray:
                x_old = getattr(tr_old, name)
                if kept is None:
                    return x_old[1:stop]
                out = np.empty((stop - 1, act.size), dtype=x_old.dtype)
                out[:, kept] = x_old[1:stop][:, pos[kept]]
                if new is not None:
                    out[:, fresh] = getattr(new, name)
                return out

            tr = Trajectory(rows("t_in", k + 2), *(rows(f, k + 1) for f in _PER_STEP))
        t_out_h, irr_h = self._forecast_weather(s, k + self.recovery_steps)
        h = np.full(act.size, k, dtype=np.int64) if horizon is None else horizon
        assert self._floors is not None
        root = act if self._root_rows is None else self._root_rows[act]
        t_floor = self._floors.floors(pk, self._scalars, t_out_h, irr_h, tr.t_in, h, self.recovery_steps, s, root)
        tr = dataclasses.replace(tr, t_floor=t_floor)
        if act.size * tr.heat.shape[0] <= _KEEP_PLAN_CELLS:
            # Kept for the next step, unless too big to hold on to (a whole fleet in a long commitment, where
            # holding the plans would cost more memory than simulating them costs time).
            self._plan = _Plan(s, act, tr, np.zeros(act.size, dtype=bool))
        return tr

    def _forecast_weather(self, s0: int, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Forecast outdoor temperature and irradiance of steps s0.. (the last value persists past the horizon)."""
        w = self.forecast_weather
        if s0 >= 0 and s0 + n_steps <= w.n_steps:  # within the horizon: views (read-only use)
            return w.outdoor_temp_c[s0 : s0 + n_steps], w.irradiance_w_m2[s0 : s0 + n_steps]
        i = np.minimum(np.arange(s0, s0 + n_steps), w.n_steps - 1)  # as _inputs
        return w.outdoor_temp_c[i], w.irradiance_w_m2[i]

    def _dispatch_numpy(
        self,
        s: int,
        inp: StepInputs,
        dp: Any,
        tr: Trajectory,
        act: np.ndarray,
        force: np.ndarray,
        off: np.ndarray,
        ctl: np.ndarray,
        o_heat: np.ndarray,
        o_ev: np.ndarray,
        o_bat: np.ndarray,
    ) -> tuple[np.ndarray, ...]:
        """The numpy reference of kernels.dispatch: (heat, ev, battery, achieved, shortfall) of a controlled step."""
        p = self.p
        h_lo, h_hi = np.zeros(self.n), p.p_heat_max
        e_hi = ev_max(p, self.ev_remaining_kwh, inp.ev)
        e_lo = np.zeros(self.n)
        if not force.all():
            keep = ~force
            floor = p.t_min.copy()
            if tr.t_floor is not None:
                floor[act] = tr.t_floor[1]
            c_lo = np.clip(heat_to_reach(p, self.t_in, floor, inp.t_out, dp.gains, dp.eta), 0.0, p.p_heat_max)
            c_hi = np.clip(heat_to_reach(p, self.t_in, p.t_max, inp.t_out, dp.gains, dp.eta), c_lo, p.p_heat_max)
            h_lo, h_hi = np.where(keep, c_lo, h_lo), np.where(keep, c_hi, h_hi)
            later = p.ev_pmax * p.dt_h * np.maximum(inp.ev.dep_step - s - 1, 0)
            e_lo = np.where(keep, np.clip((self.ev_remaining_kwh - later) / p.dt_h, 0.0, e_hi), e_lo)
        b_lo, b_hi = battery_limits(p, self.soc_kwh)
        ref = tuple(_scatter(x[0], act, self.n) for x in (tr.heat, tr.ev, tr.bat))
        heat = np.where(ctl, np.clip(ref[0] + o_heat, h_lo, h_hi), dp.heat)
        ev = np.where(ctl, np.clip(ref[1] + o_ev, e_lo, e_hi), dp.ev)
        bat = np.where(ctl, np.clip(ref[2] + o_bat, b_lo, b_hi), dp.bat)
        achieved = np.where(ctl, (heat - ref[0]) + (ev - ref[1]) + (bat - ref[2]), 0.0)
        short = np.maximum(np.abs(off) - np.sign(off) * achieved, 0.0)
        return heat, ev, bat, achieved, short

    def _owners_horizon(self, act: np.ndarray, group: np.ndarray, longest: np.ndarray) -> np.ndarray:
        """Per household of ``act``, its owner's horizon: the longest duration any of the owner's groups holds
        (``longest`` per group, ``group`` per household). Reduced over the groups present, not over the
        households (np.maximum.at is slow), when each group has one owner (as the world's portfolios do)."""
        g, o = group[act], self.owner[act]
        own = np.zeros(int(o.max()) + 1, dtype=np.int64)
        g_owner = np.full(longest.size, -1, dtype=np.int64)
        g_owner[g] = o
        if np.array_equal(g_owner[g], o):
            present = g_owner >= 0
            np.maximum.at(own, g_owner[present], longest[present])
        else:  # a group spanning owners: per household
            np.maximum.at(own, o, longest[g])
        return own[o]

    def _owners_floor(self, tr: Trajectory, act: np.ndarray, horizon: np.ndarray, s: int) -> Trajectory:
        """``tr`` with each household's recovery floor over its own owner's ``horizon`` (per household, see
        _owners_horizon): the floor looks that far ahead, so a copy holding several owners must not lend
        one owner another's horizon (the numpy reference of kernels.plan_floor's horizons)."""
        assert tr.t_floor is not None
        t_floor = tr.t_floor.copy()
        for k in np.unique(horizon[horizon < tr.t_in.shape[0] - 1]).tolist():
            sel = np.flatnonzero(horizon == k)
            t_out, irr = self._forecast_weather(s, k + self.recovery_steps)
            t_ref = np.ascontiguousarray(tr.t_in[: k + 1, sel])
            if self.engine == "numpy":
                f = recovery_floor(self.p.subset(act[sel]), t_out, irr, t_ref)
            else:
                pk = np.ascontiguousarray(self._packed[:, act[sel]])
                f = kernels.recovery_floor(pk, self._scalars, t_out, irr, t_ref)
            t_floor[: k + 1, sel] = f
        return dataclasses.replace(tr, t_floor=t_floor)

    def _force_mask(self, c: Control) -> np.ndarray:
        """Per household, whether ``c`` lets it leave its comfort band (``force``: a bool, or one per group of
        ``c.by`` for targets, one per household for offsets)."""
        f = np.asarray(c.force, dtype=bool)
        if f.ndim == 0:
            return np.full(self.n, bool(f))
        if c.target_kw is not None:
            group, n_groups = self.group_index(c.by)
            if f.shape != (n_groups,):
                raise ValueError(f"force must be one bool or one per group ({n_groups})")
            return f[group]
        if f.shape != (self.n,):
            raise ValueError(f"force must be one bool or one per household ({self.n})")
        return f

    def _headroom(
        self,
        pa: HouseholdParams | None,
        tr: Trajectory,
        durations: np.ndarray,
        s: int,
        dev: Deviation,
        act: np.ndarray,
        force: bool,
        pk: np.ndarray | None = None,
    ) -> dict[int, DeviceFlex]:
        """Headroom of the households `act` over each of `durations` steps from now, fleet-wide
        (zero headroom elsewhere): one window per distinct duration, shared by every layer.
        ``pa``: their params (numpy engine); ``pk``: their packed params (numba engine)."""
        zero = np.zeros((1, self.n))
        if not act.size:
            return {int(d): DeviceFlex(*(zero for _ in DeviceFlex.__dataclass_fields__)) for d in durations}
        out = {}
        if self.engine == "numba":
            pk = np.ascontiguousarray(self._packed[:, act]) if pk is None else pk
            for d in map(int, durations):  # flex_for_durations of one duration: that window alone
                f = kernels.window_flex_array(pk, self._scalars, tr.head(d), d, s, dev, force)
                full = np.zeros((len(_DF), 1, self.n))  # the fields at `act`, zero elsewhere (as _scatter)
                full[:, :, act] = f
                out[d] = DeviceFlex(*full)
            return out
        assert pa is not None
        for d in map(int, durations):
            fd = flex_for_durations(pa, tr, np.full(act.size, d), s, dev, force)
            out[d] = DeviceFlex(*(_scatter(getattr(fd, x)[0], act, self.n)[None, :] for x in _DF))
        return out

    def _record_comfort(self, heat: np.ndarray, allocated: np.ndarray, inp: StepInputs, dp: Any) -> None:
        """Comfort breaches of the step just taken, and the part dispatch caused (households/comfort.py).
        Records are rebound, never written in place: a forecast copy shares them until it steps."""
        self.comfort = self.comfort.after_step(
            self.p, self.t_in, heat, allocated, inp.t_out, dp.gains, dp.eta, self.dt_minutes
        )
        self.violation_steps = self.comfort.breach_steps
        self.violation_degree_minutes = self.comfort.degree_minutes

    def group_sum(self, values: np.ndarray, by: GroupBy) -> np.ndarray:
        """Per-group sums of a per-household array (last axis)."""
        g, n_groups = self.group_index(by)
        return group_sum(np.asarray(values, float), g, n_groups)


# The fleet's per-household state: what a forecast copy takes along (the records rebind on each step).
_STATE = (
    "t_in",
    "ev_remaining_kwh",
    "soc_kwh",
    "_tw_t",
    "_tw_rem",
    "_tw_soc",
    "_prev_off",
    "_in_event",
    "violation_steps",
    "violation_degree_minutes",
    "ev_unmet_kwh",
)


class _SubsetBaseLoad:
    """The base load of households ``rows`` of a larger source (its index ``i`` is ``rows[i]`` there)."""

    _src: BaseLoadSource
    _rows: np.ndarray

    def __init__(self, src: BaseLoadSource, rows: np.ndarray) -> None:
        if isinstance(src, _SubsetBaseLoad):  # a subset of a subset reads the source directly
            inner: _SubsetBaseLoad = src
            src, rows = inner._src, inner._rows[rows]
        self._src, self._rows = src, rows
        self.n_households = len(rows)
        if hasattr(src, "expected_block"):
            self.expected_block = self._expected_block

    def _map(self, idx: np.ndarray | None) -> np.ndarray:
        return self._rows if idx is None else self._rows[idx]

    def at(self, step: int, idx: np.ndarray | None = None) -> np.ndarray:
        return self._src.at(step, self._map(idx))

    def expected(self, step: int, idx: np.ndarray | None = None) -> np.ndarray:
        return self._src.expected(step, self._map(idx))

    def _expected_block(self, start: int, n_steps: int, idx: np.ndarray | None = None) -> np.ndarray:
        return self._src.expected_block(start, n_steps, self._map(idx))  # type: ignore[attr-defined]


_EV_FIELDS = ("connected", "dep_step", "arriving", "energy")
_KEEP_SUBSETS = 64  # households sets whose copies share parameters and inputs (one per aggregator)
_KEEP_PLAN_CELLS = 1 << 19  # household-steps of plans kept between steps (about 46 MB at most)
_KEEP_EV_DAYS = 4  # a roll-out runs from now to at most two days past the next window


class _SubsetEvSchedule:
    """The EV sessions of households ``rows`` of a larger schedule (same draws: same sessions).

    The status of every step of a day is computed at once for all of ``rows`` and kept for a few
    days: roll-outs ask for it step by step, and for blocks of steps of a few households, many
    times over the same days. Rows are the schedule's own values (read-only views)."""

    _src: EvSchedule
    _rows: np.ndarray

    def __init__(self, src: EvSchedule | _SubsetEvSchedule, rows: np.ndarray) -> None:
        if isinstance(src, _SubsetEvSchedule):  # a subset of a subset reads the schedule directly
            root, rows = src._src, src._rows[rows]
        else:
            root = src
        self._src, self._rows = root, rows
        self._days: dict[int, EvStep] = {}

    def _map(self, idx: np.ndarray | None) -> np.ndarray:
        return self._rows if idx is None else self._rows[idx]

    def _day(self, day: int) -> tuple[EvStep, int, int]:
        """(status of every step of ``day``, its first step, its number of steps)."""
        st = self._days.get(day)
        if st is None:
            if len(self._days) >= _KEEP_EV_DAYS:
                self._days.pop(next(iter(self._days)))
            st = self._days[day] = self._src.day_status(day, self._rows)
        return (st, *self._src.day_steps(day))

    def at(self, step: int, idx: np.ndarray | None = None) -> EvStep:
        st, first, _ = self._day(self._src.day_of(step))
        r = step - first
        if idx is None:
            return EvStep(st.connected[r], st.dep_step[r], st.arriving[r], st.energy[r])
        return EvStep(st.connected[r, idx], st.dep_step[r, idx], st.arriving[r, idx], st.energy[r, idx])

    def block(self, start: int, n_steps: int, idx: np.ndarray | None = None) -> EvStep:
        parts = []
        s, end = start, start + n_steps
        while s < end:
            st, first, spd = self._day(self._src.day_of(s))
            stop = min(end, first + spd)
            parts.append((st, s - first, stop - first))
            s = stop
        if not parts:
            return self._src.block(start, n_steps, self._map(idx))
        out = []
        for f in _EV_FIELDS:
            x = [getattr(st, f)[a:b] for st, a, b in parts]
            v = x[0] if len(x) == 1 else np.concatenate(x)
            out.append(v if idx is None else v[:, idx])
        return EvStep(*out)


@dataclasses.dataclass
class _Plan:
    """The reference plans of a controlled step, kept for the next (see HouseholdFleet._plans): its step, its
    households, their plans (floors included) and per household whether its state after the step is its plan's
    (set by _controlled)."""

    step: int
    act: np.ndarray
    tr: Trajectory
    exact: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Subset:
    """What forecast copies of the same households share (see HouseholdFleet._subset)."""

    p: HouseholdParams
    feeder: np.ndarray
    owner: np.ndarray
    base_load: _SubsetBaseLoad
    ev_schedule: _SubsetEvSchedule
    packed: np.ndarray | None


def order_layers(
    layers: np.ndarray, layer_dur: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A group-target step's layers as they are allocated: each group's layers longest first, the ones
    without a change there last (they need no headroom) and dropped where no group has that many (a
    rank is one allocation for all groups). Returns (layers, durations, used), each (rank, groups), the
    distinct durations used ([1] if none), and per group its shortest used duration (1 for a group
    asked for no change) and its longest (0 if none). kernels.order_layers is the compiled twin."""
    used = (layers != 0) & (target != 0)
    if layers.shape[0] > 1:  # one layer is in order already
        order = np.argsort(np.where(used, -layer_dur, 1), axis=0, kind="stable")
        rank = max(int(used.sum(axis=0).max()), 1)
        layer_dur, layers, used = (np.take_along_axis(x, order, axis=0)[:rank] for x in (layer_dur, layers, used))
    needed = np.unique(layer_dur[used]) if used.any() else np.ones(1, dtype=np.int64)
    shortest = np.where(used, layer_dur, _NO_DURATION).min(axis=0, initial=_NO_DURATION)
    shortest = np.where(target != 0, shortest, 1)
    return layers, layer_dur, used, needed, shortest, np.where(used, layer_dur, 0).max(axis=0)


def _group_sums(
    target: np.ndarray, achieved: np.ndarray, group: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A group-target step's per-group (target, achieved, shortfall) as StepResult reports them."""
    got = group_sum(achieved, group, n_groups)
    return target, got, np.maximum(np.abs(target) - np.sign(target) * got, 0.0)


def allocate_layers(
    by_dur: list[dict[int, DeviceFlex]],
    target: np.ndarray,
    layers: np.ndarray,
    layer_dur: np.ndarray,
    used: np.ndarray,
    group: np.ndarray,
    prev_off: np.ndarray,
    mode: Literal["greedy", "proportional"],
    segment: np.ndarray | None,
    engine: kernels.Engine,
) -> np.ndarray:
    """Per household, the signed offset (kW) a group-target step allocates: each tier of headroom
    (``by_dur``: per duration, comfort-respecting first, then forced) is spent over the layers
    (``layers``, ``layer_dur``, ``used``: (layers, groups), longest first) before the next, each
    layer level filled by :func:`flex.allocate` up to what the group must hold for it.
    ``target``: per group, the net target; ``prev_off``: last step's offsets; ``segment``: the
    owners of a shared copy. The numba engine runs the same operations in one kernel (about 60
    numpy calls a step otherwise, the largest cost of a small forecast copy's step)."""
    n_groups = target.size
    if engine == "numba":
        durs = list(by_dur[0])
        heads = np.array([[[getattr(f[d], x)[0] for x in _DF[:6]] for d in durs] for f in by_dur])
        return kernels.allocate_layers(
            heads,
            np.array(durs, dtype=np.int64),
            np.sign(target),
            layers,
            layer_dur,
            used,
            group,
            prev_off,
            mode,
            segment,
        )
    sign = np.sign(target)[group]
    prev = np.where(np.sign(prev_off) == sign, np.abs(prev_off), 0.0)
    # Level l: what the group must hold for the l-th longest duration (the layers up to it).
    levels = np.maximum(np.sign(target) * np.cumsum(layers, axis=0), 0.0)
    amount = np.zeros(group.size)
    for f in by_dur:
        signed = {d: np.where(sign < 0, x.down[0], np.where(sign > 0, x.up[0], 0.0)) for d, x in f.items()}
        for lvl in range(len(layers)):
            head = _select(signed, layer_dur[lvl][group])
            need = np.where(used[lvl], np.maximum(levels[lvl] - group_sum(amount, group, n_groups), 0.0), 0.0)
            amount += allocate(
                np.maximum(head - amount, 0.0), group, need, np.maximum(prev - amount, 0.0), mode, segment
            )
    # A layer against the others (a 'consume more' call inside a shed) lowers the change now:
    # the long commitment's share is scaled down to the net change for this step.
    over = levels.max(axis=0) > levels[-1]
    if over.any():
        tot = group_sum(amount, group, n_groups)
        scale = np.divide(levels[-1], tot, out=np.ones(n_groups), where=over & (tot > levels[-1]))
        amount = amount * scale[group]
    return sign * amount


def _where_flex(mask: np.ndarray, a: DeviceFlex, b: DeviceFlex) -> DeviceFlex:
    """``a`` for the households in ``mask``, ``b`` elsewhere (rows broadcast)."""
    return DeviceFlex(*(np.where(mask, getattr(a, x), getattr(b, x)) for x in _DF))


def _select(by_duration: dict[int, np.ndarray], duration: np.ndarray) -> np.ndarray:
    """Per household, the value for its own duration (0 for a duration not in ``by_duration``)."""
    if len(by_duration) == 1:
        ((d, v),) = by_duration.items()
        return v if np.all(duration == d) else np.where(duration == d, v, 0.0)
    out = np.zeros(duration.size)
    for d, v in by_duration.items():
        out = np.where(duration == d, v, out)
    return out


def _pick(by_duration: dict[int, DeviceFlex], duration: np.ndarray) -> DeviceFlex:
    """Per household, the headroom over its own duration (households with a duration not in
    ``by_duration`` have none: they carry no change): :func:`_select` for each device's field."""
    if len(by_duration) == 1:
        ((d, f),) = by_duration.items()
        if np.all(duration == d):  # every household's own: the headroom as it is (rows of 1)
            return f
    masks = [(duration == d, f) for d, f in by_duration.items()]  # as _select, the masks once for all fields
    out = []
    for x in _DF:
        v = np.zeros(duration.size)
        for m, f in masks:
            v = np.where(m, getattr(f, x), v)
        out.append(np.reshape(v, (1, -1)))
    return DeviceFlex(*out)


_DF = tuple(DeviceFlex.__dataclass_fields__)
_PER_STEP = tuple(f.name for f in dataclasses.fields(Trajectory)[1:-1])  # rows = steps (t_in, t_floor: K + 1)
_NO_DURATION = np.iinfo(np.int64).max  # longer than any commitment: the neutral element of "shortest"


def _scatter(values: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """Per-household array of length n: `values` at `idx`, zero elsewhere."""
    out = np.zeros(n)
    out[idx] = values
    return out
