"""Aggregator (seller): forecasts its portfolios' flexibility and bids it, without selling it twice.

Bidding is cost-based in price steps: the first slice of the forecast
flexibility at the base price, each further slice dearer. Everything
offered is reserved until the award says what was taken, so overlapping
markets can never both buy the same kW. On an award, the accepted
re-profiling is scheduled on the households; what they actually deliver is
up to the physics.
"""

from __future__ import annotations

from collections import defaultdict

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
        # (location, direction) -> step -> kW reserved by bids not yet cleared or by awards
        self._reserved: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
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
        key = (req.location, str(req.direction))
        free = [max(0.0, self.cfg.bidding.offer_fraction * flex[i]
                    - self._reserved_max(key, portfolio, req.delivery_start + i * req.interval_minutes, req.interval_minutes))
                for i in range(n)]
        b = self.cfg.bidding
        for j in range(b.steps):
            price = round(b.price_dkk_per_kwh * (1 + b.step_markup) ** j, 6)
            if price > req.price_cap:
                break
            qty = tuple(round(f / b.steps, 3) for f in free)
            if not any(q > 0 for q in qty):
                break
            bid = Bid(**self.envelope(req.market_id, req.product_id), bid_id=f"{self.id}-{req.market_id}-{j}",
                      price=price, quantities_kw=qty, block=b.block_last_step and j == b.steps - 1 and j > 0,
                      baseline_kw=tuple(round(float(x), 3) for x in baseline))
            self._reserve(key, portfolio, req, qty, +1)
            self._open_bids[bid.msg_id] = (req, bid)
            self._bid_msg[bid.bid_id] = bid.msg_id
            self.conn.send(bid)

    def _reserved_max(self, key: tuple[str, str], p: SimplePortfolio, start: int, minutes: int) -> float:
        r = self._reserved[key]
        return max((r[int(s)] for s in p.steps(start, minutes)), default=0.0)

    def _reserve(self, key: tuple[str, str], p: SimplePortfolio, req: BidRequest, qty: tuple[float, ...], sign: int) -> None:
        r = self._reserved[key]
        for i, q in enumerate(qty):
            for s in p.steps(req.delivery_start + i * req.interval_minutes, req.interval_minutes):
                r[int(s)] += sign * q

    def committed_kw(self, location: str, direction: Direction, minute: int) -> float:
        """kW currently reserved or awarded at a given minute (for tests and analysis)."""
        p = self.portfolios[location]
        return self._reserved[(location, str(direction))][minute // p.res]

    # -- outcomes ------------------------------------------------------------------------
    def on_rejection(self, rej: Rejection) -> None:
        self.rejections.append(rej)
        entry = self._open_bids.pop(rej.ref_msg_id, None)
        if entry is not None:
            req, bid = entry
            self._reserve((req.location, str(req.direction)), self.portfolios[req.location], req, bid.quantities_kw, -1)

    def on_award(self, award: Award) -> None:
        msg_id = self._bid_msg.get(award.bid_id)
        entry = self._open_bids.pop(msg_id, None) if msg_id else None
        if entry is None:
            return
        req, bid = entry
        portfolio = self.portfolios[req.location]
        released = tuple(o - a for o, a in zip(bid.quantities_kw, award.accepted_kw, strict=True))
        self._reserve((req.location, str(req.direction)), portfolio, req, released, -1)
        if award.awarded:
            sign = 1.0 if award.direction is Direction.DOWN else -1.0
            portfolio.dispatch(award.delivery_start, award.interval_minutes, [sign * q for q in award.accepted_kw])

    def on_market_cancellation(self, msg: MarketCancellation) -> None:
        for msg_id, (req, bid) in list(self._open_bids.items()):
            if req.market_id == msg.market_id:
                del self._open_bids[msg_id]
                self._reserve((req.location, str(req.direction)), self.portfolios[req.location], req, bid.quantities_kw, -1)

    def on_settlement(self, st: SettlementStatement) -> None:
        self.revenue_dkk += sum(st.payment_dkk)
        self.penalties_dkk += sum(st.penalty_dkk)
