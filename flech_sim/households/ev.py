"""EV charging sessions: one per household and day (arrive evening, leave next morning).

Session of day d: arrival at the household's usual hour ± jitter on day d,
departure at its usual hour ± jitter on day d + 1, energy needed = usual × lognormal.
Drawn per day from a seed keyed by the day, so any step can be queried in any
order. Arrival rounds up and departure down to the step grid: the car is plugged
in for whole steps only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from ..constants import MINUTES_PER_DAY
from .params import SeedLike, as_seed_sequence, child_seed
from .population import HouseholdParams


@dataclass(frozen=True)
class EvStep:
    """EV status during one step for the queried households."""

    connected: np.ndarray  # bool: plugged in for this whole step
    dep_step: np.ndarray  # int: departure step of the current session (-1 if not connected)
    arriving: np.ndarray  # bool: session starts at this step
    energy: np.ndarray  # kWh to charge for sessions starting now (0 elsewhere)


class EvSchedule:
    """Lazily drawn sessions; a small per-day cache keeps stepping cheap."""

    def __init__(
        self,
        params: HouseholdParams,
        start: datetime,
        dt_minutes: int,
        seed_seq: SeedLike,
        *,
        arrival_sd_min: float = 45.0,
        departure_sd_min: float = 30.0,
        energy_sigma: float = 0.3,
    ):
        m0 = start.hour * 60 + start.minute
        if m0 % dt_minutes or MINUTES_PER_DAY % dt_minutes:
            raise ValueError(f"start {start} must lie on the {dt_minutes}-minute grid")
        self._p, self._dt, self._m0 = params, dt_minutes, m0
        self._seed = as_seed_sequence(seed_seq)
        self._sd = (arrival_sd_min, departure_sd_min, energy_sigma)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def sessions(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(arrival step, departure step, energy kWh) of every household's session of `day`."""
        if day in self._cache:
            return self._cache[day]
        p, dt = self._p, self._dt
        rng = np.random.default_rng(child_seed(self._seed, day + 2))
        z = rng.standard_normal((3, p.n))
        used = rng.random(p.n) < p.ev_use_prob
        arr_min = np.clip(p.ev_arr_h * 60 + z[0] * self._sd[0], 12 * 60, MINUTES_PER_DAY - dt)
        dep_min = np.clip(p.ev_dep_h * 60 + z[1] * self._sd[1], 4 * 60, 11 * 60)
        arr = np.ceil((day * MINUTES_PER_DAY + arr_min - self._m0) / dt).astype(np.int64)
        dep = np.floor(((day + 1) * MINUTES_PER_DAY + dep_min - self._m0) / dt).astype(np.int64)
        energy = p.ev_energy * np.exp(z[2] * self._sd[2] - 0.5 * self._sd[2] ** 2) * used
        # Never ask more than 90 % of what the charger can deliver while plugged in.
        energy = np.minimum(energy, 0.9 * p.ev_pmax * (dep - arr) * dt / 60.0)
        if len(self._cache) >= 6:
            self._cache.pop(next(iter(self._cache)))
        self._cache[day] = (arr, dep, energy)
        return arr, dep, energy

    def at(self, step: int, idx: np.ndarray | None = None) -> EvStep:
        """Status at `step` for households `idx` (all if None)."""
        return self._status(np.int64(step), (self._m0 + step * self._dt) // MINUTES_PER_DAY, idx)

    def block(self, start: int, n_steps: int, idx: np.ndarray | None = None) -> EvStep:
        """Status at steps start..start+n_steps-1 as (n_steps, households) arrays: `at` of each
        step stacked, computed one day at a time (forecasts need many steps of few households)."""
        steps = np.arange(start, start + n_steps, dtype=np.int64)
        days = (self._m0 + steps * self._dt) // MINUTES_PER_DAY
        parts = [self._status(steps[days == d][:, None], int(d), idx) for d in np.unique(days)]
        return EvStep(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                if parts
                else np.zeros((0, self._p.n if idx is None else len(idx)))
                for f in ("connected", "dep_step", "arriving", "energy")
            )
        )

    def session_table(self, start: int, n_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The sessions behind ``block(start, n_steps)`` for a compiled loop to read the status from:
        (arrival, departure, energy) of every household's sessions of the days from the one before
        ``start``'s to the last step's, as (days, n) arrays, and per step the row of its own day (the
        day before is the row above). The status of a step then follows as ``_status`` derives it."""
        if n_steps < 1:
            raise ValueError("n_steps must be >= 1")
        d0, d1 = self.day_of(start) - 1, self.day_of(start + n_steps - 1)
        sess = [self.sessions(d) for d in range(d0, d1 + 1)]
        arr, dep, energy = (np.stack([x[f] for x in sess]) for f in range(3))
        row = (self._m0 + np.arange(start, start + n_steps, dtype=np.int64) * self._dt) // MINUTES_PER_DAY - d0
        return arr, dep, energy, row

    def day_steps(self, day: int) -> tuple[int, int]:
        """(first step, number of steps) of calendar day ``day`` (steps before the start are negative)."""
        return (day * MINUTES_PER_DAY - self._m0) // self._dt, MINUTES_PER_DAY // self._dt

    def day_of(self, step: int) -> int:
        return (self._m0 + step * self._dt) // MINUTES_PER_DAY

    def day_status(self, day: int, idx: np.ndarray | None = None) -> EvStep:
        """``at`` of every step of calendar day ``day`` as (steps, households) arrays (same values)."""
        first, n_steps = self.day_steps(day)
        return self._status(np.arange(first, first + n_steps, dtype=np.int64)[:, None], day, idx)

    def _status(self, step: np.ndarray | np.int64, day: int, idx: np.ndarray | None) -> EvStep:
        a1, d1, e1 = self.sessions(day - 1)
        a2, d2, e2 = self.sessions(day)
        has = self._p.has_ev
        if idx is not None:
            a1, d1, e1, a2, d2, e2, has = (x[idx] for x in (a1, d1, e1, a2, d2, e2, has))
        c1 = (a1 <= step) & (step < d1) & has
        c2 = (a2 <= step) & (step < d2) & has
        arr1, arr2 = (a1 == step) & has, (a2 == step) & has
        return EvStep(
            connected=c1 | c2,
            dep_step=np.where(c2, d2, np.where(c1, d1, -1)),
            arriving=arr1 | arr2,
            energy=np.where(arr2, e2, np.where(arr1, e1, 0.0)),
        )
