"""Uncontrollable household base load (kW per step), generated lazily day by day.

A year for 10,000 households would be a 10,000 × 35,040 float64 array (2.8 GB),
so nothing here holds more than a couple of days at once. Noise for households
[b*block, (b+1)*block) on day d comes from its own seed (key: block, day), so any
chunking of steps or households gives identical numbers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np

from ..constants import MINUTES_PER_DAY
from .params import SeedLike, as_seed_sequence, child_seed
from .weather import read_series_csv

# Danish residential shape by clock hour (no electric heating): low night, a
# morning peak at 7-8, the evening (cooking) peak at 17-19. Normalised to mean 1.
_WEEKDAY = np.array(
    [
        0.55,
        0.48,
        0.45,
        0.44,
        0.45,
        0.52,
        0.75,
        1.05,
        1.05,
        0.95,
        0.90,
        0.90,
        0.92,
        0.88,
        0.85,
        0.92,
        1.15,
        1.60,
        1.85,
        1.70,
        1.45,
        1.25,
        1.00,
        0.75,
    ]
)
_WEEKEND = np.array(
    [
        0.60,
        0.52,
        0.47,
        0.45,
        0.45,
        0.47,
        0.55,
        0.70,
        0.90,
        1.10,
        1.15,
        1.15,
        1.15,
        1.05,
        0.98,
        1.00,
        1.15,
        1.55,
        1.75,
        1.60,
        1.40,
        1.25,
        1.05,
        0.80,
    ]
)
SEASONAL_AMPLITUDE = 0.2  # winter days use ~20 % more than the annual mean, summer ~20 % less


def _per_slot(hourly: np.ndarray, dt_minutes: int) -> np.ndarray:
    """Periodic linear interpolation of an hourly shape (values at hh:30) to slot midpoints."""
    mid_h = (np.arange(MINUTES_PER_DAY // dt_minutes) + 0.5) * dt_minutes / 60.0
    shape = np.interp(mid_h, np.arange(-0.5, 25.0, 1.0), np.r_[hourly[-1], hourly, hourly[0]])
    return shape / shape.mean()


class BaseLoadSource(Protocol):
    """What the fleet needs from a base-load model."""

    n_households: int

    def at(self, step: int, idx: np.ndarray | None = None) -> np.ndarray: ...

    def expected(self, step: int, idx: np.ndarray | None = None) -> np.ndarray: ...


class _Clock:
    """Maps step numbers to (day since the start's midnight, slot in day)."""

    def __init__(self, start: datetime, dt_minutes: int):
        m0 = start.hour * 60 + start.minute
        if MINUTES_PER_DAY % dt_minutes or m0 % dt_minutes or start.second or start.microsecond:
            raise ValueError(f"start {start} must lie on the {dt_minutes}-minute grid")
        self.start, self.dt, self.spd, self.slot0 = start, dt_minutes, MINUTES_PER_DAY // dt_minutes, m0 // dt_minutes

    def day_slot(self, step: int) -> tuple[int, int]:
        return divmod(self.slot0 + step, self.spd)

    def date(self, day: int) -> datetime:
        return self.start + timedelta(days=day)


class BaseLoad:
    """Seeded synthetic base load: mean × daily shape × season × day factor × step noise."""

    def __init__(
        self,
        annual_kwh: np.ndarray,
        start: datetime,
        dt_minutes: int,
        seed_seq: SeedLike,
        *,
        step_sd: float = 0.35,
        day_sd: float = 0.15,
        block: int = 1024,
        cache_days: int = 3,
    ):
        self.mean_kw = np.asarray(annual_kwh, float) / 8766.0
        self.n_households = int(self.mean_kw.size)
        self._clock = _Clock(start, dt_minutes)
        self._seed = as_seed_sequence(seed_seq)
        self._step_sd, self._day_sd, self._block, self._cache_days = step_sd, day_sd, block, cache_days
        self._shapes = (_per_slot(_WEEKDAY, dt_minutes), _per_slot(_WEEKEND, dt_minutes))
        self._cache: dict[int, np.ndarray] = {}
        self._shape_cache: dict[int, np.ndarray] = {}

    def _mean_shape(self, day: int) -> np.ndarray:
        """Per-slot multiplier (shape × season) of a day, same for all households; kept per day
        (a forecast asks for it once per step and home set, hundreds of thousands of times a run)."""
        out = self._shape_cache.get(day)
        if out is None:
            date = self._clock.date(day)
            doy = date.timetuple().tm_yday
            season = 1.0 + SEASONAL_AMPLITUDE * np.cos(2 * np.pi * (doy - 15) / 365.25)
            out = self._shape_cache[day] = self._shapes[date.weekday() >= 5] * season
        return out

    def _day(self, day: int) -> np.ndarray:
        """All households' actual load on `day`, shape (N, steps per day); cached briefly."""
        if day in self._cache:
            return self._cache[day]
        spd, sd, dsd = self._clock.spd, self._step_sd, self._day_sd
        out = np.empty((self.n_households, spd))
        for b0 in range(0, self.n_households, self._block):
            rng = np.random.default_rng(child_seed(self._seed, b0 // self._block, day + 2))
            z = rng.standard_normal((min(self._block, self.n_households - b0), spd + 1))
            out[b0 : b0 + z.shape[0]] = np.exp(z[:, :1] * dsd - 0.5 * dsd**2 + z[:, 1:] * sd - 0.5 * sd**2)
        out *= self.mean_kw[:, None] * self._mean_shape(day)[None, :]
        if len(self._cache) >= self._cache_days:
            self._cache.pop(next(iter(self._cache)))
        self._cache[day] = out
        return out

    def at(self, step: int, idx: np.ndarray | None = None) -> np.ndarray:
        """Actual base load (kW) of step `step` for households `idx` (all if None)."""
        day, slot = self._clock.day_slot(step)
        col = self._day(day)[:, slot]
        return col if idx is None else col[idx]

    def expected(self, step: int, idx: np.ndarray | None = None) -> np.ndarray:
        """Expected base load (no noise): what a forecaster knows."""
        day, slot = self._clock.day_slot(step)
        m = self.mean_kw if idx is None else self.mean_kw[idx]
        return m * self._mean_shape(day)[slot]

    def expected_block(self, start: int, n_steps: int, idx: np.ndarray | None = None) -> np.ndarray:
        """``expected`` of steps start..start+n_steps-1 as one (n_steps, households) array, with the
        same products (mean × the step's factor), so it equals the stacked rows exactly."""
        m = self.mean_kw if idx is None else self.mean_kw[idx]
        return self.expected_factors(start, n_steps)[:, None] * m[None, :]

    def expected_factors(self, start: int, n_steps: int) -> np.ndarray:
        """Per step of start..start+n_steps-1 the factor (shape × season) that ``expected`` multiplies
        ``mean_kw`` by: a compiled loop forms each household's expected load from the two as
        ``expected`` does, without a (steps, households) array."""
        f = np.empty(n_steps)
        s = 0
        while s < n_steps:
            day, slot = self._clock.day_slot(start + s)
            take = min(self._clock.spd - slot, n_steps - s)
            f[s : s + take] = self._mean_shape(day)[slot : slot + take]
            s += take
        return f

    def block(self, start_step: int, stop_step: int, idx: np.ndarray | None = None) -> np.ndarray:
        """Actual load for steps [start_step, stop_step): shape (n, k); for exports and checks."""
        cols = [self.at(s, idx) for s in range(start_step, stop_step)]
        n = self.n_households if idx is None else len(np.arange(self.n_households)[idx])
        return np.stack(cols, axis=1) if cols else np.zeros((n, 0))


class CsvBaseLoad:
    """Base load from CSV (timestamp + one kW column per profile); households take profiles round-robin.

    Steps beyond the file's horizon hold the last value, so forecasts near the end
    of a run still work. The expected load equals the actual (a measured series).
    """

    def __init__(
        self,
        path: str | Path,
        n_households: int,
        start: datetime,
        n_steps: int,
        dt_minutes: int = 15,
        scale: np.ndarray | float = 1.0,
    ):
        self.columns, data = read_series_csv(path, None, start, n_steps, dt_minutes)
        self.n_households = int(n_households)
        self._assign = np.arange(self.n_households) % data.shape[0]
        self._data = data
        self._scale = np.broadcast_to(np.asarray(scale, float), (self.n_households,)).copy()

    def at(self, step: int, idx: np.ndarray | None = None) -> np.ndarray:
        col = self._data[:, min(step, self._data.shape[1] - 1)]
        v = col[self._assign] * self._scale
        return v if idx is None else v[idx]

    expected = at
