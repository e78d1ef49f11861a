"""Data provider (the DataHub): publishes metered load a day late, through the platform's messages.

Data for day D goes out on day D + ``delay_days`` at ``publish_time``: one
:class:`MeterData` per portfolio (``<aggregator>@<feeder>``) and, when asked,
per household (``<aggregator>@<feeder>#<household>``), at the model's
15-minute resolution. Optional meter noise and gaps (``None`` readings) are
drawn from the run's seed; settlement sees only what was published here.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from ..constants import MINUTES_PER_DAY
from ..endpoint import Connection
from ..households import child_seed
from ..messages import MeterData
from ..metering import METER_PRODUCT_ID
from ..scenario import DataProviderConfig
from ..world import UNAGGREGATED, World
from .base import Agent


def household_point(portfolio: str, household: int) -> str:
    return f"{portfolio}#{household}"


def published_points(world: World, cfg: DataProviderConfig) -> list[str]:
    """Every metering point this data provider will publish (the platform registers them)."""
    points = [p for p in world.active_points if not p.startswith(UNAGGREGATED + "@")]
    if cfg.household_meters:
        owned = world.owner < world.owners.index(UNAGGREGATED)
        points += [household_point(world.points[g], int(h))
                   for h, g in zip(np.flatnonzero(owned), world.portfolio[owned], strict=True)]
    return points


class DataProvider(Agent):
    def __init__(self, env: simpy.Environment, conn: Connection, cfg: DataProviderConfig, world: World,
                 seed: np.random.SeedSequence) -> None:
        super().__init__(env, conn)
        self.cfg = cfg
        self.world = world
        self.seed = seed
        self.points = [p for p in world.active_points if not p.startswith(UNAGGREGATED + "@")]
        if cfg.household_meters:
            world.keep_household_series = True

    def start(self) -> None:
        super().start()
        self.env.process(self._publish())

    def _publish(self) -> Generator[simpy.Event, Any, None]:
        day = 0
        publish = self.cfg.publish_time.hour * 60 + self.cfg.publish_time.minute
        while True:
            due = (day + self.cfg.delay_days) * MINUTES_PER_DAY + publish
            yield self.env.timeout(due - self.now)
            rng = np.random.default_rng(child_seed(self.seed, day))
            for point in self.points:
                self._send(point, day, self.world.metered(point, day), rng)
            if self.cfg.household_meters:
                loads = self.world.household_day(day)
                owned = self.world.owner < self.world.owners.index(UNAGGREGATED)
                for h in np.flatnonzero(owned):
                    point = household_point(self.world.points[self.world.portfolio[h]], int(h))
                    self._send(point, day, loads[h], rng)
            day += 1

    def _send(self, point: str, day: int, kw: np.ndarray, rng: np.random.Generator) -> None:
        values: list[float | None] = [round(x, 6) for x in (kw * (1 + self.cfg.noise * rng.standard_normal(len(kw)))).tolist()]
        if self.cfg.gap_probability > 0:
            for k in np.flatnonzero(rng.random(len(kw)) < self.cfg.gap_probability):
                values[k] = None
        self.conn.send(MeterData(
            **self.envelope("", METER_PRODUCT_ID), metering_point=point, start=day * MINUTES_PER_DAY,
            interval_minutes=self.world.dt, consumption_kw=tuple(values),
        ))
