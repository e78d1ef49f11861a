"""A minimal physical model of one aggregator's households on one feeder.

It is the physical world, not an agent: the aggregator controls it (sets
reductions) and the data provider reads its meters, but neither talks to
the other through it. Households have an uncontrollable base load with a
Danish winter daily shape and one flexible heater each, on for a share of
the time; what an aggregator can shed is the heater load that is actually
on, so forecasts (expected values) and delivery (random draws) differ, and
non-delivery emerges instead of being assumed. A share of the shed energy
comes back after the event (rebound), spread over the next hour. This is
the deliberately small model of the core issue; the household fleet in
:mod:`flech_sim.households` is the detailed one.

Randomness is drawn per (portfolio, day) from the run's seed, so results
do not depend on the order in which days are computed.
"""

from __future__ import annotations

import numpy as np

from ..scenario import AggregatorConfig

REBOUND_STEPS = 4
"""Shed heating energy is made up over this many steps once the event ends."""

MINUTES_PER_DAY = 1440

_HOURLY_SHAPE = np.array(
    # Danish winter residential load relative to the daily mean, hour 0..23
    [0.62, 0.55, 0.52, 0.52, 0.55, 0.65, 0.90, 1.20, 1.25, 1.00, 0.90, 0.88,
     0.90, 0.88, 0.88, 0.95, 1.15, 1.55, 1.70, 1.60, 1.40, 1.20, 0.95, 0.75]
)
_HOURLY_SHAPE = _HOURLY_SHAPE / _HOURLY_SHAPE.mean()
_HEATER_DUTY_SHAPE = 1.0 + 0.3 * np.cos(2 * np.pi * (np.arange(24) - 5) / 24)  # colder at dawn


class SimplePortfolio:
    def __init__(self, point: str, location: str, n_households: int, cfg: AggregatorConfig,
                 seed_seq: np.random.SeedSequence, resolution_min: int = 15) -> None:
        if MINUTES_PER_DAY % resolution_min:
            raise ValueError("resolution must divide a day")
        self.point = point
        self.location = location
        self.n = n_households
        self.cfg = cfg
        self.seed_seq = seed_seq
        self.res = resolution_min
        self.steps_per_day = MINUTES_PER_DAY // resolution_min
        hours = (np.arange(self.steps_per_day) * resolution_min) // 60
        self._base_shape = _HOURLY_SHAPE[hours]
        self._duty = np.clip(cfg.duty_cycle * _HEATER_DUTY_SHAPE[hours], 0.0, 1.0)
        self._reduction: dict[int, float] = {}  # step index -> requested kW (negative = increase)
        self._days: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._debt: dict[int, float] = {}  # rebound energy (kW-steps) still owed at the end of each day

    # -- aggregator's view (forecast = expectation) ------------------------------------
    def steps(self, start: int, minutes: int) -> np.ndarray:
        """Model steps overlapping [start, start + minutes)."""
        return np.arange(start // self.res, -(-(start + minutes) // self.res))

    def interval_steps(self, start: int, minutes: int, n_intervals: int) -> np.ndarray:
        """(n_intervals, k) array of the steps each market interval overlaps."""
        if start % self.res == 0 and minutes % self.res == 0:
            k = minutes // self.res
            return start // self.res + np.arange(n_intervals * k).reshape(n_intervals, k)
        rows = [self.steps(start + i * minutes, minutes) for i in range(n_intervals)]
        width = max(len(r) for r in rows)
        return np.array([np.pad(r, (0, width - len(r)), mode="edge") for r in rows])

    def forecast(self, start: int, minutes: int, n_intervals: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expected baseline, down-flex and up-flex (kW) per interval of ``minutes``."""
        k = self.interval_steps(start, minutes, n_intervals) % self.steps_per_day
        base = self.n * (self.cfg.base_kw * self._base_shape[k] + self.cfg.flexible_kw * self._duty[k])
        down = self.n * self.cfg.flexible_kw * self._duty[k]
        up = self.n * self.cfg.flexible_kw * (1.0 - self._duty[k])
        return base.mean(1), down.min(1), up.min(1)

    def dispatch(self, start: int, minutes: int, change_kw: list[float]) -> None:
        """Schedule a load reduction (positive) or increase (negative) per interval."""
        for i, q in enumerate(change_kw):
            if q:
                for s in self.steps(start + i * minutes, minutes):
                    self._reduction[int(s)] = self._reduction.get(int(s), 0.0) + q

    # -- the physics (what meters see) --------------------------------------------------
    def day(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """True metered load and achieved reduction (kW per step) for day ``d``."""
        if d not in self._days:
            self._days[d] = self._simulate_day(d)
        return self._days[d]

    def _rebound(self, d: int, achieved: np.ndarray, room_up: np.ndarray) -> np.ndarray:
        """Extra load after a reduction ends: ``rebound`` x the energy shed, paid back as headroom allows.

        The debt carries over midnight, so it is kept per day end in ``_debt``.
        """
        if d > 0 and (d - 1) not in self._debt:
            self.day(d - 1)
        debt = self._debt.get(d - 1, 0.0)
        extra = np.zeros_like(achieved)
        slice_ = 0.0
        for k, a in enumerate(achieved.tolist()):
            if a > 0:
                debt += self.cfg.rebound * a
                slice_ = 0.0
            elif debt > 1e-12:
                slice_ = slice_ or debt / REBOUND_STEPS
                extra[k] = min(debt, slice_, float(room_up[k]))
                debt -= extra[k]
        self._debt[d] = debt
        return extra

    def _simulate_day(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        ss = self.seed_seq
        rng = np.random.default_rng(np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, d)))
        n, cfg = self.n, self.cfg
        base = n * cfg.base_kw * self._base_shape * (1 + cfg.noise * rng.standard_normal(self.steps_per_day) / np.sqrt(n))
        on = rng.binomial(n, self._duty)
        heater = on * cfg.flexible_kw
        room_up = (n - on) * cfg.flexible_kw
        first = d * self.steps_per_day
        requested = np.array([self._reduction.get(first + k, 0.0) for k in range(self.steps_per_day)])
        achieved = np.where(requested >= 0, np.minimum(requested, heater), -np.minimum(-requested, room_up))
        load = np.maximum(base, 0.0) + heater - achieved + self._rebound(d, achieved, room_up)
        return load, achieved
