"""CRP -- Conditional Re-Profiling (iPower / FLECH; bought by a DSO): an option.

The buyer reserves the right to call a re-profiling on a feeder inside a
window at short notice; sellers are paid for holding flexibility ready and,
on top, for the energy they deliver when called.

Interface contract
------------------
MarketRequest / BidRequest
    ``location`` a feeder (not '*'); ``direction`` down (consume less) or up;
    ``need_kw`` kW to hold in reserve per interval; ``price_cap`` (DKK/kWh) caps
    the *activation* price. ``params`` (the bid request carries them with every
    default filled in):

    * ``activation_share`` (float in [0, 1], default 0.2): expected share of the
      reserved energy the buyer will call; weighs activation prices in clearing.
    * ``availability_price_cap`` (float >= 0, DKK/kW per window; default
      price_cap x window hours): highest availability price accepted.
    * ``activation_min_lead_minutes`` / ``activation_max_lead_minutes`` (int,
      default 15 / 60): notice an activation must give.
    * ``dispatch`` = 'on_activation' (fixed): deliver nothing on the award;
      deliver what each Activation calls.

Bid
    ``price`` = activation price, DKK/kWh (<= price_cap);
    ``attrs["availability_price"]`` = DKK per kW for the whole window (required, >= 0,
    <= availability_price_cap); ``quantities_kw`` = kW you can hold ready per
    interval (>= 0, not all 0); ``block`` = all-or-nothing over the window;
    ``baseline_kw`` = your declared portfolio consumption per interval on the
    feeder without any activation (required; identical in all your bids of one
    market); ``location`` '' or the market's feeder.

Clearing
    Least expected cost (:mod:`flech_sim.clearing.options`): bid b's expected
    price per kWh reserved is e_b = availability_price / window_hours +
    activation_share x price; the least-cost problem covers need_kw per
    interval, unmet priced at the same formula applied to the caps. Blocks:
    MILP. Ties: earlier arrival at the platform. ClearingResult.clearing_price is the
    highest accepted *expected* price; cost_dkk the availability payments.

Award
    ``accepted_kw`` = kW reserved per interval; ``prices`` = your activation
    price (DKK/kWh) per interval; ``attrs["availability_price"]`` = your bid's;
    ``attrs["availability_dkk"]`` per interval = availability_price x reserved_kw / n
    intervals; ``payment_dkk`` = their sum (certain), by the pricing rule
    'availability' of :mod:`flech_sim.clearing.pricing`. Do not dispatch on it.
    Tables of its own: ``crp_bids``, ``crp_awards``.

Activation (buyer -> platform -> seller)
    The market's buyer sends ``Activation(activation_id, start, interval_minutes,
    quantities_kw, seller)``: ``start`` on an interval start inside the window,
    ``interval_minutes`` the market's, ``quantities_kw`` kW per interval from
    ``start``; sent ``activation_min_lead_minutes`` to
    ``activation_max_lead_minutes`` before ``start``; per interval at most what
    is still reserved (awarded - already activated) by ``seller`` -- or, with
    ``seller`` = "", by all sellers, drawn cheapest activation price first.
    Refusals (see :meth:`Product.activate`): wrong sender unauthorised, late or
    too early invalid_times, over the reserve out_of_range, seller without an
    award not_eligible, reused ID duplicate. Each seller called receives an
    Activation from the platform with ``seller`` = itself and its share; rows go
    to the ``activations`` table (seller, bid, interval).

Settlement (per seller and interval; metering point ``<seller>@<feeder>``)
    ordered = activated energy; delivered = (declared baseline - metered) for
    down, (metered - baseline) for up, within [0, activated]; payment =
    availability for the interval + delivered kWh x activation price (the
    activation-weighted price of the bids drawn; 'award_minus_penalty' in the
    scenario's ``settlement.rules``: activated kWh x that price); penalty = (activated -
    delivered) kWh x penalty price. A seller never activated gets its
    availability payment and needs no meter data. Gaps: the scenario's gap rule.
    The buyer's net is minus the sum of the sellers' nets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from ..clearing import ClearingOutcome, ClearingProblem, SolverOptions
from ..clearing.options import OptionOffer, availability_payments, option_problem
from ..clearing.pricing import AVAILABILITY, Pricing, pay_availability
from ..messages import AttrValue, Award, Bid, MarketRequest, Rejected, RejectReason, SettlementStatement
from ..registry import register_product
from ..schema import Column, Table, register_table, row
from ..settlement import IntervalSettlement
from .activation import ACTIVATION_LEAD_MINUTES
from .attrs import AttrSpec
from .base import Market, iter_awards_of
from .book import MarketClearing, clear_book
from .common import TermsProduct, dispatch_param
from .params import Param
from .records import write_award_series

DEFAULT_ACTIVATION_SHARE = 0.2
"""Expected share of reserved energy that is activated, when the request does not say."""

PARAMS = (
    Param(
        "activation_share",
        float,
        DEFAULT_ACTIVATION_SHARE,
        "expected share of the reserved energy the buyer will activate",
        min=0.0,
        max=1.0,
    ),
    Param(
        "availability_price_cap",
        float,
        None,
        "highest availability price accepted, DKK/kW per window (default: price_cap x window hours)",
        min=0.0,
    ),
    Param(
        "activation_min_lead_minutes", int, ACTIVATION_LEAD_MINUTES[0], "least notice of an activation, minutes", min=0
    ),
    Param(
        "activation_max_lead_minutes", int, ACTIVATION_LEAD_MINUTES[1], "most notice of an activation, minutes", min=0
    ),
    dispatch_param("on_activation"),
)

BID_ATTRS = (
    AttrSpec(
        "availability_price",
        float,
        "price for holding one kW ready over the whole window",
        unit="DKK/kW",
        required=True,
        min=0.0,
        max_term="availability_price_cap",
    ),
)
AWARD_ATTRS = (
    AttrSpec("availability_price", float, "the bid's availability price", unit="DKK/kW"),
    AttrSpec(
        "availability_dkk",
        float,
        "availability payment per interval (payment_dkk is their sum)",
        unit="DKK",
        per_interval=True,
    ),
)

_KEYS = (
    Column("market_id", "str", "-", "market the row belongs to"),
    Column("product_id", "str", "-", "product ID (CRP)"),
    Column("bid_id", "str", "-", "the bid"),
    Column("seller", "str", "-", "bidder"),
)
TABLES = (
    Table(
        "crp_bids",
        "CRP: the availability price of every acknowledged bid, one row per bid.",
        (
            *_KEYS,
            Column("msg_id", "str", "-", "the bid message"),
            Column("availability_price", "float", "DKK/kW", "price for holding one kW ready over the whole window"),
        ),
    ),
    Table(
        "crp_awards",
        "CRP: the availability payment of every award, one row per bid and interval.",
        (
            *_KEYS,
            Column("msg_id", "str", "-", "the award message"),
            Column("interval", "int", "-", "interval index within the delivery window, from 0"),
            Column("interval_start", "time", "timestamp", "start of the interval"),
            Column("availability_dkk", "float", "DKK", "availability price x reserved kW / intervals in the window"),
        ),
    ),
)

for _t in TABLES:  # built-ins register at import, so every run and docs/tables.md know them
    register_table(_t)


def _offers(bids: Sequence[Bid], book: Sequence[Bid]) -> list[OptionOffer]:
    arrival = {b.bid_id: i for i, b in enumerate(bids)}
    return [
        OptionOffer(
            b.bid_id,
            b.sender,
            float(cast(float, b.attrs["availability_price"])),  # a scalar: BID_ATTRS declares it so
            b.price,
            tuple(b.quantities_kw),
            b.block,
            arrival[b.bid_id],
        )
        for b in book
    ]


@register_product("CRP")
class CRPProduct(TermsProduct):
    PARAMS = PARAMS
    BID_ATTRS = BID_ATTRS
    AWARD_ATTRS = AWARD_ATTRS
    TABLES = TABLES
    pricing = AVAILABILITY
    accepts_activations = True
    declared_baseline = "required"
    SETTLEMENT_RULES = ("delivered_plus_penalty", "award_minus_penalty")

    @classmethod
    def complete_terms(cls, req: MarketRequest, terms: dict[str, Any]) -> dict[str, Any]:
        if terms["availability_price_cap"] is None:
            terms["availability_price_cap"] = req.price_cap * req.n_intervals * req.interval_minutes / 60.0
        if terms["activation_min_lead_minutes"] > terms["activation_max_lead_minutes"]:
            raise Rejected(RejectReason.OUT_OF_RANGE, "activation_min_lead_minutes exceeds activation_max_lead_minutes")
        return terms

    @classmethod
    def clearing_problem(
        cls, req: MarketRequest, terms: Mapping[str, Any], bids: Sequence[Bid], book: Sequence[Bid]
    ) -> ClearingProblem:
        return option_problem(
            req.market_id,
            req.need_kw,
            activation_price_cap=req.price_cap,
            availability_price_cap=terms["availability_price_cap"],
            activation_share=terms["activation_share"],
            interval_hours=req.interval_minutes / 60.0,
            offers=_offers(bids, book),
        )

    @classmethod
    def price(
        cls,
        problem: ClearingProblem,
        outcome: ClearingOutcome,
        terms: Mapping[str, Any],
        book: Sequence[Bid],
        options: SolverOptions,
    ) -> Pricing:
        return pay_availability(
            problem,
            outcome,
            {
                b.bid_id: float(b.attrs["availability_price"])  # type: ignore[arg-type]
                for b in book
            },
            {b.bid_id: b.price for b in book},
        )

    @classmethod
    def award_attrs(
        cls,
        req: MarketRequest,
        terms: Mapping[str, Any],
        bids: Sequence[Bid],
        accepted: Mapping[str, tuple[float, ...]],
    ) -> dict[str, dict[str, AttrValue]]:
        out: dict[str, dict[str, AttrValue]] = {}
        for b in bids:
            a = float(b.attrs["availability_price"])  # type: ignore[arg-type]
            out[b.bid_id] = {"availability_price": a, "availability_dkk": availability_payments(a, accepted[b.bid_id])}
        return out

    def interval_payments(self, market: Market, award: Award) -> tuple[float, ...]:
        return award.attrs["availability_dkk"]  # type: ignore[return-value]

    def on_bid(self, market: Market, bid: Bid) -> None:
        self.s.persistor.append(
            "crp_bids",
            row(
                "crp_bids",
                market_id=bid.market_id,
                product_id=self.product_id,
                bid_id=bid.bid_id,
                seller=bid.sender,
                msg_id=bid.msg_id,
                availability_price=float(bid.attrs["availability_price"]),  # type: ignore[arg-type]
            ),
        )

    def on_cleared(self, market: Market) -> None:
        write_award_series(self.s.persistor, market, self.product_id, "crp_awards", "availability_dkk")

    def meter_points(self, market: Market) -> list[str]:
        """Only sellers that were activated need meter data."""
        called = {a.recipient for a in market.awards if any(market.activated.get(a.bid_id, ()))}
        return sorted(p for s in called for p in self.seller_points(market, s))

    def settle(self, market: Market) -> list[SettlementStatement]:
        req = market.request
        n = req.n_intervals
        results: dict[str, IntervalSettlement] = {}
        for seller in self.awarded_sellers(market):
            awards = [a for a in iter_awards_of(market, seller) if a.awarded]
            activated = [sum(market.activated.get(a.bid_id, [0.0] * n)[i] for a in awards) for i in range(n)]
            value = [sum(market.activated.get(a.bid_id, [0.0] * n)[i] * a.prices[i] for a in awards) for i in range(n)]
            price = [v / q if q > 0 else 0.0 for v, q in zip(value, activated, strict=True)]
            # AWARD_ATTRS declares availability_dkk as per-interval floats (check_attrs enforced it)
            per_award = [cast("tuple[float, ...]", a.attrs["availability_dkk"]) for a in awards]
            availability = [sum(p[i] for p in per_award) for i in range(n)]
            metered = self.metered_kw(market, seller) if any(activated) else [None] * n
            results[seller] = self.settle_seller(
                market,
                seller,
                market.baselines[seller],
                ordered_kw=activated,
                energy_price=price,
                fixed_dkk=availability,
                metered_kw=metered,
                gaps_where_ordered=True,
            )
        return self.issue_statements(market, results)


def clear_market(
    request: MarketRequest,
    bids: Sequence[Bid],
    options: SolverOptions | None = None,
    *,
    book: Sequence[Bid] | None = None,
) -> MarketClearing:
    """Clear a book of acknowledged CRP bids (arrival order) for ``request``: awards, prices, status."""
    return clear_book(CRPProduct, request, bids, options, book=book)
