"""SRP -- Scheduled Re-Profiling (iPower / FLECH; bought by a DSO).

A firm change of a portfolio's load profile in a known window, agreed
ahead and delivered without a further call. Bids: kW per interval at one
energy price, divisible or block, with the seller's declared baseline.
Clearing: least cost to cover the requested profile; pay-as-bid; ties at
equal price by arrival at the platform. Verification: delivered = baseline -
metered (down), capped at the award. Settlement (the scenario's ``settlement.rules``):
'delivered_plus_penalty' (default: the bid price paid on delivered energy, the
shortfall penalised) or 'award_minus_penalty' (the award paid in full, the shortfall
penalised on top).

``clear_market(request, bids, options)`` clears a book of SRP bids without a
simulation (the same code path the platform runs at gate closure).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..clearing import SolverOptions
from ..clearing.pricing import PAY_AS_BID
from ..messages import Bid, MarketRequest, SettlementStatement
from ..registry import register_product
from ..settlement import IntervalSettlement
from .base import Market
from .book import MarketClearing, clear_book
from .common import TermsProduct, dispatch_param

PARAMS = (dispatch_param("on_award"),)


@register_product("SRP")
class SRPProduct(TermsProduct):
    PARAMS = PARAMS
    pricing = PAY_AS_BID
    declared_baseline = "required"
    SETTLEMENT_RULES = ("delivered_plus_penalty", "award_minus_penalty")

    def settle(self, market: Market) -> list[SettlementStatement]:
        results: dict[str, IntervalSettlement] = {}
        for seller in self.awarded_sellers(market):
            results[seller] = self.settle_seller(market, seller, market.baselines[seller])
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
