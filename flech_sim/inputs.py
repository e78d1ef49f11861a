"""The run's inputs written out as tables: weather, spot and imbalance prices, imbalance series, feeder limits.

A figure of a peak can then show the outdoor temperature behind it without re-deriving the inputs.
Everything is read from the objects the run was built with (the same arrays the households, aggregators
and buyers used), except the TSO imbalance, which is regenerated from the buyer's own keyed seed, and the
imbalance prices, regenerated from the scenario over the same spot series: each is a pure function of
(config, start, seed), so it is the one the run used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .agents.buyers import Buyer, imbalance_series
from .imbalance_price import scenario_imbalance_prices
from .persistor import Persistor
from .scenario import Scenario

if TYPE_CHECKING:
    from .simulation import Wiring


def record_inputs(persistor: Persistor, scenario: Scenario, wiring: Wiring) -> None:
    """Append the weather, spot_prices, imbalance_prices, imbalance and feeder_limits tables over the horizon."""
    world, agents = wiring.world, wiring.agents
    horizon = scenario.horizon_minutes
    if True:  # the world is always built before any agent
        dt = world.dt
        n = int(horizon // dt)
        minutes = np.arange(n, dtype=np.int64) * dt
        w = world.fleet.weather
        persistor.append_columns(
            "weather",
            {
                "interval_start": minutes,
                "outdoor_temp_c": w.outdoor_temp_c[:n],
                "irradiance_w_m2": w.irradiance_w_m2[:n],
            },
        )
        spot = next((a.spot for a in agents.values() if hasattr(a, "spot")), None)
        if spot is not None:
            persistor.append_columns("spot_prices", {"interval_start": minutes, "price_dkk_per_kwh": spot[:n]})
            prices = scenario_imbalance_prices(scenario, spot)
            persistor.append_columns(
                "imbalance_prices",
                {
                    "interval_start": minutes,
                    "spot_dkk_per_kwh": prices.spot[:n],
                    "short_dkk_per_kwh": prices.short[:n],
                    "long_dkk_per_kwh": prices.long[:n],
                },
            )
        counts = np.bincount(world.feeder, minlength=len(world.feeders))
        persistor.append_columns(
            "feeder_limits",
            {
                "feeder": list(world.feeders),
                "limit_kw": world.limits.astype(float),
                "households": counts,
            },
        )
    for buyer in sorted((a for a in agents.values() if isinstance(a, Buyer)), key=lambda b: b.id):
        b = buyer.cfg.balancing
        if b is None:
            continue
        n = int(horizon // b.interval_minutes)
        series = imbalance_series(b.imbalance, buyer.calendar_start, n + 1, b.interval_minutes, buyer.seed)
        persistor.append_columns(
            "imbalance",
            {
                "buyer": [buyer.id] * n,
                "interval_start": np.arange(n, dtype=np.int64) * b.interval_minutes,
                "interval_minutes": np.full(n, b.interval_minutes, dtype=np.int64),
                "imbalance_kw": series[:n],
                "need_kw": series[:n] * b.share,
            },
        )
