"""SRP -- Scheduled Re-Profiling (iPower / FLECH; bought by a DSO).

A firm change of a portfolio's load profile in a known window, agreed
ahead and delivered without a further call. Bids: kW per interval at one
energy price, divisible or block, with the seller's declared baseline.
Clearing: least cost to cover the requested profile; pay-as-bid; ties at
equal price by arrival at the platform. Verification: delivered = baseline -
metered (down), capped at the award; shortfall penalised.

``clear_market(request, bids, options)`` clears a book of SRP bids without a
simulation (the same code path the platform runs at gate closure).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..clearing import SolverOptions
from ..clearing.pricing import PAY_AS_BID
from ..messages import Bid, MarketRequest, SettlementStatement
from ..registry import register_product
from ..settlement import IntervalSettlement, settle_seller
from .base import Market
from .book import MarketClearing, clear_book
from .common import TermsProduct, dispatch_param

PARAMS = (dispatch_param("on_award"),)


@register_product("SRP")
class SRPProduct(TermsProduct):
    PARAMS = PARAMS
    pricing = PAY_AS_BID
    declared_baseline = "required"

    def settle(self, market: Market) -> list[SettlementStatement]:
        req = market.request
        results: dict[str, IntervalSettlement] = {}
        for seller in self.awarded_sellers(market):
            results[seller] = settle_seller(
                direction=req.direction,
                hours=market.hours,
                ordered_kw=self.ordered_kw(market, seller),
                payment_dkk=self.award_payments(market, seller),
                baseline_kw=market.baselines[seller],
                metered_kw=self.metered_kw(market, seller),
                penalty_price=market.penalty_price,
                gap_rule=self.s.settlement.gap_rule,
            )
        return self.issue_statements(market, results)


def clear_market(
    request: MarketRequest,
    bids: Sequence[Bid],
    options: SolverOptions | None = None,
    *,
    book: Sequence[Bid] | None = None,
) -> MarketClearing:
    """Clear a book of acknowledged SRP bids (arrival order) for ``request``: awards, prices, status."""
    return clear_book(SRPProduct, request, bids, options, book=book)
