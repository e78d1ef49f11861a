"""Buyers: the DSO (fixed timetable and/or congestion-driven) and the TSO (regulating power).

* Timetable: markets opened every day as the scenario lists them.
* DSO congestion: every day at ``request_time`` the DSO forecasts its
  feeders for the next day (its own grid measurements: the world's feeder
  forecast), and where the forecast exceeds the limit it opens a market of
  the chosen product for the congested hours, the need being the excess.
  For options (CRP) it then watches the feeder during the window and
  activates when congestion actually appears.
* TSO: one market per 15-minute interval for the share of the system
  imbalance it buys here; the sign gives the direction (system short ->
  consume less).

Horizon honesty: a buyer opens no market whose settlement cannot complete
inside the horizon (delivery ends after it, or the meter data its settlement
waits for is published after it), whatever opens it: the timetable, the
congestion watch or the TSO's balancing. Such markets are listed in
``skipped_horizon`` with their source and reason, and the run summary counts
them. Option activations (CRP) are only ever sent inside an opened market's
window, so they settle whenever their market does.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import simpy

from ..constants import MINUTES_PER_DAY
from ..endpoint import Connection
from ..messages import Activation, ClearingResult, Direction, MarketRequest, Rejection, SettlementStatement
from ..scenario import BalancingConfig, BuyerConfig, CongestionConfig, ImbalanceConfig, MarketSchedule
from ..world import GridView
from .base import Agent, Recorder

DAY = MINUTES_PER_DAY

MarketSource = Literal["timetable", "congestion", "balancing"]
HorizonReason = Literal["delivery_after_horizon", "settlement_after_horizon"]


class SkippedMarket(NamedTuple):
    """A market a buyer did not open because it could not settle inside the horizon."""

    market_id: str
    source: MarketSource
    reason: HorizonReason


def horizon_reason(delivery_end: int, settle_due: int, horizon: int) -> HorizonReason | None:
    """Why a market could not complete inside ``horizon`` (None: it can). Strict for settlement:
    the clock stops at the horizon before events due at that very minute."""
    if delivery_end > horizon:
        return "delivery_after_horizon"
    if settle_due >= horizon:
        return "settlement_after_horizon"
    return None


def meter_data_due(end_minute: int, delay_days: int, publish_minute: int) -> int:
    """Minute at which the readings of [.., end_minute) are all published: data for day D is
    published on day D + delay_days at ``publish_minute`` (the DataHub's timetable)."""
    last_day = (end_minute - 1) // DAY
    return (last_day + delay_days) * DAY + publish_minute


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
            "params": dict(schedule.params),
        }
        out.append((send, f"{schedule.product}-{index}-d{day:03d}", fields))
    return out


def congestion_need(
    forecast_kw: np.ndarray, limit_kw: float, threshold: float, steps_per_interval: int
) -> tuple[int, np.ndarray] | None:
    """(first interval, need per interval) covering every congested interval of a day; None if none.

    ``forecast_kw`` is one day at model resolution; intervals average it.
    """
    per_interval = forecast_kw[: len(forecast_kw) // steps_per_interval * steps_per_interval]
    mean = per_interval.reshape(-1, steps_per_interval).mean(axis=1)
    excess = mean - threshold * limit_kw
    hot = np.flatnonzero(excess > 0)
    if hot.size == 0:
        return None
    first, last = int(hot[0]), int(hot[-1])
    return first, np.round(np.maximum(excess[first : last + 1], 0.0), 3)


def imbalance_series(cfg: ImbalanceConfig, start: Any, n: int, dt: int, seed: np.random.SeedSequence) -> np.ndarray:
    """kW per interval of ``dt`` minutes: an AR(1) with the configured spread, or read from CSV."""
    if cfg.csv:
        df = pd.read_csv(cfg.csv, parse_dates=["timestamp"])
        if "imbalance_kw" not in df.columns:
            raise ValueError(f"{cfg.csv}: needs columns timestamp, imbalance_kw")
        grid = pd.date_range(start, periods=n, freq=f"{dt}min")
        s = df.set_index("timestamp")["imbalance_kw"].sort_index()
        return s.reindex(s.index.union(grid)).interpolate().reindex(grid).fillna(0.0).to_numpy()
    rng = np.random.default_rng(seed)
    phi = cfg.autocorrelation
    eps = rng.standard_normal(n) * cfg.sd_kw * np.sqrt(1 - phi**2)
    x = np.empty(n)
    prev = rng.standard_normal() * cfg.sd_kw
    for i in range(n):
        prev = phi * prev + eps[i]
        x[i] = prev
    return x


class Buyer(Agent):
    def __init__(
        self,
        env: simpy.Environment,
        conn: Connection,
        cfg: BuyerConfig,
        grid: GridView | None,
        calendar_start: datetime,
        horizon_minutes: int,
        seed: np.random.SeedSequence,
        recorder: Recorder,
        settle_due: Callable[[MarketRequest], int] | None = None,
    ) -> None:
        """``grid``: a DSO's view of its feeders (None for a TSO, which sees no feeder);
        ``calendar_start``: the date and time of minute 0 (the TSO's imbalance follows the clock);
        ``settle_due``: the earliest minute a market's settlement can complete (when the meter data
        it waits for is published; None: at the end of delivery)."""
        super().__init__(env, conn, recorder)
        self.cfg = cfg
        self.grid = grid
        self.calendar_start = calendar_start
        self.horizon = horizon_minutes
        self.seed = seed
        self.paid_dkk = 0.0  # over the buyer's settlement statements (negative nets: money out)
        self.rejections: list[Rejection] = []
        self._requests: dict[str, MarketRequest] = {}  # markets opened and not yet cleared
        self.settle_due = settle_due or (lambda req: req.delivery_end)
        self.skipped_horizon: list[SkippedMarket] = []  # markets not opened: they could not settle in the horizon

    def start(self) -> None:
        super().start()
        plan = sorted(
            (send, f"{self.id}-{mid}", sched.product, fields)
            for i, sched in enumerate(self.cfg.markets)
            for send, mid, fields in scheduled_requests(sched, i)
        )
        if plan:
            self.env.process(self._timetable(plan))
        if self.cfg.congestion is not None:
            self.env.process(self._watch_feeders(self.cfg.congestion))
        if self.cfg.balancing is not None:
            self.env.process(self._balance(self.cfg.balancing))

    def _grid(self) -> GridView:
        if self.grid is None:
            raise ValueError(f"buyer {self.id} watches feeders but was given no grid view (only a DSO has one)")
        return self.grid

    def settles_in_horizon(self, req: MarketRequest) -> bool:
        """Whether delivery ends and the meter data settlement needs is published before the horizon
        (strictly: the clock stops at the horizon before events due at that very minute)."""
        return horizon_reason(req.delivery_end, self.settle_due(req), self.horizon) is None

    def _open(self, market_id: str, product: str, source: MarketSource, **fields: Any) -> MarketRequest | None:
        """Send the request, unless its market could not settle inside the horizon (then record why)."""
        req = MarketRequest(**self.envelope(market_id, product), **fields)
        why = horizon_reason(req.delivery_end, self.settle_due(req), self.horizon)
        if why is not None:
            self.skipped_horizon.append(SkippedMarket(market_id, source, why))
            return None
        self._requests[market_id] = req
        self.conn.send(req)
        return req

    def _timetable(self, plan: list[tuple[int, str, str, dict[str, Any]]]) -> Generator[simpy.Event, Any, None]:
        for send, market_id, product, fields in plan:
            if send > self.now:
                yield self.env.timeout(send - self.now)
            self._open(market_id, product, "timetable", **fields)

    # -- DSO: congestion-driven markets ----------------------------------------------------
    def _watch_feeders(self, c: CongestionConfig) -> Generator[simpy.Event, Any, None]:
        w = self._grid()
        feeders = c.feeders or list(w.feeders)
        if c.interval_minutes % w.dt:
            raise ValueError("congestion.interval_minutes must be a multiple of the model step")
        k = c.interval_minutes // w.dt
        day = 0
        while True:
            send = day * DAY + _minute(c.request_time)
            if send >= self.horizon:
                return
            if send > self.now:
                yield self.env.timeout(send - self.now)
            tomorrow = (day + 1) * DAY
            horizon = (tomorrow + DAY - self.now) // w.dt
            fc = w.forecast(horizon)
            for f in feeders:
                hit = congestion_need(fc[f][(tomorrow - self.now) // w.dt :], w.limit_kw(f), c.threshold, k)
                if hit is None:
                    continue
                first, need = hit
                self._open(
                    f"{self.id}-{c.product}-{f}-d{day + 1:03d}",
                    c.product,
                    "congestion",
                    location=f,
                    direction=Direction.DOWN,
                    gate_close=day * DAY + _minute(c.gate_close_time),
                    delivery_start=tomorrow + first * c.interval_minutes,
                    interval_minutes=c.interval_minutes,
                    need_kw=tuple(need.tolist()),
                    price_cap=c.price_cap,
                    penalty_price=c.penalty_price,
                    params=dict(c.params),
                )
            day += 1

    # -- TSO: regulating power ---------------------------------------------------------------
    def _balance(self, b: BalancingConfig) -> Generator[simpy.Event, Any, None]:
        n = self.horizon // b.interval_minutes + 1
        imbalance = imbalance_series(b.imbalance, self.calendar_start, n, b.interval_minutes, self.seed)
        first = -(-b.request_lead_minutes // b.interval_minutes)
        for t in range(first, n):
            delivery = t * b.interval_minutes
            send = delivery - b.request_lead_minutes
            if send > self.now:
                yield self.env.timeout(send - self.now)
            need = imbalance[t] * b.share
            if abs(need) < b.min_need_kw:
                continue
            self._open(
                f"{self.id}-{b.product}-{t:06d}",
                b.product,
                "balancing",
                location="*",
                direction=Direction.DOWN if need > 0 else Direction.UP,
                gate_close=delivery - b.gate_close_lead_minutes,
                delivery_start=delivery,
                interval_minutes=b.interval_minutes,
                need_kw=(round(abs(need), 3),),
                price_cap=b.price_cap,
                params=dict(b.params),
            )

    # -- answers -------------------------------------------------------------------------------
    def on_clearing_result(self, msg: ClearingResult) -> None:
        c = self.cfg.congestion
        req = self._requests.pop(msg.market_id, None)
        if c is not None and c.activate and req is not None and any(q > 0 for q in msg.accepted_kw):
            self.env.process(self._activate_on_congestion(c, req, list(msg.accepted_kw)))

    def _activate_on_congestion(
        self, c: CongestionConfig, req: MarketRequest, reserved: list[float]
    ) -> Generator[simpy.Event, Any, None]:
        """Measure the feeder every model step; when it is congested, call the reserve for the
        first interval far enough ahead, up to the excess (each interval at most once)."""
        w = self._grid()
        limit = w.limit_kw(req.location)
        m = req.interval_minutes
        called = [False] * len(reserved)
        t = max(self.now, req.delivery_start - c.activation_lead_minutes - m)
        while True:
            if t > self.now:
                yield self.env.timeout(t - self.now)
            i = -(-(self.now + c.activation_lead_minutes - req.delivery_start) // m)  # first callable interval
            if i >= len(reserved):
                return
            excess = w.load_now(req.location) - c.threshold * limit
            if i >= 0 and excess > 0 and not called[i] and reserved[i] > 0:
                called[i] = True
                self.conn.send(
                    Activation(
                        **self.envelope(req.market_id, req.product_id),
                        activation_id=f"{req.market_id}-a{i}",
                        start=req.delivery_start + i * m,
                        interval_minutes=m,
                        quantities_kw=(round(min(reserved[i], excess), 3),),
                    )
                )
            t = self.now + w.dt

    def on_settlement(self, msg: SettlementStatement) -> None:
        self.paid_dkk -= sum(msg.net_dkk)

    def on_rejection(self, msg: Rejection) -> None:
        self.rejections.append(msg)
