"""Aggregator (seller): forecasts its portfolios' flexibility and bids it, without selling it twice.

Bidding is cost-based in price steps: the first slice of the forecast
flexibility at the base price, each further slice dearer. Everything
offered is reserved until the award says what was taken, so overlapping
markets can never both buy the same kW. On an award, the accepted
re-profiling is scheduled on the households; what they actually deliver is
up to the physics.
"""

from __future__ import annotations

import numpy as np
import simpy

from ..endpoint import Connection
from ..messages import Award, Bid, BidRequest, Direction, MarketCancellation, Rejection, SettlementStatement
from ..scenario import AggregatorConfig
from .base import Agent
from .simple_portfolio import SimplePortfolio


class Aggregator(Agent):
    def __init__(self, env: simpy.Environment, conn: Connection, cfg: AggregatorConfig,
                 portfolios: dict[str, SimplePortfolio]) -> None:
        super().__init__(env, conn)
        self.cfg = cfg
        self.portfolios = portfolios
        # (location, direction) -> kW reserved per model step by bids not yet cleared or by awards
        self._reserved: dict[tuple[str, str], np.ndarray] = {}
        self._open_bids: dict[str, tuple[BidRequest, Bid]] = {}  # msg_id -> (request, bid)
        self._bid_msg: dict[str, str] = {}  # bid_id -> msg_id
        self.revenue_dkk = 0.0
        self.penalties_dkk = 0.0
        self.rejections: list[Rejection] = []

    # -- bidding ------------------------------------------------------------------------
    def on_bid_request(self, req: BidRequest) -> None:
        portfolio = self.portfolios.get(req.location)
        if portfolio is None:
            return
        n = len(req.need_kw)
        baseline, down, up = portfolio.forecast(req.delivery_start, req.interval_minutes, n)
        flex = down if req.direction is Direction.DOWN else up
        steps = portfolio.interval_steps(req.delivery_start, req.interval_minutes, n)
        reserved = self._reservations(req.location, req.direction, int(steps.max()) + 1)
        free = np.maximum(0.0, self.cfg.bidding.offer_fraction * flex - reserved[steps].max(axis=1))
        b = self.cfg.bidding
        qty = tuple(np.round(free / b.steps, 3).tolist())
        if not any(q > 0 for q in qty):
            return
        base = tuple(np.round(baseline, 3).tolist())
        for j in range(b.steps):
            price = round(b.price_dkk_per_kwh * (1 + b.step_markup) ** j, 6)
            if price > req.price_cap:
                break
            bid = Bid(**self.envelope(req.market_id, req.product_id), bid_id=f"{self.id}-{req.market_id}-{j}",
                      price=price, quantities_kw=qty, block=b.block_last_step and j == b.steps - 1 and j > 0,
                      baseline_kw=base)
            self._reserve(req, qty, +1)
            self._open_bids[bid.msg_id] = (req, bid)
            self._bid_msg[bid.bid_id] = bid.msg_id
            self.conn.send(bid)

    def _reservations(self, location: str, direction: Direction, size: int) -> np.ndarray:
        """kW reserved per model step (bids not yet cleared, and awards), grown on demand."""
        key = (location, str(direction))
        r = self._reserved.get(key)
        if r is None or len(r) < size:
            grown = np.zeros(max(size, 2 * len(r) if r is not None else size))
            if r is not None:
                grown[: len(r)] = r
            self._reserved[key] = r = grown
        return r

    def _reserve(self, req: BidRequest, qty: tuple[float, ...], sign: int) -> None:
        steps = self.portfolios[req.location].interval_steps(req.delivery_start, req.interval_minutes, len(qty))
        r = self._reservations(req.location, req.direction, int(steps.max()) + 1)
        np.add.at(r, steps, sign * np.asarray(qty)[:, None])

    def committed_kw(self, location: str, direction: Direction, minute: int) -> float:
        """kW currently reserved or awarded at a given minute (for tests and analysis)."""
        step = minute // self.portfolios[location].res
        return float(self._reservations(location, direction, step + 1)[step])

    # -- outcomes ------------------------------------------------------------------------
    def on_rejection(self, rej: Rejection) -> None:
        self.rejections.append(rej)
        entry = self._open_bids.pop(rej.ref_msg_id, None)
        if entry is not None:
            req, bid = entry
            self._reserve(req, bid.quantities_kw, -1)

    def on_award(self, award: Award) -> None:
        msg_id = self._bid_msg.get(award.bid_id)
        entry = self._open_bids.pop(msg_id, None) if msg_id else None
        if entry is None:
            return
        req, bid = entry
        portfolio = self.portfolios[req.location]
        released = tuple(o - a for o, a in zip(bid.quantities_kw, award.accepted_kw, strict=True))
        self._reserve(req, released, -1)
        if award.awarded:
            sign = 1.0 if award.direction is Direction.DOWN else -1.0
            portfolio.dispatch(award.delivery_start, award.interval_minutes, [sign * q for q in award.accepted_kw])

    def on_market_cancellation(self, msg: MarketCancellation) -> None:
        for msg_id, (req, bid) in list(self._open_bids.items()):
            if req.market_id == msg.market_id:
                del self._open_bids[msg_id]
                self._reserve(req, bid.quantities_kw, -1)

    def on_settlement(self, st: SettlementStatement) -> None:
        self.revenue_dkk += sum(st.payment_dkk)
        self.penalties_dkk += sum(st.penalty_dkk)
