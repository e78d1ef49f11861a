"""Data provider (the DataHub): publishes each portfolio's metered load, a day late."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from ..endpoint import Connection
from ..messages import MeterData
from ..metering import METER_PRODUCT_ID
from ..persistor import Persistor
from ..scenario import DataProviderConfig
from .base import Agent
from .simple_portfolio import MINUTES_PER_DAY, SimplePortfolio


class DataProvider(Agent):
    """Reads meters (the physical portfolios) and sends :class:`MeterData` to the platform.

    Data for day D is sent on day D + delay at the publish time, at the
    portfolio model's resolution. The true loads also go to the
    ``portfolio_load`` table, so that analysts can compare with what was
    metered and settled.
    """

    def __init__(self, env: simpy.Environment, conn: Connection, cfg: DataProviderConfig,
                 meters: list[SimplePortfolio], persistor: Persistor) -> None:
        super().__init__(env, conn)
        self.cfg = cfg
        self.meters = sorted(meters, key=lambda m: m.point)
        self.persistor = persistor

    def start(self) -> None:
        super().start()
        self.env.process(self._publish())

    def _publish(self) -> Generator[simpy.Event, Any, None]:
        day = 0
        while True:
            due = (day + self.cfg.delay_days) * MINUTES_PER_DAY + self.cfg.publish_time.hour * 60 + self.cfg.publish_time.minute
            yield self.env.timeout(due - self.now)
            for m in self.meters:
                load, achieved = m.day(day)
                start = day * MINUTES_PER_DAY
                n = len(load)
                self.persistor.append_columns("portfolio_load", {
                    "metering_point": [m.point] * n, "location": [m.location] * n,
                    "interval_start": start + m.res * np.arange(n), "load_kw": load, "reduction_kw": achieved,
                })
                self.conn.send(MeterData(
                    **self.envelope("", METER_PRODUCT_ID), metering_point=m.point, start=start,
                    interval_minutes=m.res, consumption_kw=tuple(round(x, 6) for x in load.tolist()),
                ))
            day += 1
