"""Buyers: a DSO (or TSO) opening markets on the timetable given in the scenario."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy

from ..endpoint import Connection
from ..messages import ClearingResult, MarketRequest, Rejection, SettlementStatement
from ..scenario import BuyerConfig, MarketSchedule
from .base import Agent

DAY = 1440


def _minute(t: Any) -> int:
    return t.hour * 60 + t.minute


def scheduled_requests(schedule: MarketSchedule, index: int) -> list[tuple[int, str, dict[str, Any]]]:
    """(send minute, market ID, request fields) for every market of one timetable entry."""
    out = []
    for k in range(schedule.count):
        day = schedule.first_day + k * schedule.every_days
        send = day * DAY + _minute(schedule.request_time)
        fields = {
            "location": schedule.location,
            "direction": schedule.direction,
            "gate_close": day * DAY + _minute(schedule.gate_close_time),
            "delivery_start": (day + schedule.delivery_day_offset) * DAY + _minute(schedule.delivery_start_time),
            "interval_minutes": schedule.interval_minutes,
            "need_kw": tuple(schedule.need_kw),
            "price_cap": schedule.price_cap,
            "penalty_price": schedule.penalty_price,
        }
        out.append((send, f"{schedule.product}-{index}-d{day:03d}", fields))
    return out


class Buyer(Agent):
    def __init__(self, env: simpy.Environment, conn: Connection, cfg: BuyerConfig) -> None:
        super().__init__(env, conn)
        self.cfg = cfg
        self.results: dict[str, ClearingResult] = {}
        self.statements: list[SettlementStatement] = []
        self.rejections: list[Rejection] = []

    def start(self) -> None:
        super().start()
        plan = sorted(
            (send, f"{self.id}-{mid}", sched.product, fields)
            for i, sched in enumerate(self.cfg.markets)
            for send, mid, fields in scheduled_requests(sched, i)
        )
        self.env.process(self._open_markets(plan))

    def _open_markets(self, plan: list[tuple[int, str, str, dict[str, Any]]]) -> Generator[simpy.Event, Any, None]:
        for send, market_id, product, fields in plan:
            if send > self.now:
                yield self.env.timeout(send - self.now)
            self.conn.send(MarketRequest(**self.envelope(market_id, product), **fields))

    def on_clearing_result(self, msg: ClearingResult) -> None:
        self.results[msg.market_id] = msg

    def on_settlement(self, msg: SettlementStatement) -> None:
        self.statements.append(msg)

    def on_rejection(self, msg: Rejection) -> None:
        self.rejections.append(msg)
