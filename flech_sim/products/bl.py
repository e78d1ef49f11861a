"""BL -- Baseline service (EcoGrid 2.0; bought by a DSO).

A reduction (or increase) relative to a baseline that the *platform* computes
from the meter data it holds; the seller's own declaration does not count
(except as a declared fallback). Clearing is SRP's.

Interface contract
------------------
MarketRequest / BidRequest
    ``location`` a feeder (not '*'); ``direction`` down or up; ``need_kw`` kW
    per interval; ``price_cap`` DKK/kWh. ``params`` (defaults in
    :class:`flech_sim.baselines.BaselineSpec`; the bid request carries them
    all, filled in):

    * ``baseline``: 'x_of_y' (default) | 'rolling_average' | 'meter_before_after'
    * ``baseline_x`` (4), ``baseline_y`` (5): x_of_y -- mean of the X highest of
      the last Y complete days at the window's time of day;
    * ``baseline_days`` (10), ``baseline_min_days`` (5): rolling_average -- mean
      of every complete day among the last ``days``; needs ``min_days``;
    * ``baseline_before_minutes`` (60), ``baseline_after_minutes`` (60):
      meter_before_after -- one flat value, the mean metered load just before
      and just after the window;
    * ``baseline_fallback``: 'meter_before_after' (default) | 'declared' |
      'no_delivery' -- used when the method has too little history (see
      :mod:`flech_sim.baselines`); recorded in the ``baselines`` table;
    * ``dispatch`` = 'on_award' (fixed).

Bid
    As SRP: ``price`` DKK/kWh (<= price_cap), ``quantities_kw`` per interval,
    ``block``; ``baseline_kw`` is optional (checked and kept identical across
    your bids if given) and is used only when ``baseline_fallback`` is
    'declared', in which case it is required.

Clearing / Award
    Least cost to cover need_kw per interval, pay-as-bid; blocks by MILP; ties:
    earlier arrival at the platform. Award as SRP (accepted_kw, prices, payment_dkk).

Settlement (per seller and interval; metering point ``<seller>@<feeder>``)
    baseline = the platform's (method or fallback, from published meter
    history of that point); delivered = baseline - metered (down) or metered
    - baseline (up), within [0, awarded]; by the scenario's ``settlement.rules``:
    'delivered_plus_penalty' (default) payment = delivered kWh x the bid price,
    'award_minus_penalty' payment = the award's payment; either way penalty =
    (awarded - delivered) kWh x penalty price. No baseline at all
    ('none') counts nothing as delivered. Meter gaps in the window: the
    scenario's gap rule. The buyer's net is minus the sum of the sellers'
    nets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..baselines import FALLBACKS, METHODS, PARAM_NAMES, BaselineSpec, compute
from ..clearing import SolverOptions
from ..messages import Bid, MarketRequest, Rejected, RejectReason, SettlementStatement
from ..registry import register_product
from ..schema import row
from ..settlement import IntervalSettlement
from .base import Market
from .book import MarketClearing, clear_book
from .common import TermsProduct, dispatch_param
from .params import Param

_DEFAULT = BaselineSpec()
_DOCS = {
    "method": "baseline method",
    "x": "x_of_y: days averaged",
    "y": "x_of_y: days looked back",
    "days": "rolling_average: days looked back",
    "min_days": "rolling_average: complete days needed",
    "before_minutes": "meter_before_after: minutes before the window",
    "after_minutes": "meter_before_after: minutes after the window (0 = none)",
    "fallback": "what replaces the method when history is insufficient",
}
_CHOICES = {"method": METHODS, "fallback": FALLBACKS}
_MIN = {"x": 1, "y": 1, "days": 1, "min_days": 1, "before_minutes": 1, "after_minutes": 0}

PARAMS = (
    *(
        Param(
            name,
            type(getattr(_DEFAULT, f)),
            getattr(_DEFAULT, f),
            _DOCS[f],
            choices=_CHOICES.get(f, ()),
            min=_MIN.get(f),
        )
        for name, f in PARAM_NAMES.items()
    ),
    dispatch_param("on_award"),
)


def baseline_spec(terms: dict[str, Any]) -> BaselineSpec:
    return BaselineSpec(**{f: terms[name] for name, f in PARAM_NAMES.items()})


@register_product("BL")
class BLProduct(TermsProduct):
    PARAMS = PARAMS
    pricing = "pay_as_bid"
    declared_baseline = "optional"
    SETTLEMENT_RULES = ("delivered_plus_penalty", "award_minus_penalty")

    @classmethod
    def complete_terms(cls, req: MarketRequest, terms: dict[str, Any]) -> dict[str, Any]:
        try:
            baseline_spec(terms)
        except ValueError as exc:
            raise Rejected(RejectReason.OUT_OF_RANGE, str(exc)) from None
        return terms

    def check_product_bid(self, market: Market, bid: Bid) -> None:
        if market.terms["baseline_fallback"] == "declared" and not bid.baseline_kw:
            raise Rejected(
                RejectReason.OUT_OF_RANGE,
                "this market's baseline fallback is 'declared': bids must declare baseline_kw",
            )

    def meter_window(self, market: Market) -> tuple[int, int]:
        req = market.request
        return baseline_spec(market.terms).meter_window(req.delivery_start, req.delivery_end)

    def settle(self, market: Market) -> list[SettlementStatement]:
        req = market.request
        n = req.n_intervals
        spec = baseline_spec(market.terms)
        results: dict[str, IntervalSettlement] = {}
        for seller in self.awarded_sellers(market):
            (point,) = self.seller_points(market, seller)
            base = compute(
                self.s.meter.reader(point),
                spec,
                req.delivery_start,
                req.interval_minutes,
                n,
                market.baselines.get(seller, ()),
            )
            for i, v in enumerate(base.values):
                self.s.persistor.append(
                    "baselines",
                    row(
                        "baselines",
                        market_id=market.market_id,
                        product_id=self.product_id,
                        seller=seller,
                        metering_point=point,
                        interval=i,
                        interval_start=market.interval_start(i),
                        method=base.method,
                        used=base.used,
                        fallback=base.fallback,
                        baseline_kw=v,
                        detail=base.detail,
                    ),
                )
            if base.fallback:
                market.note = "; ".join(filter(None, (market.note, f"{seller}: baseline {base.used} ({base.detail})")))
            results[seller] = self.settle_seller(market, seller, base.values)
        return self.issue_statements(market, results)


def clear_market(
    request: MarketRequest,
    bids: Sequence[Bid],
    options: SolverOptions | None = None,
    *,
    book: Sequence[Bid] | None = None,
) -> MarketClearing:
    """Clear a book of acknowledged BL bids (arrival order) for ``request``: awards, prices, status."""
    return clear_book(BLProduct, request, bids, options, book=book)
