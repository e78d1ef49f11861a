"""CL -- Capacity Limitation (EcoGrid 2.0; bought by a DSO).

A temporary absolute cap on a seller's portfolio consumption on a feeder. No
baseline enters verification: compliance is metered <= cap per interval, and
energy above the cap is penalised.

Interface contract
------------------
MarketRequest / BidRequest
    ``location`` a feeder (not '*'); ``direction`` down (the cap limits
    consumption; 'up' is refused, out_of_range); ``need_kw`` = the reduction needed per interval = forecast
    feeder load - feeder limit (the buyer computes it); ``price_cap`` DKK/kWh
    of reduction. ``params``:

    * ``pricing`` ('pay_as_bid' default, or 'vcg'): how winners are paid.
    * ``dispatch`` = 'on_award' (fixed).

Bid
    ``baseline_kw`` = your *expected* portfolio consumption on the feeder per
    interval, E_t (required, finite, identical in all your bids of one market);
    ``quantities_kw`` = reduction R_t below E_t you accept to be capped by
    (>= 0, not all 0; the sum of your bids' R_t must not exceed E_t);
    ``price`` = DKK per kWh of reduction (R_t x hours x price is the bid's
    cost); ``block`` = all-or-nothing over the window.

Clearing
    Least total bid cost such that the accepted reductions cover need_kw per
    interval (unmet priced at price_cap); blocks by MILP; ties: earlier arrival
    at the platform. Pricing:

    * pay_as_bid: accepted kWh x bid price;
    * vcg: cleared exactly (MIP gap 0); each winning seller is paid its
      externality (optimal cost of the others without it - cost of the others
      with it; unmet need at the cap counts as cost), split over its accepted
      bids so that each gets at least its bid and at most the cap (see
      :mod:`flech_sim.clearing.pricing`). Award ``prices`` = the bid's VCG
      payment / its accepted kWh, the same in each interval.

    ClearingResult: ``clearing_price`` = highest accepted bid price per
    interval; ``cost_dkk`` = what the buyer pays (pay-as-bid or VCG total).

Award
    ``accepted_kw`` = accepted reduction per interval; ``prices`` DKK/kWh;
    ``payment_dkk``; ``attrs["cap_kw"]`` (on awards with an accepted reduction) =
    your portfolio cap per interval = E_t - the sum of all your accepted reductions
    in this market (the same in all your awards; binds only where you have an
    accepted reduction > 0). Table of its own: ``cl_caps``.

Settlement (per seller and interval; metering point ``<seller>@<feeder>``)
    ordered = accepted reduction (kWh); excess = max(0, metered - cap);
    delivered = max(0, reduction - excess); payment = the award's payment
    (paid whatever happens); penalty = excess kWh x penalty price (the whole
    excess, which can exceed the reduction). A meter gap under 'no_delivery'
    counts the whole reduction as excess; under 'award' as honoured. The
    buyer's net is minus the sum of the sellers' nets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..clearing import SolverOptions
from ..clearing.pricing import PAY_AS_BID, VCG
from ..messages import AttrValue, Bid, Direction, MarketRequest, Rejected, RejectReason, SettlementStatement
from ..registry import register_product
from ..schema import Column, Table, register_table
from ..settlement import IntervalSettlement, cap_compliance
from .attrs import AttrSpec
from .base import Market
from .book import MarketClearing, clear_book
from .common import TermsProduct, dispatch_param
from .params import Param
from .records import write_award_series

PARAMS = (
    Param(
        "pricing",
        str,
        PAY_AS_BID,
        "how winners are paid: pay-as-bid or VCG (each winner paid its externality)",
        choices=(PAY_AS_BID, VCG),
    ),
    dispatch_param("on_award"),
)
AWARD_ATTRS = (
    AttrSpec(
        "cap_kw",
        float,
        "the seller's portfolio cap per interval (declared expected load - accepted "
        "reduction); binds where accepted_kw > 0; only on awards with an accepted reduction",
        unit="kW",
        per_interval=True,
    ),
)
TABLES = (
    Table(
        "cl_caps",
        "CL: the portfolio cap of every award with an accepted reduction, one row per award and interval.",
        (
            Column("market_id", "str", "-", "market the row belongs to"),
            Column("product_id", "str", "-", "product ID (CL)"),
            Column("msg_id", "str", "-", "the award message"),
            Column("bid_id", "str", "-", "the bid"),
            Column("seller", "str", "-", "bidder"),
            Column("interval", "int", "-", "interval index within the delivery window, from 0"),
            Column("interval_start", "time", "timestamp", "start of the interval"),
            Column(
                "cap_kw",
                "float",
                "kW",
                "declared expected load - the seller's accepted reductions; binds where the award's accepted_kw > 0",
            ),
        ),
    ),
)

for _t in TABLES:  # built-ins register at import, so every run and docs/tables.md know them
    register_table(_t)


@register_product("CL")
class CLProduct(TermsProduct):
    PARAMS = PARAMS
    AWARD_ATTRS = AWARD_ATTRS
    TABLES = TABLES
    pricing = PAY_AS_BID
    declared_baseline = "required"
    SETTLEMENT_RULES = ("award_minus_penalty",)  # EcoGrid 2.0: the cap is paid, energy above it penalised

    def check_request(self, req: MarketRequest) -> None:
        super().check_request(req)
        if req.direction is not Direction.DOWN:
            raise Rejected(RejectReason.OUT_OF_RANGE, "CL caps consumption: direction must be 'down'")

    def check_product_bid(self, market: Market, bid: Bid) -> None:
        expected = bid.baseline_kw
        earlier = [b for b in market.bids if b.sender == bid.sender]
        for i, (q, e) in enumerate(zip(bid.quantities_kw, expected, strict=True)):
            total = q + sum(b.quantities_kw[i] for b in earlier)
            if total > e + 1e-9:
                raise Rejected(
                    RejectReason.OUT_OF_RANGE,
                    f"interval {i}: reductions offered ({total:g} kW over your bids) exceed your expected "
                    f"consumption baseline_kw ({e:g} kW); the cap would be negative",
                )

    @classmethod
    def pricing_rule(cls, terms: Mapping[str, Any]) -> str:
        return str(terms["pricing"])

    @classmethod
    def solver_options(cls, terms: Mapping[str, Any], options: SolverOptions) -> SolverOptions:
        """VCG needs the exact optimum: MIP gap 0 (the time limit stays)."""
        return dataclasses.replace(options, mip_gap=0.0) if terms["pricing"] == VCG else options

    @classmethod
    def award_attrs(
        cls,
        req: MarketRequest,
        terms: Mapping[str, Any],
        bids: Sequence[Bid],
        accepted: Mapping[str, tuple[float, ...]],
    ) -> dict[str, dict[str, AttrValue]]:
        n = req.n_intervals
        reduction: dict[str, list[float]] = {}
        for b in bids:
            r = reduction.setdefault(b.sender, [0.0] * n)
            for i, q in enumerate(accepted[b.bid_id]):
                r[i] += q
        return {
            b.bid_id: {"cap_kw": tuple(float(b.baseline_kw[i]) - reduction[b.sender][i] for i in range(n))}
            for b in bids
            if any(x > 0 for x in accepted[b.bid_id])
        }

    def on_cleared(self, market: Market) -> None:
        write_award_series(self.s.persistor, market, self.product_id, "cl_caps", "cap_kw")

    def settle(self, market: Market) -> list[SettlementStatement]:
        req = market.request
        n = req.n_intervals
        h = market.hours
        results: dict[str, IntervalSettlement] = {}
        for seller in self.awarded_sellers(market):
            reduction = self.ordered_kw(market, seller)
            expected = market.baselines[seller]
            cap = [expected[i] - reduction[i] for i in range(n)]
            delivered, excess, gaps = cap_compliance(
                reduction_kw=reduction,
                cap_kw=cap,
                metered_kw=self.metered_kw(market, seller),
                gap_rule=self.s.settlement.gap_rule,
            )
            results[seller] = IntervalSettlement(
                ordered_kwh=tuple(r * h for r in reduction),
                delivered_kwh=tuple(d * h for d in delivered),
                payment_dkk=tuple(self.award_payments(market, seller)),
                penalty_dkk=tuple(x * h * market.penalty_price for x in excess),
                gap=gaps,
            )
        return self.issue_statements(market, results)


def clear_market(
    request: MarketRequest,
    bids: Sequence[Bid],
    options: SolverOptions | None = None,
    *,
    book: Sequence[Bid] | None = None,
) -> MarketClearing:
    """Clear a book of acknowledged CL bids (arrival order) for ``request``: awards, prices, status."""
    return clear_book(CLProduct, request, bids, options, book=book)
