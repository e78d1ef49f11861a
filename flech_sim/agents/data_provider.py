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
from ..world import MeterFeed
from .base import Agent, Recorder


class DataProvider(Agent):
    def __init__(
        self,
        env: simpy.Environment,
        conn: Connection,
        cfg: DataProviderConfig,
        feed: MeterFeed,
        seed: np.random.SeedSequence,
        recorder: Recorder,
    ) -> None:
        """``feed``: the meters it reads (made by the wiring with ``cfg.household_meters``)."""
        super().__init__(env, conn, recorder)
        self.cfg = cfg
        self.feed = feed
        self.seed = seed

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
            for point in self.feed.portfolio_points:
                self._send(point, day, self.feed.portfolio_day(point, day), rng)
            for point, kw in self.feed.household_days(day):
                self._send(point, day, kw, rng)
            day += 1

    def _send(self, point: str, day: int, kw: np.ndarray, rng: np.random.Generator) -> None:
        noisy = kw * (1 + self.cfg.noise * rng.standard_normal(len(kw)))
        values: list[float | None] = [round(x, 6) for x in noisy.tolist()]
        if self.cfg.gap_probability > 0:
            for k in np.flatnonzero(rng.random(len(kw)) < self.cfg.gap_probability):
                values[k] = None
        self.conn.send(
            MeterData(
                **self.envelope("", METER_PRODUCT_ID),
                metering_point=point,
                start=day * MINUTES_PER_DAY,
                interval_minutes=self.feed.dt,
                consumption_kw=tuple(values),
            )
        )
