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
    interval (unmet priced at price_cap); blocks by MILP; ties: earlier bid,
    then bid ID. Pricing:

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
    ``payment_dkk``; ``cap_kw`` = your portfolio cap per interval = E_t - the
    sum of all your accepted reductions in this market (the same in all your
    awards; binds only where you have an accepted reduction > 0).

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
from typing import Any

from ..clearing import ClearingOutcome, ClearingProblem, SolverOptions, clear
from ..clearing.pricing import PAY_AS_BID, VCG, pay_as_bid, vcg
from ..messages import Award, Bid, Direction, MarketRequest, Rejected, RejectReason, SettlementStatement
from ..registry import register_product
from ..settlement import IntervalSettlement, cap_compliance
from .base import Market, _clean
from .common import TermsProduct, dispatch_param
from .params import Param

PARAMS = (
    Param("pricing", str, PAY_AS_BID, "how winners are paid: pay-as-bid or VCG (each winner paid its externality)",
          choices=(PAY_AS_BID, VCG)),
    dispatch_param("on_award"),
)


@register_product("CL")
class CLProduct(TermsProduct):
    PARAMS = PARAMS
    pricing = "pay_as_bid"
    declared_baseline = "required"

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
                raise Rejected(RejectReason.OUT_OF_RANGE,
                               f"interval {i}: reductions offered ({total:g} kW over your bids) exceed your expected "
                               f"consumption baseline_kw ({e:g} kW); the cap would be negative")

    def _options(self, market: Market) -> SolverOptions:
        """VCG needs the exact optimum: MIP gap 0 (the time limit stays)."""
        if market.terms["pricing"] == VCG:
            return dataclasses.replace(self.s.solver, mip_gap=0.0)
        return self.s.solver

    def run_clearing(self, problem: ClearingProblem) -> ClearingOutcome:
        return clear(problem, self._options(self.markets[problem.market_id]))

    def make_awards(self, market: Market, outcome: ClearingOutcome) -> list[Award]:
        req = market.request
        n = req.n_intervals
        problem = self.build_problem(market)
        if market.terms["pricing"] == VCG:
            pricing = vcg(problem, outcome, self._options(market))
            if pricing.message:
                market.note = f"vcg: {pricing.message}"
        else:
            pricing = pay_as_bid(problem, outcome)
        priced = pricing.by_bid()
        accepted = outcome.accepted_by_bid()
        qty = {b.bid_id: tuple(_clean(x) for x in accepted.get(b.bid_id, (0.0,) * n)) for b in market.bids}
        reduction: dict[str, list[float]] = {}
        for b in market.bids:
            r = reduction.setdefault(b.sender, [0.0] * n)
            for i, q in enumerate(qty[b.bid_id]):
                r[i] += q
        awards = []
        for b in market.bids:
            q = qty[b.bid_id]
            prices, payment = priced.get(b.bid_id, (tuple(b.price for _ in q), 0.0))
            extra: dict[str, Any] = {}
            if any(x > 0 for x in q):
                e = market.baselines[b.sender]
                extra["cap_kw"] = tuple(e[i] - reduction[b.sender][i] for i in range(n))
            else:
                payment = 0.0
            awards.append(self.new_award(market, b, q, tuple(float(p) for p in prices), float(payment), **extra))
        return awards

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
                reduction_kw=reduction, cap_kw=cap, metered_kw=self.metered_kw(market, seller),
                gap_rule=self.s.settlement.gap_rule,
            )
            payment = [sum(a.accepted_kw[i] * a.prices[i] * h for a in market.awards if a.recipient == seller)
                       for i in range(n)]
            results[seller] = IntervalSettlement(
                ordered_kwh=tuple(r * h for r in reduction), delivered_kwh=tuple(d * h for d in delivered),
                payment_dkk=tuple(payment), penalty_dkk=tuple(x * h * market.penalty_price for x in excess), gap=gaps,
            )
        return self.issue_statements(market, results)
