"""Imbalance prices (DKK/kWh) that settle an mFRR seller's deviation from its activation order.

Nordic practice: since 1 November 2021 every balance responsible party's imbalance is settled at a
single imbalance price per settlement period (eSett, single price - single position), which is the
regulating-power price of the direction the system was regulated in; it lies above spot in a short
system (upward regulation) and below spot in a long one. Energinet reported the gap between the
Danish regulating-power price and spot at about 42 EUR/MWh in early 2023, 15.9 in the second half
of 2023 and 3.4 in early 2024 (docs/reference_ranges.md, key ``regulating_minus_spot_price``).

Generated from the seed as spot +/- a premium (a log-normal AR(1) around ``premium_eur_mwh``, so
most periods carry a few EUR/MWh and a few carry spikes), or read from a CSV in the spot format
(columns timestamp, price_dkk_per_kwh: one signed imbalance price per period, read by the same
:func:`flech_sim.prices.load_spot_csv`). One value per model step, aligned with the spot series.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .constants import MINUTES_PER_DAY
from .messages import Direction
from .prices import EUR_TO_DKK, load_spot_csv

if TYPE_CHECKING:
    from .scenario import Scenario

__all__ = [
    "ImbalancePrices",
    "generate_premium",
    "imbalance_prices",
    "recorded_imbalance_prices",
    "scenario_imbalance_prices",
]

_AR = 0.6
"""Autocorrelation of the log-premium per model step (spikes last a few quarter-hours)."""
_SIGMA = 0.8
"""Standard deviation of the log-premium: median about 0.7 x the mean, a 1-in-100 period above 4 x."""


@dataclass(frozen=True)
class ImbalancePrices:
    """Spot and the two imbalance prices per model step from minute 0 of the run.

    ``short`` applies where the system was short (upward regulation: the mFRR market bought
    'down' = consume less); ``long`` where it was long ('up' = consume more). A CSV gives one
    price series, so both are that series."""

    dt_minutes: int
    spot: np.ndarray
    short: np.ndarray
    long: np.ndarray
    expected_premium: float
    """DKK/kWh a seller should expect to lose per kWh of deviation (the configured mean premium)."""

    def price(self, direction: Direction, start: int, minutes: int) -> float:
        """Mean imbalance price over [start, start + minutes) for a market of ``direction``."""
        series = self.short if direction is Direction.DOWN else self.long
        return float(np.mean(series[self._steps(start, minutes)]))

    def spread(self, direction: Direction, start: int, minutes: int) -> float:
        """DKK a seller loses per kWh it fails to deliver: what its balance responsible party pays for
        the deviation at the imbalance price beyond the spot price the energy is valued at (short:
        buys at P_imb instead of spot; long: sells at P_imb what it bought at spot)."""
        steps = self._steps(start, minutes)
        series = self.short if direction is Direction.DOWN else self.long
        gap = float(np.mean(series[steps] - self.spot[steps]))
        return gap if direction is Direction.DOWN else -gap

    def _steps(self, start: int, minutes: int) -> np.ndarray:
        first = start // self.dt_minutes
        n = max(1, -(-minutes // self.dt_minutes))
        return np.minimum(np.arange(first, first + n), len(self.spot) - 1)


def generate_premium(n_steps: int, seed: np.random.SeedSequence, mean_eur_mwh: float) -> np.ndarray:
    """Imbalance premium over spot, EUR/MWh per step: log-normal AR(1) with mean ``mean_eur_mwh``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n_steps)
    x = np.empty(n_steps)
    prev = z[0]
    scale = np.sqrt(1 - _AR**2)
    for i in range(n_steps):  # stationary unit-variance AR(1)
        prev = prev if i == 0 else _AR * prev + scale * z[i]
        x[i] = prev
    return mean_eur_mwh * np.exp(_SIGMA * x - 0.5 * _SIGMA**2)


def imbalance_prices(
    *,
    premium_eur_mwh: float,
    csv: str | None,
    start: datetime,
    spot: np.ndarray,
    dt_minutes: int,
    seed: np.random.SeedSequence,
) -> ImbalancePrices:
    """The run's imbalance prices: spot +/- a generated premium, or the CSV's series."""
    n = len(spot)
    expected = premium_eur_mwh * EUR_TO_DKK / 1000.0
    if csv:
        p = load_spot_csv(csv, start, n, dt_minutes)
        return ImbalancePrices(dt_minutes, spot, p, p, expected)
    premium = generate_premium(n, seed, premium_eur_mwh) * EUR_TO_DKK / 1000.0
    return ImbalancePrices(dt_minutes, spot, spot + premium, spot - premium, expected)


def scenario_imbalance_prices(scenario: Scenario, spot: np.ndarray | None = None) -> ImbalancePrices:
    """The imbalance prices of a run of ``scenario``, over the spot series the run's aggregators see
    (``spot``; None = made here exactly as :func:`flech_sim.simulation.run` makes it)."""
    from .households.params import child_seed  # late: keeps this module light for the products
    from .prices import generate_spot

    dt = scenario.households.dt_minutes
    root = np.random.SeedSequence(scenario.seed)
    if spot is None:
        n_steps = scenario.horizon_minutes // dt + 2 * (MINUTES_PER_DAY // dt)
        spot = (
            load_spot_csv(scenario.spot.csv, scenario.start, n_steps, dt)
            if scenario.spot.csv
            else generate_spot(scenario.start, n_steps, dt, child_seed(root, 2), scenario.spot.mean_eur_mwh)
        )
    cfg = scenario.settlement.imbalance_price
    return imbalance_prices(
        premium_eur_mwh=cfg.premium_eur_mwh,
        csv=cfg.csv,
        start=scenario.start,
        spot=spot,
        dt_minutes=dt,
        seed=child_seed(root, 5),
    )


def recorded_imbalance_prices(table: pd.DataFrame | None, premium_eur_mwh: float) -> ImbalancePrices | None:
    """The prices a run recorded (its ``imbalance_prices`` table: one row per model step from minute 0),
    for re-settling the run from its record (:mod:`flech_sim.audit`); None if the table is empty."""
    if table is None or len(table) == 0 or "short_dkk_per_kwh" not in table:
        return None
    t = table.sort_values("interval_start")
    start = t.interval_start
    if len(t) > 1:
        step = start.iloc[1] - start.iloc[0]
        dt = int(step / pd.Timedelta(minutes=1)) if isinstance(step, pd.Timedelta) else int(step)
    else:
        dt = 15
    return ImbalancePrices(
        dt,
        t.spot_dkk_per_kwh.to_numpy(float),
        t.short_dkk_per_kwh.to_numpy(float),
        t.long_dkk_per_kwh.to_numpy(float),
        premium_eur_mwh * EUR_TO_DKK / 1000.0,
    )
