"""Aggregator (seller): forecasts its households' flexibility, bids it, never sells it twice, dispatches.

* Forecast: the world's physics run forward from the households' current
  state on *forecast* weather and base load (so forecast error is real),
  cached for ``forecast_refresh_hours``.
* Bids: price steps from :mod:`flech_sim.agents.strategies` ('cost' or
  'risk_aware').
* Commitments: every kW offered is reserved per model step and feeder until
  the award says what was taken; offers are sized against what is still
  free, so overlapping markets can never both buy the same flexibility.
* Dispatch: an award (or activation) becomes a consumption change on the
  aggregator's households on that feeder; what they deliver follows from
  the physics, so non-delivery emerges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from ..endpoint import Connection
from ..messages import (
    Activation,
    Award,
    Bid,
    BidRequest,
    Direction,
    MarketCancellation,
    Rejection,
    SettlementStatement,
)
from ..persistor import Persistor
from ..scenario import AggregatorConfig
from ..world import PortfolioForecast, World
from .base import Agent
from .strategies import Offer, make_offers


@dataclass
class _OpenBid:
    request: BidRequest
    bid: Bid
    split: dict[str, np.ndarray]  # feeder -> kW per interval of this bid


class Aggregator(Agent):
    def __init__(self, env: simpy.Environment, conn: Connection, cfg: AggregatorConfig, world: World,
                 spot_dkk_per_kwh: np.ndarray, log: Persistor | None = None) -> None:
        super().__init__(env, conn)
        self.log = log  # the aggregator's own forecast log (flex_forecasts); never the platform's tables
        self.cfg = cfg
        self.world = world
        self.spot = spot_dkk_per_kwh
        self.feeders = world.feeders_of(self.id)
        self.dt = world.dt
        self._reserved: dict[tuple[str, str], np.ndarray] = {}
        self._forecasts: dict[int, PortfolioForecast] = {}  # by window length in steps
        self._open: dict[str, _OpenBid] = {}  # bid msg_id -> open bid
        self._by_bid_id: dict[str, str] = {}
        self._awarded: dict[str, _OpenBid] = {}  # bid_id -> awarded option, waiting for activations
        self.revenue_dkk = 0.0
        self.penalties_dkk = 0.0
        self.rejections: list[Rejection] = []

    # -- forecasting ------------------------------------------------------------------------
    def _forecast(self, first_step: int, duration: int) -> PortfolioForecast:
        """A forecast covering windows of ``duration`` steps from ``first_step``: reused while
        younger than ``forecast_refresh_hours`` (and covering the window), else made again,
        covering window starts up to that much further ahead."""
        now = self.now // self.dt
        refresh = max(1, int(self.cfg.forecast_refresh_hours * 60 // self.dt))
        fc = self._forecasts.get(duration)
        if fc is None or now - fc.start_step >= refresh or not fc.first_window <= first_step <= fc.last_window:
            fc = self._forecasts[duration] = self.world.forecast(self.id, first_step, duration, first_step + refresh)
        return fc

    def _steps(self, req: BidRequest) -> np.ndarray:
        """(n_intervals, k) model steps of each market interval."""
        n, m, dt = len(req.need_kw), req.interval_minutes, self.dt
        if req.delivery_start % dt == 0 and m % dt == 0:
            return req.delivery_start // dt + np.arange(n * (m // dt)).reshape(n, m // dt)
        rows = [np.arange((req.delivery_start + i * m) // dt, -(-(req.delivery_start + (i + 1) * m) // dt))
                for i in range(n)]
        width = max(len(r) for r in rows)
        return np.array([np.pad(r, (0, width - len(r)), mode="edge") for r in rows])

    def _reservations(self, feeder: str, direction: str, size: int) -> np.ndarray:
        key = (feeder, direction)
        r = self._reserved.get(key)
        if r is None or len(r) < size:
            grown = np.zeros(max(size, 2 * len(r) if r is not None else size))
            if r is not None:
                grown[: len(r)] = r
            self._reserved[key] = r = grown
        return r

    def committed_kw(self, feeder: str, direction: Direction, minute: int) -> float:
        """kW reserved by open bids and awards at a minute (for tests and analysis)."""
        step = minute // self.dt
        return float(self._reservations(feeder, str(direction), step + 1)[step])

    # -- bidding ---------------------------------------------------------------------------
    def on_bid_request(self, req: BidRequest) -> None:
        feeders = self.feeders if req.location == "*" else [f for f in self.feeders if f == req.location]
        if not feeders:
            return
        steps = self._steps(req)
        first = int(steps.min())
        if first <= self.now // self.dt:
            return  # delivery already started: nothing to offer
        window = int(steps.max()) - first + 1
        fc = self._forecast(first, window)
        rows = steps - fc.start_step
        w = first - fc.first_window
        down = req.direction is Direction.DOWN
        free: dict[str, np.ndarray] = {}
        n = len(req.need_kw)
        baseline = np.zeros(n)
        rebound = full_flex = 0.0
        log: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for f in feeders:
            flex = np.full(n, (fc.flex_down_kw if down else fc.flex_up_kw)[f][w])
            held = self._reservations(f, str(req.direction), int(steps.max()) + 1)[steps].max(axis=1)
            free[f] = np.maximum(flex - held, 0.0)
            base_f = fc.baseline_kw[f][rows].mean(axis=1)
            baseline += base_f
            rebound += fc.rebound_down_kwh[f][w] if down else 0.0
            full_flex += float(flex[0])
            log[f] = (base_f, flex, held.copy())
        total_free = sum(free.values())
        if down:  # never offer to shed more than the portfolio is expected to draw
            total_free = np.minimum(total_free, np.maximum(baseline, 0.0))
        offers = make_offers(
            self.cfg.bidding, req, free_kw=total_free,
            rebound_ratio=rebound / (full_flex * window * self.dt / 60) if full_flex > 0 else 0.0,
            spot_during=self.spot[np.minimum(steps, len(self.spot) - 1)].mean(axis=1),
            spot_after=self.spot[np.minimum(steps.max() + 1 + np.arange(4), len(self.spot) - 1)].mean(),
        )
        share = {f: np.divide(free[f], total_free, out=np.zeros_like(total_free), where=total_free > 0) for f in feeders}
        base = tuple(np.round(baseline, 3).tolist())
        offered = np.sum([o.quantities_kw for o in offers], axis=0) if offers else np.zeros(n)
        for j, offer in enumerate(offers):
            self._send_bid(req, j, offer, base, {f: np.asarray(offer.quantities_kw) * share[f] for f in feeders})
        if self.log is not None:
            starts = req.delivery_start + req.interval_minutes * np.arange(n)
            for f, (base_f, flex, held) in log.items():
                mine = (offered * share[f]).tolist()
                for i, (t, b, x, h) in enumerate(zip(starts.tolist(), base_f.tolist(), flex.tolist(), held.tolist(), strict=True)):
                    self.log.append("flex_forecasts", (self.id, req.market_id, req.product_id, f, i, t,
                                                       str(req.direction), b, x, h, mine[i]))

    def _send_bid(self, req: BidRequest, j: int, offer: Offer, baseline: tuple[float, ...],
                  split: dict[str, np.ndarray]) -> None:
        bid = Bid(**self.envelope(req.market_id, req.product_id), bid_id=f"{self.id}-{req.market_id}-{j}",
                  price=offer.price, quantities_kw=offer.quantities_kw, block=offer.block, baseline_kw=baseline,
                  **offer.extra)
        ob = _OpenBid(req, bid, split)
        self._reserve(ob, {f: q for f, q in split.items()}, +1)
        self._open[bid.msg_id] = ob
        self._by_bid_id[bid.bid_id] = bid.msg_id
        self.conn.send(bid)

    def _reserve(self, ob: _OpenBid, kw: dict[str, np.ndarray], sign: int) -> None:
        steps = self._steps(ob.request)
        for f, q in kw.items():
            r = self._reservations(f, str(ob.request.direction), int(steps.max()) + 1)
            np.add.at(r, steps, sign * np.asarray(q)[:, None])

    # -- outcomes ----------------------------------------------------------------------------
    def on_rejection(self, rej: Rejection) -> None:
        self.rejections.append(rej)
        ob = self._open.pop(rej.ref_msg_id, None)
        if ob is not None:
            self._reserve(ob, ob.split, -1)

    def on_award(self, award: Award) -> None:
        ob = self._open.pop(self._by_bid_id.pop(award.bid_id, ""), None)
        if ob is None:
            return
        offered = np.asarray(ob.bid.quantities_kw)
        taken = np.divide(np.asarray(award.accepted_kw), offered, out=np.zeros_like(offered), where=offered > 0)
        accepted = {f: q * taken for f, q in ob.split.items()}
        self._reserve(ob, {f: q - accepted[f] for f, q in ob.split.items()}, -1)
        ob.split = accepted
        if not award.awarded:
            return
        if ob.request.params.get("dispatch", "on_award") == "on_award":
            self._dispatch(ob, award.delivery_start, award.interval_minutes, accepted)
        else:  # an option: kept until the buyer activates it
            self._awarded[award.bid_id] = ob

    def _dispatch(self, ob: _OpenBid, start: int, minutes: int, kw: dict[str, np.ndarray]) -> None:
        sign = -1.0 if ob.request.direction is Direction.DOWN else 1.0
        for f, q in kw.items():
            self.world.schedule(self.id, f, start, minutes, (sign * q).tolist())

    def on_activation(self, act: Activation) -> None:
        """Options (CRP) and regulating power called at short notice: dispatch what was called."""
        ob = next((o for o in self._awarded.values() if o.request.market_id == act.market_id), None)
        if ob is None:
            return
        total = sum(ob.split.values())
        mean_share = {f: float(np.sum(q) / np.sum(total)) if np.sum(total) > 0 else 0.0 for f, q in ob.split.items()}
        called = np.asarray(act.quantities_kw)
        self._dispatch(ob, act.start, act.interval_minutes, {f: called * s for f, s in mean_share.items()})

    def on_market_cancellation(self, msg: MarketCancellation) -> None:
        for msg_id, ob in list(self._open.items()):
            if ob.request.market_id == msg.market_id:
                del self._open[msg_id]
                self._reserve(ob, ob.split, -1)

    def on_settlement(self, st: SettlementStatement) -> None:
        self.revenue_dkk += sum(st.payment_dkk)
        self.penalties_dkk += sum(st.penalty_dkk)
