"""Product implementation base: what every product does with messages, glued from small pieces.

A product runs any number of concurrent markets. The pieces:

* :mod:`.validation` -- the checks every request and bid passes (pure);
* :mod:`.attrs` -- a product's own bid and award fields, declared and checked (pure);
* :mod:`.book` -- clearing a book into awards and prices (pure; also the public
  ``clear_market`` of each product);
* :mod:`.activation` -- options: checking and splitting a buyer's call (pure);
* :mod:`.lifecycle` -- the SimPy process of one market;
* :mod:`.records` -- the table rows, by column name.

A subclass supplies only its rules: terms (``read_terms``), bid checks
(``check_bid``), the clearing problem (``clearing_problem``), a pricing rule of
:mod:`flech_sim.clearing.pricing` (``pricing`` / ``price``), its award fields
(``award_attrs``) and ``settle``. The class-level hooks are pure so that
:func:`flech_sim.products.book.clear_book` can run them without a platform.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from ..clearing import ClearingOutcome, ClearingProblem, SolverOptions, clear
from ..clearing.pricing import PAY_AS_BID, Pricing, price_by_rule
from ..events import MarketCleared, MarketEnded
from ..messages import (
    PLATFORM,
    Activation,
    AttrValue,
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
from ..schema import Table, register_table
from ..settlement import IntervalSettlement
from . import records, validation
from .activation import ACTIVATION_LEAD_MINUTES, check_activation, draw_activation
from .attrs import AttrSpec, attrs_pass, check_attrs
from .book import AwardTerms, MarketClearing, clear_book, offers
from .lifecycle import life_cycle
from .market import Market, MarketState, PlatformServices

_OPEN = MarketState.OPEN  # an enum member read from its class costs 0.1 us; the hot path reads it once a bid

__all__ = ["ACTIVATION_LEAD_MINUTES", "Market", "MarketState", "PlatformServices", "Product", "iter_awards_of"]


class Product:
    """Base class of product implementations; subclasses override the hooks below."""

    pricing: ClassVar[str] = PAY_AS_BID
    """The declared pricing rule (a name in :data:`flech_sim.clearing.pricing.PRICING_RULES`)."""
    BID_ATTRS: ClassVar[tuple[AttrSpec, ...]] = ()
    """Product-specific bid fields allowed in ``Bid.attrs`` (anything else is refused)."""
    AWARD_ATTRS: ClassVar[tuple[AttrSpec, ...]] = ()
    """Product-specific award fields the product puts in ``Award.attrs``."""
    TABLES: ClassVar[tuple[Table, ...]] = ()
    """The product's own output tables (registered with :func:`flech_sim.schema.register_table`)."""
    accepts_activations: ClassVar[bool] = False
    """Option products set this: the market's buyer then calls reserved flexibility with Activation messages."""
    SETTLEMENT_RULES: ClassVar[tuple[str, ...]] = ()
    """Settlement rules (:data:`flech_sim.settlement.RULES`) the product can settle by, its default first;
    the scenario's ``settlement.rules`` picks one per product ID. Empty: the product's own unnamed rule."""

    def __init__(self, product_id: str, services: PlatformServices) -> None:
        self.product_id = product_id
        self.s = services
        self.markets: dict[str, Market] = {}
        self.opened: list[Market] = []  # in opening order, so observers can read only what is new
        self.settlement_rule = self._settlement_rule()
        self._imbalance: dict[str, tuple[float, ...]] = {}  # statement msg ID -> its imbalance amounts (table only)
        self._ensure_tables()

    def _settlement_rule(self) -> str:
        rules = getattr(self.s.settlement, "rules", None) or {}
        rule = rules.get(self.product_id, self.SETTLEMENT_RULES[0] if self.SETTLEMENT_RULES else "")
        if rule and rule not in self.SETTLEMENT_RULES:
            raise ValueError(
                f"settlement.rules.{self.product_id}: {self.product_id} cannot settle by {rule!r}; "
                f"its rules are {list(self.SETTLEMENT_RULES)}"
            )
        return rule

    def penalty_price(self, req: MarketRequest) -> float:
        """DKK per kWh of shortfall: the request's, else settlement.penalty_factor x its price cap; under the
        imbalance rule only a penalty the request names (the deviation is settled at the imbalance price)."""
        if req.penalty_price is not None:
            return req.penalty_price
        return 0.0 if self.settlement_rule == "imbalance" else self.s.settlement.penalty_factor * req.price_cap

    def shortfall_terms(self) -> dict[str, str | float]:
        """What sellers need to price a shortfall, sent in every bid request's params: the settlement rule
        and, under 'imbalance', the expected imbalance premium (DKK per kWh of deviation)."""
        if not self.settlement_rule:
            return {}
        out: dict[str, str | float] = {"settlement": self.settlement_rule}
        if self.settlement_rule == "imbalance":
            prices = self.s.imbalance_prices
            out["imbalance_premium"] = prices.expected_premium if prices is not None else 0.0
        return out

    def _ensure_tables(self) -> None:
        for t in self.TABLES:
            register_table(t)
            add = getattr(self.s.persistor, "add_table", None)
            if add is not None:
                add(t.name)

    # == pure rules (class level: used by book.clear_book without a platform) ============
    @classmethod
    def read_terms(cls, req: MarketRequest) -> dict[str, Any]:
        """The request's params checked and completed with defaults (``Market.terms``); raise Rejected."""
        return {}

    @classmethod
    def clearing_problem(
        cls, req: MarketRequest, terms: Mapping[str, Any], bids: Sequence[Bid], book: Sequence[Bid]
    ) -> ClearingProblem:
        """The least-cost problem of ``book``; ties rank by arrival position in ``bids``."""
        return ClearingProblem(
            market_id=req.market_id,
            need=tuple(req.need_kw),
            price_cap=req.price_cap,
            interval_hours=req.interval_minutes / 60.0,
            bids=offers(bids, book),
        )

    @classmethod
    def solver_options(cls, terms: Mapping[str, Any], options: SolverOptions) -> SolverOptions:
        return options

    @classmethod
    def solve(
        cls, problem: ClearingProblem, terms: Mapping[str, Any], options: SolverOptions
    ) -> tuple[ClearingProblem, ClearingOutcome]:
        """(problem actually cleared, outcome); a product may clear its own way (the seed allows it)."""
        return problem, clear(problem, options)

    @classmethod
    def pricing_rule(cls, terms: Mapping[str, Any]) -> str:
        return cls.pricing

    @classmethod
    def price(
        cls,
        problem: ClearingProblem,
        outcome: ClearingOutcome,
        terms: Mapping[str, Any],
        book: Sequence[Bid],
        options: SolverOptions,
    ) -> Pricing:
        """Award prices and payments, always by a rule of :mod:`flech_sim.clearing.pricing`."""
        return price_by_rule(cls.pricing_rule(terms), problem, outcome, cls.solver_options(terms, options))

    @classmethod
    def award_attrs(
        cls,
        req: MarketRequest,
        terms: Mapping[str, Any],
        bids: Sequence[Bid],
        accepted: Mapping[str, tuple[float, ...]],
    ) -> dict[str, dict[str, AttrValue]]:
        """Bid ID -> the product's award fields (declared in AWARD_ATTRS)."""
        return {}

    @classmethod
    def clear_market(
        cls,
        request: MarketRequest,
        bids: Sequence[Bid],
        options: SolverOptions | None = None,
        *,
        book: Sequence[Bid] | None = None,
    ) -> MarketClearing:
        """Bids in, result out: see :func:`flech_sim.products.book.clear_book`."""
        return clear_book(cls, request, bids, options, book=book)

    # == platform hooks ==================================================================
    def check_request(self, req: MarketRequest) -> None:
        """Product-specific checks of a market request; raise Rejected."""

    def check_bid(self, market: Market, bid: Bid) -> None:
        """Product-specific checks of a bid (the common ones and its attrs are checked); raise Rejected."""

    def on_bid(self, market: Market, bid: Bid) -> None:
        """An acknowledged bid is recorded (a product writes its own table rows here)."""

    def on_cleared(self, market: Market) -> None:
        """The market's awards are sent (a product writes its own table rows here)."""

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

    def interval_payments(self, market: Market, award: Award) -> tuple[float, ...]:
        """DKK per interval the award pays (``awards.payment_dkk``): accepted energy x price by default."""
        return tuple(q * p * market.hours for q, p in zip(award.accepted_kw, award.prices, strict=True))

    def activation_lead_minutes(self, market: Market) -> tuple[int, int]:
        """(min, max) minutes between sending an activation and its start."""
        lo, hi = ACTIVATION_LEAD_MINUTES
        return (
            int(market.terms.get("activation_min_lead_minutes", lo)),
            int(market.terms.get("activation_max_lead_minutes", hi)),
        )

    # == message handling ==============================================================
    @property
    def now(self) -> int:
        return int(self.s.env.now)

    def handle(self, msg: Message) -> str:
        if isinstance(msg, Bid):  # bids first: most messages are (the four types are disjoint)
            return self._accept_bid(msg)
        if isinstance(msg, MarketRequest):
            return self._open(msg)
        if isinstance(msg, MarketCancellation):
            return self._cancel(msg)
        if isinstance(msg, Activation):
            return self.activate(msg)
        raise Rejected(RejectReason.MALFORMED, f"product {self.product_id} does not accept {msg.kind!r} messages")

    def _open(self, req: MarketRequest) -> str:
        validation.check_request(
            req, now=self.now, locations=self.s.locations, existing=self.markets, is_participant=self.s.is_participant
        )
        self.check_request(req)
        terms = self.read_terms(req)
        penalty = self.penalty_price(req)
        market = Market(request=req, requested_at=self.now, penalty_price=penalty, terms=terms)
        self.markets[req.market_id] = market
        self.opened.append(market)
        for seller in self.s.sellers_at(req.location):
            self._reply(
                market,
                BidRequest,
                seller,
                buyer=req.sender,
                location=req.location,
                direction=req.direction,
                gate_close=req.gate_close,
                delivery_start=req.delivery_start,
                interval_minutes=req.interval_minutes,
                need_kw=req.need_kw,
                price_cap=req.price_cap,
                params={**self.bid_request_params(req), **req.params, **self.shortfall_terms()},
                penalty_price=penalty,
            )
        self.s.env.process(life_cycle(self, market))
        return req.market_id

    @property
    def accept_bid(self) -> Callable[[Bid], str] | None:
        """What :meth:`handle` does with a bid, for the dispatcher to call directly with a plain :class:`Bid`
        (one call a bid fewer); None where a subclass handles messages its own way (it must see every one)."""
        return self._accept_bid if type(self).handle is Product.handle else None

    def _accept_bid(self, bid: Bid) -> str:
        """The hot path of every run (one call a bid): the checks in reason-code order, then the books."""
        market = self.markets.get(bid.market_id)
        if market is None:
            raise Rejected(RejectReason.UNKNOWN_MARKET, f"no {self.product_id} market {bid.market_id!r}")
        req, state, now = market.request, market.state, int(self.s.env.now)
        sellers = self.s.sellers_at(req.location)
        if not (
            state is _OPEN
            and now < req.gate_close
            and validation.bid_passes(req, bid, sellers=sellers, bid_ids=market.bid_ids)
        ):  # the one-pass test failed: the full checks say why (or pass, where it is only conservative)
            validation.check_bid(
                req,
                bid,
                now=now,
                is_open=state is MarketState.OPEN,
                cancelled=state is MarketState.CANCELLED,
                sellers=sellers,
                bid_ids=market.bid_ids,
            )
        if (bid.attrs or self.BID_ATTRS) and not attrs_pass(  # no fields of its own: nothing check_attrs could refuse
            self.BID_ATTRS, bid.attrs, n_intervals=len(req.need_kw), terms=market.terms
        ):  # the one-pass test failed: the full checks say why (or pass what it refuses only by exact types)
            check_attrs(self.product_id, self.BID_ATTRS, bid.attrs, n_intervals=len(req.need_kw), terms=market.terms)
        self.check_bid(market, bid)
        bid_id = bid.bid_id
        market.arrival[bid_id] = len(market.arrival)
        market.bids.append(bid)
        market.bid_ids.add(bid_id)
        market.n_bids += 1
        records.write_bid(self.s.persistor, market, self.product_id, bid, now)
        self.on_bid(market, bid)
        return bid_id

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

    def activate(self, msg: Activation) -> str:
        """Buyer -> platform -> seller: check an activation against what is reserved, record it, forward it.

        Checks, in order (reason code): the product takes activations (malformed); the market
        exists (unknown_market); then :func:`.activation.check_activation` -- the sender is the
        market's buyer (unauthorised); the market is cleared and not yet delivered (invalid_times
        before clearing, gate_closed after delivery); a new activation ID (duplicate); the
        market's interval length (out_of_range); it starts on an interval of the window and ends
        within it (invalid_times); quantities finite, >= 0, not all zero (out_of_range); notice
        within :meth:`activation_lead_minutes` (invalid_times: 'late' or 'too early'); and
        :func:`.activation.draw_activation` -- the named seller holds an award (not_eligible)
        and per interval no more than is still reserved (out_of_range). Nothing is recorded
        unless every check passes. Each seller called gets one Activation (``seller`` set, its
        share per interval), and every (seller, bid, interval) drawn is an ``activations`` row.
        """
        if not self.accepts_activations:
            raise Rejected(RejectReason.MALFORMED, f"product {self.product_id} has no activations")
        market = self.markets.get(msg.market_id)
        if market is None:
            raise Rejected(RejectReason.UNKNOWN_MARKET, f"no {self.product_id} market {msg.market_id!r}")
        check_activation(market, msg, now=self.now, lead=self.activation_lead_minutes(market))
        req = market.request
        first = (msg.start - req.delivery_start) // req.interval_minutes
        plan = draw_activation(market, msg.seller, first, msg.quantities_kw)
        market.activation_ids.add(msg.activation_id)
        by_seller: dict[str, list[float]] = {}
        for (seller, bid_id), kw in sorted(plan.items()):
            done = market.activated.setdefault(bid_id, [0.0] * req.n_intervals)
            share = by_seller.setdefault(seller, [0.0] * len(kw))
            for j, q in enumerate(kw):
                if q <= 0:
                    continue
                done[first + j] += q
                share[j] += q
                records.write_activation(
                    self.s.persistor,
                    market,
                    self.product_id,
                    msg.msg_id,
                    msg.activation_id,
                    seller,
                    bid_id,
                    first + j,
                    q,
                )
        for seller, kw in sorted(by_seller.items()):
            self._reply(
                market,
                Activation,
                seller,
                activation_id=msg.activation_id,
                start=msg.start,
                interval_minutes=req.interval_minutes,
                quantities_kw=tuple(kw),
                seller=seller,
            )
        return msg.activation_id

    # == life-cycle steps (called by lifecycle.life_cycle) =================================
    def close_gate(self, market: Market) -> None:
        market.state = MarketState.GATE_CLOSED
        for party in [market.request.sender, *market.bidders]:
            self._reply(market, MarketClosed, party, n_bids=len(market.bids))

    def clear(self, market: Market) -> None:
        """Clear the screened book (:mod:`.book`), tell the buyer, record it, send the awards."""
        req = market.request
        market.book = self.s.screen(req, list(market.bids))
        cleared = clear_book(type(self), req, market.bids, self.s.solver, terms=market.terms, book=market.book)
        outcome = cleared.outcome
        market.outcome = outcome
        market.cleared_at = self.now
        n, h = req.n_intervals, market.hours
        accepted_total = [sum(col) for col in zip(*outcome.accepted, strict=True)] if outcome.accepted else [0.0] * n
        awards = [self.new_award(market, a) for a in cleared.awards]
        cost = sum(a.payment_dkk for a in awards)
        if cleared.note:
            market.note = cleared.note
        result = self._reply(
            market,
            ClearingResult,
            req.sender,
            status=str(outcome.status),
            objective_dkk=outcome.objective,
            cost_dkk=cost,
            accepted_kw=tuple(accepted_total),
            unmet_kw=tuple(outcome.unmet),
            clearing_price=tuple(cleared.clearing_price),
            n_bids=len(market.bids),
            n_accepted=sum(1 for a in awards if a.awarded),
            detail=outcome.message,
        )
        records.write_clearing(self.s.persistor, market, self.product_id, result, outcome, self.now)
        if not outcome.is_ok:
            market.state = MarketState.FAILED
            market.note = f"clearing {outcome.status}: {outcome.message}"
            return
        market.state = MarketState.CLEARED
        market.procured_kwh = sum(accepted_total) * h
        market.unmet_kwh = sum(outcome.unmet) * h
        market.cost_dkk = cost
        for award in awards:
            market.awards.append(award)
            records.write_award(self.s.persistor, market, self.product_id, award, self.interval_payments(market, award))
            self.s.reply(award)
        self.on_cleared(market)
        self.s.events.publish(
            MarketCleared(
                product_id=self.product_id,
                market_id=market.market_id,
                buyer=req.sender,
                location=req.location,
                direction=req.direction,
                delivery_start=req.delivery_start,
                interval_minutes=req.interval_minutes,
                awarded_kw=tuple(sum(a.accepted_kw[i] for a in awards) for i in range(n)),
                accepted_by_bid=tuple((a.bid_id, tuple(a.accepted_kw)) for a in awards),
            )
        )

    def new_award(self, market: Market, terms: AwardTerms) -> Award:
        """The one place an Award message is built."""
        req = market.request
        return Award(
            msg_id=self.s.new_msg_id(),
            sender=PLATFORM,
            recipient=terms.seller,
            market_id=market.market_id,
            product_id=self.product_id,
            sent_at=self.now,
            bid_id=terms.bid_id,
            accepted_kw=terms.accepted_kw,
            prices=terms.prices,
            payment_dkk=terms.payment_dkk,
            delivery_start=req.delivery_start,
            interval_minutes=req.interval_minutes,
            direction=req.direction,
            attrs=dict(terms.attrs),
        )

    def send_statement(self, market: Market, st: SettlementStatement) -> None:
        imbalance = self._imbalance.pop(st.msg_id, ())
        records.write_statement(self.s.persistor, market, self.product_id, st, self.settlement_rule, imbalance)
        self.s.reply(st)

    def retire(self, market: Market) -> None:
        """Forget a settled market's book, awards and solver outcome: every row is persisted,
        and a year of 15-minute markets must not keep millions of messages in memory."""
        market.bids, market.book, market.awards = [], [], []
        market.bid_ids, market.outcome, market.arrival = set(), None, {}

    def _reply(self, market: Market, cls: type[Message], recipient: str, **fields: Any) -> Any:
        msg = cls(
            msg_id=self.s.new_msg_id(),
            sender=PLATFORM,
            recipient=recipient,
            market_id=market.market_id,
            product_id=self.product_id,
            sent_at=self.now,
            **fields,
        )
        self.s.reply(msg)
        return msg

    # == settlement statements ===========================================================
    def issue_statements(self, market: Market, results: Mapping[str, IntervalSettlement]) -> list[SettlementStatement]:
        """A statement per seller (ID order) and one to the buyer, whose net is minus the sum of the sellers' nets.

        ``penalty_dkk`` carries everything a seller pays for not delivering: the shortfall penalty and,
        under the imbalance rule, the imbalance amount, whose counterparty is the market's buyer (the TSO);
        the ``settlements`` table also shows the imbalance part apart (``imbalance_dkk``)."""
        req = market.request
        n = req.n_intervals
        starts = tuple(market.interval_start(i) for i in range(n))
        sellers = sorted(results)
        out = []
        for seller in sellers:
            r = results[seller]
            out.append(
                self.statement(
                    market,
                    seller,
                    "seller",
                    req.sender,
                    interval_start=starts,
                    ordered_kwh=r.ordered_kwh,
                    delivered_kwh=r.delivered_kwh,
                    payment_dkk=r.payment_dkk,
                    penalty_dkk=r.charge_dkk,
                    net_dkk=r.net_dkk,
                    meter_gap=r.gap,
                )
            )
            if r.imbalance_dkk:
                self._imbalance[out[-1].msg_id] = r.imbalance_dkk
        if sellers:

            def total(field_: str) -> tuple[float, ...]:
                return tuple(sum(getattr(results[s], field_)[i] for s in sellers) for i in range(n))

            out.append(
                self.statement(
                    market,
                    req.sender,
                    "buyer",
                    ",".join(sellers),
                    interval_start=starts,
                    ordered_kwh=total("ordered_kwh"),
                    delivered_kwh=total("delivered_kwh"),
                    payment_dkk=total("payment_dkk"),
                    penalty_dkk=total("charge_dkk"),
                    net_dkk=tuple(-x for x in total("net_dkk")),
                    meter_gap=tuple(any(results[s].gap[i] for s in sellers) for i in range(n)),
                )
            )
            if any(results[s].imbalance_dkk for s in sellers):
                self._imbalance[out[-1].msg_id] = tuple(
                    sum(results[s].imbalance_dkk[i] for s in sellers if results[s].imbalance_dkk) for i in range(n)
                )
        return out

    def statement(
        self, market: Market, recipient: str, role: str, counterparty: str, **fields: Any
    ) -> SettlementStatement:
        """Build a settlement statement message addressed from the platform."""
        return SettlementStatement(
            msg_id=self.s.new_msg_id(),
            sender=PLATFORM,
            recipient=recipient,
            market_id=market.market_id,
            product_id=self.product_id,
            sent_at=self.now,
            party_role=role,
            counterparty=counterparty,
            **fields,
        )

    # == end of run ====================================================================
    def finalize(self) -> None:
        """Write every market's terms and final state (open ones included)."""
        for market in self.markets.values():
            records.write_market(self.s.persistor, market, self.product_id)


def iter_awards_of(market: Market, seller: str) -> Iterable[Award]:
    return (a for a in market.awards if a.recipient == seller)
