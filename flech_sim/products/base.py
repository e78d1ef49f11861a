"""Product implementation base: the market life cycle shared by every product.

A product runs any number of concurrent, overlapping markets:

    requested -> open -> gate_closed -> cleared -> delivered -> settled
                   \\-> cancelled                \\-> failed (clearing error)

Each market is one SimPy process that sleeps until its next gate time. A
subclass supplies what differs between products: extra checks, the
clearing problem, awards, and settlement. Clearing itself is a pure
function call (:mod:`flech_sim.clearing`): no SimPy inside.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import simpy

from ..clearing import BidOffer, ClearingOutcome, ClearingProblem, SolverOptions, clear
from ..events import EventBus, MarketCleared, MarketEnded
from ..messages import (
    PLATFORM,
    Activation,
    Award,
    Bid,
    BidRequest,
    ClearingResult,
    MarketCancellation,
    MarketClosed,
    MarketRequest,
    Message,
    Rejected,
    RejectReason,
    SettlementStatement,
)
from ..metering import MeterService
from ..persistor import Persistor
from ..settlement import IntervalSettlement

if TYPE_CHECKING:  # products never import the scenario: scenario -> registry -> products stays acyclic
    from ..scenario import SettlementConfig

EPS = 1e-9
ACTIVATION_LEAD_MINUTES = (15, 60)
"""Default notice of an activation (options): its start at least 15 and at most 60 minutes after it is sent."""
_ACT_TOL_KW = 1e-6  # activation above what is still reserved by less than this is rounding, not an error


class MarketState(StrEnum):
    OPEN = "open"
    GATE_CLOSED = "gate_closed"
    CLEARED = "cleared"
    DELIVERED = "delivered"
    SETTLED = "settled"
    CANCELLED = "cancelled"
    FAILED = "failed"


@dataclass
class PlatformServices:
    """What the core lends a product: clock, storage, replies, directory, meters, settings."""

    env: simpy.Environment
    persistor: Persistor
    reply: Callable[[Message], None]
    new_msg_id: Callable[[], str]
    sellers_at: Callable[[str], list[str]]
    meter: MeterService
    solver: SolverOptions
    settlement: SettlementConfig
    locations: frozenset[str]
    screen: Callable[[MarketRequest, list[Bid]], list[Bid]] = lambda request, bids: bids
    """Coordination between buyers (flech_sim.coordination): what of a book may be cleared."""
    events: EventBus = field(default_factory=EventBus)
    """Products publish MarketCleared and MarketEnded here (flech_sim.events)."""


@dataclass
class Market:
    """Platform-side state of one market (internal to its product; never sent as is)."""

    request: MarketRequest
    requested_at: int
    penalty_price: float
    state: MarketState = MarketState.OPEN
    bids: list[Bid] = field(default_factory=list)
    bid_ids: set[str] = field(default_factory=set)
    book: list[Bid] = field(default_factory=list)
    """The bids that go into clearing: ``bids`` after the TSO/DSO coordination screen."""
    baselines: dict[str, tuple[float, ...]] = field(default_factory=dict)
    outcome: ClearingOutcome | None = None
    awards: list[Award] = field(default_factory=list)
    cleared_at: int | None = None
    settled_at: int | None = None
    note: str = ""
    n_bids: int = 0
    procured_kwh: float = 0.0  # accepted energy (set when cleared)
    unmet_kwh: float = 0.0
    cost_dkk: float = 0.0  # what the awards pay
    terms: dict[str, Any] = field(default_factory=dict)
    """The product's terms of this market: the request's params checked, defaults filled in."""
    activated: dict[str, list[float]] = field(default_factory=dict)
    """Options: bid ID -> kW activated per interval so far (never above the bid's award)."""
    activation_ids: set[str] = field(default_factory=set)

    @property
    def market_id(self) -> str:
        return self.request.market_id

    @property
    def hours(self) -> float:
        return self.request.interval_minutes / 60.0

    def interval_start(self, i: int) -> int:
        return self.request.delivery_start + i * self.request.interval_minutes

    @property
    def bidders(self) -> list[str]:
        return sorted({b.sender for b in self.bids})


class Product:
    """Base class of product implementations; subclasses override the hooks below."""

    pricing: str = "pay_as_bid"  # or "pay_as_clear"

    def __init__(self, product_id: str, services: PlatformServices) -> None:
        self.product_id = product_id
        self.s = services
        self.markets: dict[str, Market] = {}
        self.opened: list[Market] = []  # in opening order, so observers can read only what is new

    # == hooks for subclasses ==========================================================
    def check_request(self, req: MarketRequest) -> None:
        """Product-specific checks of a market request; raise Rejected."""

    def check_bid(self, market: Market, bid: Bid) -> None:
        """Product-specific checks of a bid; raise Rejected."""

    def build_problem(self, market: Market) -> ClearingProblem:
        return ClearingProblem(
            market_id=market.market_id,
            need=tuple(market.request.need_kw),
            price_cap=market.request.price_cap,
            interval_hours=market.hours,
            bids=tuple(
                BidOffer(b.bid_id, b.sender, b.price, tuple(b.quantities_kw), b.block, b.sent_at) for b in market.book
            ),
        )

    def run_clearing(self, problem: ClearingProblem) -> ClearingOutcome:
        return clear(problem, self.s.solver)

    def settle(self, market: Market) -> list[SettlementStatement]:
        """Settlement statements for a delivered market (meter data available or waited for)."""
        raise NotImplementedError(f"product {self.product_id} has no settlement")

    def bid_request_params(self, req: MarketRequest) -> dict[str, str | float | int | bool]:
        """Product terms sellers need to bid, added to the bid request's params.

        ``dispatch``: 'on_award' (firm products: deliver what is awarded) or
        'on_activation' (options: deliver only what the buyer later activates).
        """
        return {"dispatch": "on_award"}

    def meter_points(self, market: Market) -> list[str]:
        """Metering points whose data settlement needs."""
        return []

    def meter_window(self, market: Market) -> tuple[int, int]:
        """[start, end) of the readings settlement waits for (a baseline may need more than the window)."""
        return market.request.delivery_start, market.request.delivery_end

    def market_terms(self, req: MarketRequest) -> dict[str, Any]:
        """The request's params checked and completed with defaults (stored as ``Market.terms``); raise Rejected."""
        return {}

    # == activations (options) =========================================================
    accepts_activations: bool = False
    """Option products set this: the market's buyer then calls reserved flexibility with Activation messages."""

    def activation_lead_minutes(self, market: Market) -> tuple[int, int]:
        """(min, max) minutes between sending an activation and its start."""
        lo, hi = ACTIVATION_LEAD_MINUTES
        return (int(market.terms.get("activation_min_lead_minutes", lo)),
                int(market.terms.get("activation_max_lead_minutes", hi)))

    # == message handling ==============================================================
    def handle(self, msg: Message) -> str:
        if isinstance(msg, MarketRequest):
            return self._open(msg)
        if isinstance(msg, Bid):
            return self._accept_bid(msg)
        if isinstance(msg, MarketCancellation):
            return self._cancel(msg)
        if isinstance(msg, Activation):
            return self.activate(msg)
        raise Rejected(RejectReason.MALFORMED, f"product {self.product_id} does not accept {msg.kind!r} messages")

    def activate(self, msg: Activation) -> str:
        """Buyer -> platform -> seller: check an activation against what is reserved, record it, forward it.

        Checks, in order (reason code): the market exists (unknown_market); the sender is the
        market's buyer (unauthorised); the market is cleared and not yet delivered (invalid_times
        before clearing, gate_closed after delivery); a new activation ID (duplicate); the
        market's interval length (out_of_range); it starts on an interval of the window and ends
        within it (invalid_times); quantities finite, >= 0, not all zero (out_of_range); notice
        ``start - now`` within :meth:`activation_lead_minutes` (invalid_times: 'late' or 'too
        early'); the named seller holds an award (not_eligible); and per interval no more than
        is still reserved -- awarded minus already activated -- by that seller, or by all sellers
        when ``seller`` is "" (out_of_range). Nothing is recorded unless every check passes.

        The activated kW are drawn from the awards cheapest activation price first (then earlier
        bid, then bid ID); each seller called gets one Activation (``seller`` set, its share per
        interval), and every (seller, bid, interval) drawn is a row of the ``activations`` table.
        """
        if not self.accepts_activations:
            raise Rejected(RejectReason.MALFORMED, f"product {self.product_id} has no activations")
        market = self.markets.get(msg.market_id)
        if market is None:
            raise Rejected(RejectReason.UNKNOWN_MARKET, f"no {self.product_id} market {msg.market_id!r}")
        req = market.request
        if msg.sender != req.sender:
            raise Rejected(RejectReason.UNAUTHORISED, f"only the market's buyer {req.sender} may activate in it")
        if market.state in (MarketState.OPEN, MarketState.GATE_CLOSED):
            raise Rejected(RejectReason.INVALID_TIMES, f"market {market.market_id} is not cleared yet")
        if market.state is not MarketState.CLEARED:
            raise Rejected(RejectReason.GATE_CLOSED,
                           f"market {market.market_id} is {market.state}: nothing to activate")
        if not msg.activation_id or msg.activation_id in market.activation_ids:
            raise Rejected(RejectReason.DUPLICATE, f"activation ID {msg.activation_id!r} is empty or already used")
        step = req.interval_minutes
        if msg.interval_minutes != step:
            raise Rejected(RejectReason.OUT_OF_RANGE,
                           f"interval_minutes must be the market's {step}, got {msg.interval_minutes}")
        offset = msg.start - req.delivery_start
        if (offset < 0 or offset % step or not msg.quantities_kw
                or msg.start + step * len(msg.quantities_kw) > req.delivery_end):
            raise Rejected(RejectReason.INVALID_TIMES,
                           f"an activation must start on an interval of the window [{req.delivery_start}, "
                           f"{req.delivery_end}) every {step} min and end within it")
        if not all(_finite_nonneg(q) for q in msg.quantities_kw) or not any(q > 0 for q in msg.quantities_kw):
            raise Rejected(RejectReason.OUT_OF_RANGE, "quantities_kw must be finite, >= 0, and not all zero")
        lo, hi = self.activation_lead_minutes(market)
        lead = msg.start - self.now
        if lead < lo:
            raise Rejected(RejectReason.INVALID_TIMES,
                           f"late: sent at minute {self.now} for minute {msg.start} ({lead} min notice); "
                           f"at least {lo} min needed")
        if lead > hi:
            raise Rejected(RejectReason.INVALID_TIMES,
                           f"too early: sent at minute {self.now} for minute {msg.start} ({lead} min notice); "
                           f"at most {hi} min allowed")
        plan = self._draw_activation(market, msg.seller, offset // step, msg.quantities_kw)
        market.activation_ids.add(msg.activation_id)
        by_seller: dict[str, list[float]] = {}
        first = offset // step
        for (seller, bid_id), kw in sorted(plan.items()):
            done = market.activated.setdefault(bid_id, [0.0] * req.n_intervals)
            share = by_seller.setdefault(seller, [0.0] * len(kw))
            for j, q in enumerate(kw):
                if q <= 0:
                    continue
                done[first + j] += q
                share[j] += q
                self.s.persistor.append("activations", (
                    msg.msg_id, msg.activation_id, market.market_id, self.product_id, seller, bid_id,
                    market.interval_start(first + j), q,
                ))
        for seller, kw in sorted(by_seller.items()):
            self._reply(market, Activation, seller, activation_id=msg.activation_id, start=msg.start,
                        interval_minutes=step, quantities_kw=tuple(kw), seller=seller)
        return msg.activation_id

    def _draw_activation(self, market: Market, seller: str, first: int,
                         quantities: tuple[float, ...]) -> dict[tuple[str, str], list[float]]:
        """(seller, bid ID) -> kW drawn per activated interval; raise Rejected if the reserve is short."""
        awards = [a for a in market.awards if a.awarded and (not seller or a.recipient == seller)]
        if seller and not awards:
            raise Rejected(RejectReason.NOT_ELIGIBLE, f"{seller} holds no reservation in market {market.market_id}")
        sent_at = {b.bid_id: b.sent_at for b in market.bids}
        plan: dict[tuple[str, str], list[float]] = {}
        for j, want in enumerate(quantities):
            k = first + j
            left = want
            ranked = sorted(awards, key=lambda a: (a.prices[k], sent_at.get(a.bid_id, 0), a.bid_id))
            free_total = 0.0
            for a in ranked:
                free = max(0.0, a.accepted_kw[k] - market.activated.get(a.bid_id, [0.0] * len(a.accepted_kw))[k])
                free_total += free
                take = min(free, left)
                if take > 0:
                    plan.setdefault((a.recipient, a.bid_id), [0.0] * len(quantities))[j] = take
                    left -= take
            if left > _ACT_TOL_KW:
                who = seller or "the market's sellers"
                raise Rejected(RejectReason.OUT_OF_RANGE,
                               f"activation of {want:g} kW at minute {market.interval_start(k)} exceeds what {who} "
                               f"still hold(s) in reserve ({free_total:g} kW)")
        return plan

    @property
    def now(self) -> int:
        return int(self.s.env.now)

    def _open(self, req: MarketRequest) -> str:
        if not req.market_id:
            raise Rejected(RejectReason.MALFORMED, "market_id must not be empty")
        if req.market_id in self.markets:
            raise Rejected(RejectReason.DUPLICATE, f"market {req.market_id!r} already exists")
        if req.gate_close <= self.now:
            raise Rejected(RejectReason.INVALID_TIMES, f"gate_close {req.gate_close} is not after now ({self.now})")
        if req.delivery_start < req.gate_close:
            raise Rejected(RejectReason.INVALID_TIMES, "delivery_start must not be before gate_close")
        if req.interval_minutes <= 0 or not req.need_kw:
            raise Rejected(RejectReason.OUT_OF_RANGE, "need interval_minutes > 0 and at least one interval")
        if not all(_finite_nonneg(x) for x in req.need_kw):
            raise Rejected(RejectReason.OUT_OF_RANGE, "need_kw values must be finite and >= 0")
        if not (_finite_nonneg(req.price_cap) and req.price_cap > 0):
            raise Rejected(RejectReason.OUT_OF_RANGE, f"price_cap must be a positive number, got {req.price_cap!r}")
        if req.penalty_price is not None and not _finite_nonneg(req.penalty_price):
            raise Rejected(RejectReason.OUT_OF_RANGE, "penalty_price must be finite and >= 0")
        if req.location not in self.s.locations and req.location != "*":
            raise Rejected(RejectReason.OUT_OF_RANGE, f"unknown location {req.location!r}")
        self.check_request(req)
        terms = self.market_terms(req)
        penalty = req.penalty_price if req.penalty_price is not None else self.s.settlement.penalty_factor * req.price_cap
        market = Market(request=req, requested_at=self.now, penalty_price=penalty, terms=terms)
        self.markets[req.market_id] = market
        self.opened.append(market)
        for seller in self.s.sellers_at(req.location):
            self._reply(market, BidRequest, seller, buyer=req.sender, location=req.location, direction=req.direction,
                        gate_close=req.gate_close, delivery_start=req.delivery_start,
                        interval_minutes=req.interval_minutes, need_kw=req.need_kw, price_cap=req.price_cap,
                        params={**self.bid_request_params(req), **req.params}, penalty_price=penalty)
        self.s.env.process(self._life_cycle(market))
        return req.market_id

    def _accept_bid(self, bid: Bid) -> str:
        now = self.now
        market = self.markets.get(bid.market_id)
        if market is None:
            raise Rejected(RejectReason.UNKNOWN_MARKET, f"no {self.product_id} market {bid.market_id!r}")
        if market.state is MarketState.CANCELLED:
            raise Rejected(RejectReason.GATE_CLOSED, f"market {bid.market_id} was cancelled")
        if now >= market.request.gate_close or market.state is not MarketState.OPEN:
            raise Rejected(
                RejectReason.GATE_CLOSED,
                f"bid arrived at minute {now}; the gate closed at minute {market.request.gate_close}",
            )
        if bid.sender not in self.s.sellers_at(market.request.location):
            raise Rejected(RejectReason.NOT_ELIGIBLE, f"{bid.sender} has no portfolio at {market.request.location}")
        if not bid.bid_id or bid.bid_id in market.bid_ids:
            raise Rejected(RejectReason.DUPLICATE, f"bid ID {bid.bid_id!r} is empty or already used in this market")
        n = market.request.n_intervals
        if len(bid.quantities_kw) != n:
            raise Rejected(RejectReason.OUT_OF_RANGE, f"quantities_kw has {len(bid.quantities_kw)} values; the market has {n} intervals")
        if not _nonneg_numbers(bid.quantities_kw) or not max(bid.quantities_kw) > 0:
            raise Rejected(RejectReason.OUT_OF_RANGE, "quantities_kw must be finite, >= 0, and not all zero")
        if not _finite_nonneg(bid.price) or bid.price > market.request.price_cap:
            raise Rejected(
                RejectReason.OUT_OF_RANGE,
                f"price {bid.price!r} DKK/kWh is outside [0, {market.request.price_cap}] (the buyer's cap)",
            )
        self.check_bid(market, bid)
        market.bids.append(bid)
        market.bid_ids.add(bid.bid_id)
        market.n_bids += 1
        for i, q in enumerate(bid.quantities_kw):
            base = bid.baseline_kw[i] if bid.baseline_kw else None
            self.s.persistor.append(
                "bids",
                (bid.bid_id, bid.msg_id, bid.market_id, self.product_id, bid.sender, i, market.interval_start(i),
                 float(q), float(bid.price), bool(bid.block), base, now, bid.availability_price),
            )
        return bid.bid_id

    def _cancel(self, msg: MarketCancellation) -> str:
        market = self.markets.get(msg.market_id)
        if market is None:
            raise Rejected(RejectReason.UNKNOWN_MARKET, f"no {self.product_id} market {msg.market_id!r}")
        if msg.sender != market.request.sender:
            raise Rejected(RejectReason.UNAUTHORISED, f"only the market's buyer {market.request.sender} may cancel it")
        if market.state is not MarketState.OPEN or self.now >= market.request.gate_close:
            raise Rejected(RejectReason.GATE_CLOSED, "a market can only be cancelled before its gate closes")
        market.state = MarketState.CANCELLED
        market.note = msg.reason or "cancelled by buyer"
        for seller in sorted(set(self.s.sellers_at(market.request.location)) | set(market.bidders)):
            self._reply(market, MarketCancellation, seller, reason=market.note)
        self.s.events.publish(MarketEnded(self.product_id, market.market_id, str(market.state)))
        return market.market_id

    # == life cycle ==================================================================
    def _life_cycle(self, market: Market) -> Generator[simpy.Event, Any, None]:
        env = self.s.env
        req = market.request
        yield env.timeout(req.gate_close - self.now)
        if market.state is MarketState.CANCELLED:
            return
        market.state = MarketState.GATE_CLOSED
        for party in [req.sender, *market.bidders]:
            self._reply(market, MarketClosed, party, n_bids=len(market.bids))
        self._clear(market)
        if market.state is MarketState.FAILED:
            self.s.events.publish(MarketEnded(self.product_id, market.market_id, str(market.state)))
            return
        yield env.timeout(max(0, req.delivery_end - self.now))
        market.state = MarketState.DELIVERED
        yield from self._await_meter_data(market)
        for st in self.settle(market):
            self._send_statement(market, st)
        market.state = MarketState.SETTLED
        market.settled_at = self.now
        self.s.events.publish(MarketEnded(self.product_id, market.market_id, str(market.state)))
        self.retire(market)

    def retire(self, market: Market) -> None:
        """Forget a settled market's book, awards and solver outcome: every row is persisted,
        and a year of 15-minute markets must not keep millions of messages in memory."""
        market.bids, market.book, market.awards = [], [], []
        market.bid_ids, market.outcome = set(), None

    def _await_meter_data(self, market: Market) -> Generator[simpy.Event, Any, None]:
        env = self.s.env
        req = market.request
        deadline = req.delivery_end + int(self.s.settlement.wait_for_meter_hours * 60)
        points = self.meter_points(market)
        start, end = self.meter_window(market)
        while not all(self.s.meter.covers(p, start, end) for p in points):
            if self.now >= deadline:
                market.note = "settled with missing meter data (gap rule)"
                return
            yield env.any_of([self.s.meter.updated, env.timeout(deadline - self.now)])

    def _clear(self, market: Market) -> None:
        market.book = self.s.screen(market.request, list(market.bids))
        problem = self.build_problem(market)
        outcome = self.run_clearing(problem)
        market.outcome = outcome
        market.cleared_at = self.now
        req = market.request
        h = market.hours
        accepted_total = [sum(col) for col in zip(*outcome.accepted, strict=True)] if outcome.accepted else [0.0] * req.n_intervals
        awards = self.make_awards(market, outcome) if outcome.is_ok else []
        cost = sum(a.payment_dkk for a in awards)
        result = self._reply(
            market, ClearingResult, req.sender, status=str(outcome.status), objective_dkk=outcome.objective,
            cost_dkk=cost, accepted_kw=tuple(accepted_total), unmet_kw=tuple(outcome.unmet),
            clearing_price=tuple(outcome.marginal_price), n_bids=len(market.bids),
            n_accepted=sum(1 for a in awards if a.awarded), detail=outcome.message,
        )
        p = self.s.persistor
        p.append("clearings", (
            market.market_id, self.product_id, result.msg_id, str(outcome.status), str(outcome.method),
            outcome.objective, cost, outcome.mip_gap, len(market.bids), sum(1 for a in awards if a.awarded),
            sum(req.need_kw) * h, sum(accepted_total) * h, sum(outcome.unmet) * h, self.now, outcome.message,
        ))
        for i in range(req.n_intervals):
            p.append("clearing_intervals", (
                market.market_id, self.product_id, i, market.interval_start(i), float(req.need_kw[i]),
                float(accepted_total[i]), float(outcome.unmet[i]) if outcome.unmet else float(req.need_kw[i]),
                outcome.marginal_price[i] if outcome.marginal_price else None,
            ))
        p.append("solver_timings", (market.market_id, self.product_id, str(outcome.method), outcome.solve_time_s))
        if not outcome.is_ok:
            market.state = MarketState.FAILED
            market.note = f"clearing {outcome.status}: {outcome.message}"
            return
        market.state = MarketState.CLEARED
        market.procured_kwh = sum(accepted_total) * h
        market.unmet_kwh = sum(outcome.unmet) * h
        market.cost_dkk = cost
        for award in awards:
            self._send_award(market, award)
        self.s.events.publish(MarketCleared(
            product_id=self.product_id, market_id=market.market_id, buyer=req.sender, location=req.location,
            direction=req.direction, delivery_start=req.delivery_start, interval_minutes=req.interval_minutes,
            awarded_kw=tuple(sum(a.accepted_kw[i] for a in awards) for i in range(req.n_intervals)),
        ))

    def make_awards(self, market: Market, outcome: ClearingOutcome) -> list[Award]:
        """One award per bid (zeros for a non-award), priced pay-as-bid or pay-as-clear."""
        req = market.request
        h = market.hours
        accepted = dict(zip(outcome.bid_ids, outcome.accepted, strict=True))
        awards = []
        for bid in market.bids:
            q = tuple(_clean(x) for x in accepted.get(bid.bid_id, (0.0,) * req.n_intervals))  # screened out: none
            if self.pricing == "pay_as_clear":
                prices = tuple(float(mp) if mp is not None else float(bid.price) for mp in outcome.marginal_price)
            else:
                prices = tuple(float(bid.price) for _ in q)
            payment = sum(qi * pi * h for qi, pi in zip(q, prices, strict=True))
            awards.append(Award(
                msg_id=self.s.new_msg_id(), sender=PLATFORM, recipient=bid.sender, market_id=market.market_id,
                product_id=self.product_id, sent_at=self.now, bid_id=bid.bid_id, accepted_kw=q, prices=prices,
                payment_dkk=payment, delivery_start=req.delivery_start, interval_minutes=req.interval_minutes,
                direction=req.direction,
            ))
        return awards

    def _send_award(self, market: Market, award: Award) -> None:
        market.awards.append(award)
        h = market.hours
        for i, (q, price) in enumerate(zip(award.accepted_kw, award.prices, strict=True)):
            avail = award.availability_dkk[i] if award.availability_dkk else None
            self.s.persistor.append("awards", (
                award.msg_id, award.bid_id, market.market_id, self.product_id, award.recipient, i,
                market.interval_start(i), q, price, q * price * h if avail is None else avail, avail,
                award.cap_kw[i] if award.cap_kw else None,
            ))
        self.s.reply(award)

    def _send_statement(self, market: Market, st: SettlementStatement) -> None:
        p = self.s.persistor
        for i, start in enumerate(st.interval_start):
            p.append("settlements", (
                st.msg_id, market.market_id, self.product_id, st.recipient, st.party_role, st.counterparty,
                i, start, st.ordered_kwh[i], st.delivered_kwh[i], st.payment_dkk[i], st.penalty_dkk[i],
                st.net_dkk[i], bool(st.meter_gap[i]) if st.meter_gap else False,
            ))
        self.s.reply(st)

    def _reply(self, market: Market, cls: type[Message], recipient: str, **fields: Any) -> Any:
        msg = cls(msg_id=self.s.new_msg_id(), sender=PLATFORM, recipient=recipient, market_id=market.market_id,
                  product_id=self.product_id, sent_at=self.now, **fields)
        self.s.reply(msg)
        return msg

    def new_award(self, market: Market, bid: Bid, accepted_kw: tuple[float, ...], prices: tuple[float, ...],
                  payment_dkk: float | None = None, **extra: Any) -> Award:
        """An award to one bid (``payment_dkk`` defaults to accepted energy x prices)."""
        req = market.request
        if payment_dkk is None:
            payment_dkk = sum(q * p * market.hours for q, p in zip(accepted_kw, prices, strict=True))
        return Award(
            msg_id=self.s.new_msg_id(), sender=PLATFORM, recipient=bid.sender, market_id=market.market_id,
            product_id=self.product_id, sent_at=self.now, bid_id=bid.bid_id, accepted_kw=accepted_kw, prices=prices,
            payment_dkk=payment_dkk, delivery_start=req.delivery_start, interval_minutes=req.interval_minutes,
            direction=req.direction, **extra,
        )

    def issue_statements(self, market: Market, results: Mapping[str, IntervalSettlement]) -> list[SettlementStatement]:
        """A statement per seller (ID order) and one to the buyer, whose net is minus the sum of the sellers' nets."""
        req = market.request
        n = req.n_intervals
        starts = tuple(market.interval_start(i) for i in range(n))
        sellers = sorted(results)
        out = []
        for seller in sellers:
            r = results[seller]
            out.append(self.statement(
                market, seller, "seller", req.sender, interval_start=starts, ordered_kwh=r.ordered_kwh,
                delivered_kwh=r.delivered_kwh, payment_dkk=r.payment_dkk, penalty_dkk=r.penalty_dkk,
                net_dkk=r.net_dkk, meter_gap=r.gap,
            ))
        if sellers:
            def total(field_: str) -> tuple[float, ...]:
                return tuple(sum(getattr(results[s], field_)[i] for s in sellers) for i in range(n))

            out.append(self.statement(
                market, req.sender, "buyer", ",".join(sellers), interval_start=starts,
                ordered_kwh=total("ordered_kwh"), delivered_kwh=total("delivered_kwh"),
                payment_dkk=total("payment_dkk"), penalty_dkk=total("penalty_dkk"),
                net_dkk=tuple(-x for x in total("net_dkk")),
                meter_gap=tuple(any(results[s].gap[i] for s in sellers) for i in range(n)),
            ))
        return out

    def statement(self, market: Market, recipient: str, role: str, counterparty: str, **fields: Any) -> SettlementStatement:
        """Build a settlement statement message addressed from the platform."""
        return SettlementStatement(
            msg_id=self.s.new_msg_id(), sender=PLATFORM, recipient=recipient, market_id=market.market_id,
            product_id=self.product_id, sent_at=self.now, party_role=role, counterparty=counterparty, **fields,
        )

    # == end of run ====================================================================
    def finalize(self) -> None:
        """Write every market's terms and final state (open ones included)."""
        for market in self.markets.values():
            req = market.request
            self.s.persistor.append("markets", (
                market.market_id, self.product_id, req.sender, req.location, str(req.direction), str(market.state),
                market.requested_at, req.gate_close, req.delivery_start, req.delivery_end, req.interval_minutes,
                req.n_intervals, sum(req.need_kw) * market.hours, req.price_cap, market.penalty_price,
                market.n_bids, req.msg_id, market.cleared_at, market.settled_at, market.note,
            ))


_NUMBER = (int, float)


def _finite_nonneg(x: object) -> bool:
    return isinstance(x, _NUMBER) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def _nonneg_numbers(xs: tuple[object, ...]) -> bool:
    """All finite numbers >= 0 (sum and min run in C; x - x is NaN for NaN and infinity)."""
    try:
        total = sum(xs)  # type: ignore[arg-type]
        return bool(xs) and total - total == 0 and min(xs) >= 0  # type: ignore[type-var, operator]
    except TypeError:
        return False


def _clean(x: float) -> float:
    """Drop solver dust so that a non-award is exactly zero."""
    return 0.0 if abs(x) < 1e-7 else float(x)


def iter_awards_of(market: Market, seller: str) -> Iterable[Award]:
    return (a for a in market.awards if a.recipient == seller)
