"""Weather per simulation step: outdoor temperature and global horizontal irradiance.

Generated from a seed for a Danish (Bornholm, 55 °N) winter or summer, or read
from CSV. Values represent a step [t, t + dt) and are taken at the step's
midpoint. Times are naive local standard time (CET, UTC+1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ..constants import MINUTES_PER_DAY
from .params import SeedLike, as_seed_sequence

LATITUDE_DEG = 55.1  # Bornholm
LONGITUDE_DEG = 14.9
_CLIMATE = {
    # mean °C, diurnal peak-to-peak K, day-to-day anomaly sd K, clearness Beta(a, b)
    "winter": (1.0, 3.0, 3.0, (1.5, 2.8)),
    "summer": (16.0, 6.0, 2.5, (2.5, 2.0)),
}


@dataclass(frozen=True)
class Weather:
    """Arrays of one value per step; index = step number since `start`."""

    start: datetime
    dt_minutes: int
    outdoor_temp_c: np.ndarray
    irradiance_w_m2: np.ndarray

    def __post_init__(self) -> None:
        t, g = np.asarray(self.outdoor_temp_c, float), np.asarray(self.irradiance_w_m2, float)
        if t.ndim != 1 or t.shape != g.shape:
            raise ValueError("outdoor_temp_c and irradiance_w_m2 must be 1-D arrays of equal length")
        if self.dt_minutes <= 0 or MINUTES_PER_DAY % self.dt_minutes:
            raise ValueError(f"dt_minutes must divide a day, got {self.dt_minutes}")
        if np.any(g < 0) or not (np.all(np.isfinite(t)) and np.all(np.isfinite(g))):
            raise ValueError("weather must be finite with irradiance >= 0")
        object.__setattr__(self, "outdoor_temp_c", t)
        object.__setattr__(self, "irradiance_w_m2", g)

    @property
    def n_steps(self) -> int:
        return int(self.outdoor_temp_c.size)


def _midpoints(start: datetime, n_steps: int, dt_minutes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hour of day, day of year and days since the start's midnight, at step midpoints."""
    minutes = start.hour * 60 + start.minute + start.second / 60 + (np.arange(n_steps) + 0.5) * dt_minutes
    days = minutes / MINUTES_PER_DAY
    return (minutes / 60.0) % 24.0, start.timetuple().tm_yday + days, days


def solar_elevation_sin(
    hour: np.ndarray, doy: np.ndarray, lat_deg: float = LATITUDE_DEG, lon_deg: float = LONGITUDE_DEG
) -> np.ndarray:
    """sin(solar elevation) from clock hour (CET) and day of year; Cooper declination + equation of time."""
    b = 2 * np.pi * (doy - 81) / 364.0
    eot_min = 9.87 * np.sin(2 * b) - 7.53 * np.cos(b) - 1.5 * np.sin(b)
    solar_hour = hour + (4 * (lon_deg - 15.0) + eot_min) / 60.0
    decl = np.radians(23.45) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    omega = np.radians(15.0 * (solar_hour - 12.0))
    lat = np.radians(lat_deg)
    return np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(omega)


def clear_sky_ghi(sin_elev: np.ndarray) -> np.ndarray:
    """Haurwitz clear-sky GHI (W/m²); zero when the sun is below the horizon."""
    s = np.clip(sin_elev, 0.0, None)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        g = 1098.0 * s * np.exp(-0.057 / s)
    return np.where(s > 0.0, g, 0.0)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) with marginal sd `sd` (loop is over steps, cheap: one series)."""
    eps = rng.standard_normal(n) * sd * np.sqrt(1 - phi * phi)
    out = np.empty(n)
    prev = rng.standard_normal() * sd
    for i in range(n):
        prev = phi * prev + eps[i]
        out[i] = prev
    return out


def generate_weather(
    season: Literal["winter", "summer"], start: datetime, n_steps: int, dt_minutes: int = 15, seed_seq: SeedLike = 0
) -> Weather:
    """Seeded Danish weather: diurnal cycle + AR(1) day-to-day anomaly; sun geometry × cloudiness.

    The season sets the temperature climate and cloudiness; the sun follows the
    calendar date of `start` (pair them sensibly).
    """
    if season not in _CLIMATE:
        raise ValueError(f"season must be 'winter' or 'summer', got {season!r}")
    mean, swing, anom_sd, (ka, kb) = _CLIMATE[season]
    rng = np.random.default_rng(as_seed_sequence(seed_seq))
    hour, doy, days = _midpoints(start, n_steps, dt_minutes)
    day = np.floor(days).astype(int)
    n_days = int(days[-1]) + 2 if n_steps else 1
    # Day-to-day anomaly: AR(1) over days (phi=0.7), linearly interpolated between noons.
    daily = _ar1(rng, n_days, 0.7, anom_sd)
    anomaly = np.interp(days - 0.5, np.arange(n_days), daily)
    diurnal = 0.5 * swing * np.cos(2 * np.pi * (hour - 15.0) / 24.0)  # max ~15:00, min ~03:00
    steps_per_hour = 60.0 / dt_minutes
    fast = _ar1(rng, n_steps, float(np.exp(-1.0 / (3 * steps_per_hour))), 0.3)
    temp = mean + diurnal + anomaly + fast
    # Cloudiness: daily clearness index ~ Beta, plus intra-day AR(1) variation (~2 h memory).
    clearness = rng.beta(ka, kb, n_days)[day]
    flicker = _ar1(rng, n_steps, float(np.exp(-1.0 / (2 * steps_per_hour))), 0.12)
    k = np.clip(clearness + flicker, 0.05, 1.0)
    irr = clear_sky_ghi(solar_elevation_sin(hour, doy)) * k
    return Weather(start, dt_minutes, temp, irr)


def perturb_weather(weather: Weather, seed_seq: SeedLike, temp_sd: float = 1.0, irr_rel_sd: float = 0.2) -> Weather:
    """A forecast of `weather`: AR(1) errors (~6 h memory) on temperature, multiplicative on sun."""
    rng = np.random.default_rng(as_seed_sequence(seed_seq))
    phi = float(np.exp(-weather.dt_minutes / 360.0))
    n = weather.n_steps
    t = weather.outdoor_temp_c + _ar1(rng, n, phi, temp_sd)
    g = weather.irradiance_w_m2 * np.exp(_ar1(rng, n, phi, irr_rel_sd) - 0.5 * irr_rel_sd**2)
    return Weather(weather.start, weather.dt_minutes, t, g)


def read_series_csv(
    path: str | Path, columns: list[str] | None, start: datetime, n_steps: int, dt_minutes: int
) -> tuple[list[str], np.ndarray]:
    """Read a 'timestamp' + value-columns CSV and interpolate to step midpoints.

    Returns (column names, array (n_columns, n_steps)). `columns=None` takes every
    non-timestamp column. The series must cover every step start; midpoints after
    the last row hold its value.
    """
    df = pd.read_csv(path)
    wanted = ["timestamp"] + (columns or [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    cols = columns or [c for c in df.columns if c != "timestamp"]
    if not cols:
        raise ValueError(f"{path}: no value columns besides 'timestamp'")
    ts = pd.to_datetime(df["timestamp"])
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("Etc/GMT-1").dt.tz_localize(None)  # to CET standard time, naive
    if start.tzinfo is not None:
        start = start.astimezone(timezone(timedelta(hours=1))).replace(tzinfo=None)
    order = np.argsort(ts.to_numpy())
    secs = (ts.to_numpy()[order] - np.datetime64(start)) / np.timedelta64(1, "s")
    last_needed = (n_steps - 1) * dt_minutes * 60.0
    if secs.size == 0 or secs[0] > 0 or secs[-1] < last_needed:
        end = start + timedelta(minutes=(n_steps - 1) * dt_minutes)
        have = f"{ts.min()} .. {ts.max()}" if secs.size else "no rows"
        raise ValueError(f"{path}: timestamps ({have}) do not cover the horizon {start} .. {end}")
    values = df[cols].to_numpy(dtype=float)[order]
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: non-numeric or missing values in {cols}")
    x = (np.arange(n_steps) + 0.5) * dt_minutes * 60.0
    return cols, np.stack([np.interp(x, secs, values[:, j]) for j in range(len(cols))])


def load_weather_csv(path: str | Path, start: datetime, n_steps: int, dt_minutes: int = 15) -> Weather:
    """Weather from CSV with columns timestamp, outdoor_temp_c, irradiance_w_m2 (any resolution)."""
    _, arr = read_series_csv(path, ["outdoor_temp_c", "irradiance_w_m2"], start, n_steps, dt_minutes)
    return Weather(start, dt_minutes, arr[0], np.clip(arr[1], 0.0, None))
