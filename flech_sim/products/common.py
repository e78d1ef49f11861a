"""What the built-in products share: typed terms, declared baselines, metering, awards.

Kept out of :mod:`base` (the plumbing every product shares) because it is
policy these five products happen to agree on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..messages import Bid, MarketRequest, Rejected, RejectReason
from ..metering import metering_point
from ..settlement import IntervalSettlement, settle_by_rule, verify_against_baseline
from .base import Market, Product, iter_awards_of
from .params import Param, read_params
from .validation import check_declared_baseline


def dispatch_param(value: str) -> Param:
    return Param(
        "dispatch",
        str,
        value,
        "how sellers deliver: 'on_award' (firm: deliver what is awarded) or "
        "'on_activation' (option: deliver only what the buyer activates); fixed by the product",
        choices=(value,),
    )


class TermsProduct(Product):
    """A product with declared params, sellers' declared baselines and per-seller metering."""

    PARAMS: tuple[Param, ...] = ()
    feeder_only = True  # the market must name a feeder, not '*'
    declared_baseline = "required"  # 'required', 'optional' (checked if given) or 'ignored'

    # -- terms ------------------------------------------------------------------------
    @classmethod
    def read_terms(cls, req: MarketRequest) -> dict[str, Any]:
        return cls.complete_terms(req, read_params(req.product_id, req.params, cls.PARAMS))

    @classmethod
    def complete_terms(cls, req: MarketRequest, terms: dict[str, Any]) -> dict[str, Any]:
        """Fill defaults that depend on the request and check params against each other."""
        return terms

    def bid_request_params(self, req: MarketRequest) -> dict[str, str | float | int | bool]:
        market = self.markets.get(req.market_id)
        return dict(market.terms) if market is not None else {}

    def check_request(self, req: MarketRequest) -> None:
        if self.feeder_only and req.location == "*":
            raise Rejected(
                RejectReason.OUT_OF_RANGE, f"{self.product_id} needs a concrete location (a feeder), not '*'"
            )

    # -- bids -------------------------------------------------------------------------
    def check_bid(self, market: Market, bid: Bid) -> None:
        req = market.request
        location = bid.location
        if location and location != req.location and req.location != "*":
            raise Rejected(
                RejectReason.OUT_OF_RANGE,
                f"bid location {bid.location!r} is not the market's {req.location!r}",
            )
        declared = None
        mode = self.declared_baseline
        if mode == "required" or (mode == "optional" and bid.baseline_kw):
            declared = check_declared_baseline(self.product_id, req, bid, market.baselines.get(bid.sender))
        self.check_product_bid(market, bid)
        if declared is not None:
            market.baselines[bid.sender] = declared

    def check_product_bid(self, market: Market, bid: Bid) -> None:
        """Product-specific checks (the declared baseline, if any, is already checked); raise Rejected."""

    # -- awards and metering --------------------------------------------------------------
    @staticmethod
    def awarded_sellers(market: Market) -> list[str]:
        return sorted({a.recipient for a in market.awards if a.awarded})

    @staticmethod
    def ordered_kw(market: Market, seller: str) -> list[float]:
        n = market.request.n_intervals
        return [sum(a.accepted_kw[i] for a in iter_awards_of(market, seller)) for i in range(n)]

    @staticmethod
    def award_payments(market: Market, seller: str) -> list[float]:
        """DKK per interval that the seller's awards pay (accepted energy x award price)."""
        n, h = market.request.n_intervals, market.hours
        return [sum(a.accepted_kw[i] * a.prices[i] * h for a in iter_awards_of(market, seller)) for i in range(n)]

    @classmethod
    def award_prices(cls, market: Market, seller: str) -> list[float]:
        """DKK/kWh per interval the seller's awards pay: their payment / accepted energy (kWh-weighted when
        several awards of the seller, e.g. a block paid its own price, share an interval)."""
        h = market.hours
        pay, ordered = cls.award_payments(market, seller), cls.ordered_kw(market, seller)
        return [p / (q * h) if q > 0 else 0.0 for p, q in zip(pay, ordered, strict=True)]

    def settle_seller(
        self,
        market: Market,
        seller: str,
        baseline_kw: Sequence[float | None],
        *,
        ordered_kw: Sequence[float] | None = None,
        energy_price: Sequence[float] | None = None,
        fixed_dkk: Sequence[float] | None = None,
        metered_kw: Sequence[float | None] | None = None,
        gaps_where_ordered: bool = False,
    ) -> IntervalSettlement:
        """One seller under the product's settlement rule: the change from ``baseline_kw`` verified on the
        meter, paid at ``energy_price`` (default: the award's prices) on ``ordered_kw`` (default: the
        awards), penalised or settled at the imbalance price as :func:`flech_sim.settlement.settle_by_rule`
        says. ``gaps_where_ordered``: a meter gap counts only where something was ordered (an option)."""
        req = market.request
        ordered = list(ordered_kw) if ordered_kw is not None else self.ordered_kw(market, seller)
        change, gaps = verify_against_baseline(
            direction=req.direction,
            ordered_kw=ordered,
            baseline_kw=baseline_kw,
            metered_kw=metered_kw if metered_kw is not None else self.metered_kw(market, seller),
            gap_rule=self.s.settlement.gap_rule,
            signed=True,
        )
        if gaps_where_ordered:
            gaps = tuple(g and q > 0 for g, q in zip(gaps, ordered, strict=True))
        spread = None
        if self.settlement_rule == "imbalance":
            prices = self.s.imbalance_prices
            if prices is None:
                raise NotImplementedError("the imbalance rule needs the run's imbalance prices")
            spread = [
                prices.spread(req.direction, market.interval_start(i), req.interval_minutes)
                for i in range(req.n_intervals)
            ]
        return settle_by_rule(
            self.settlement_rule,
            hours=market.hours,
            ordered_kw=ordered,
            change_kw=change,
            gaps=gaps,
            energy_price=energy_price if energy_price is not None else self.award_prices(market, seller),
            penalty_price=market.penalty_price,
            fixed_dkk=fixed_dkk,
            imbalance_spread=spread,
        )

    def seller_points(self, market: Market, seller: str) -> list[str]:
        """Metering points settled for a seller: ``<seller>@<location>`` of the market's feeder."""
        return [metering_point(seller, market.request.location)]

    def meter_points(self, market: Market) -> list[str]:
        return sorted({p for s in self.awarded_sellers(market) for p in self.seller_points(market, s)})

    def metered_kw(self, market: Market, seller: str) -> list[float | None]:
        """Sum over the seller's points, per interval; None where any point has a gap."""
        req = market.request
        points = self.seller_points(market, seller)
        out: list[float | None] = []
        for i in range(req.n_intervals):
            vals = [self.s.meter.average_kw(p, market.interval_start(i), req.interval_minutes) for p in points]
            out.append(None if any(v is None for v in vals) else float(sum(vals)))  # type: ignore[arg-type]
        return out
