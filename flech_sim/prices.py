"""Day-ahead spot prices (DKK/kWh) that aggregators price their flexibility against.

Generated from the seed with a Danish shape (2015-16: daily averages 3-90
EUR/MWh, hourly -16 to 214) or read from a CSV (columns timestamp,
price_dkk_per_kwh). One value per model step.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .constants import MINUTES_PER_DAY

EUR_TO_DKK = 7.45
_HOURLY_SHAPE = np.array(
    [
        0.78,
        0.74,
        0.72,
        0.71,
        0.73,
        0.82,
        1.00,
        1.22,
        1.28,
        1.18,
        1.08,
        1.02,
        0.98,
        0.95,
        0.95,
        1.00,
        1.10,
        1.32,
        1.40,
        1.25,
        1.08,
        0.98,
        0.90,
        0.82,
    ]
)


def generate_spot(
    start: datetime, n_steps: int, dt_minutes: int, seed: np.random.SeedSequence, mean_eur_mwh: float = 35.0
) -> np.ndarray:
    """Daily level (log-normal AR(1) around the mean) times the hourly shape, clipped to the seen range."""
    rng = np.random.default_rng(seed)
    steps_per_day = MINUTES_PER_DAY // dt_minutes
    n_days = n_steps // steps_per_day + 2
    level = np.empty(n_days)
    x = 0.0
    for d in range(n_days):
        x = 0.7 * x + 0.35 * rng.standard_normal()
        level[d] = mean_eur_mwh * np.exp(x - 0.5 * 0.35**2 / (1 - 0.49))
    minutes = start.hour * 60 + start.minute + dt_minutes * np.arange(n_steps)
    day, hour = minutes // MINUTES_PER_DAY, (minutes % MINUTES_PER_DAY) // 60
    eur_mwh = np.clip(level[day] * _HOURLY_SHAPE[hour] + 4.0 * rng.standard_normal(n_steps), -16.0, 214.0)
    return eur_mwh * EUR_TO_DKK / 1000.0


def load_spot_csv(path: str | Path, start: datetime, n_steps: int, dt_minutes: int) -> np.ndarray:
    df = pd.read_csv(path, parse_dates=["timestamp"])
    if "price_dkk_per_kwh" not in df.columns:
        raise ValueError(f"{path}: needs columns timestamp, price_dkk_per_kwh")
    grid = pd.date_range(start, periods=n_steps, freq=f"{dt_minutes}min")
    s = df.set_index("timestamp")["price_dkk_per_kwh"].sort_index()
    if s.index[0] > grid[0] or s.index[-1] < grid[-1] - pd.Timedelta(hours=1):
        raise ValueError(f"{path}: prices do not cover {grid[0]} .. {grid[-1]}")
    return s.reindex(s.index.union(grid)).ffill().reindex(grid).to_numpy()
