"""SRP -- Scheduled Re-Profiling (iPower / FLECH; bought by a DSO).

A firm change of a portfolio's load profile in a known window, agreed
ahead and delivered without a further call. Bids: kW per interval at one
energy price, divisible or block, with the seller's declared baseline.
Clearing: least cost to cover the requested profile; pay-as-bid.
Verification: delivered = baseline - metered (down), capped at the award;
shortfall penalised.
"""

from __future__ import annotations


from ..messages import Bid, MarketRequest, Rejected, RejectReason, SettlementStatement
from ..metering import metering_point
from ..registry import register_product
from ..settlement import settle_seller
from .base import Market, Product, iter_awards_of


def _finite_numbers(xs: tuple[float, ...]) -> bool:
    try:
        total = sum(xs)
    except TypeError:
        return False
    return total - total == 0


@register_product("SRP")
class SRPProduct(Product):
    pricing = "pay_as_bid"

    def check_request(self, req: MarketRequest) -> None:
        if req.location == "*":
            raise Rejected(RejectReason.OUT_OF_RANGE, "SRP needs a concrete location (a feeder), not '*'")

    def check_bid(self, market: Market, bid: Bid) -> None:
        n = market.request.n_intervals
        if len(bid.baseline_kw) != n or not _finite_numbers(bid.baseline_kw):
            raise Rejected(RejectReason.OUT_OF_RANGE, f"SRP bids must declare baseline_kw: {n} finite values")
        earlier = market.baselines.setdefault(bid.sender, tuple(bid.baseline_kw))
        if earlier != tuple(bid.baseline_kw):
            raise Rejected(RejectReason.OUT_OF_RANGE, "baseline_kw differs from the baseline of your earlier bid in this market")

    def meter_points(self, market: Market) -> list[str]:
        return [metering_point(s, market.request.location) for s in self._awarded_sellers(market)]

    def _awarded_sellers(self, market: Market) -> list[str]:
        return sorted({a.recipient for a in market.awards if a.awarded})

    def settle(self, market: Market) -> list[SettlementStatement]:
        req = market.request
        h = market.hours
        n = req.n_intervals
        starts = tuple(market.interval_start(i) for i in range(n))
        sellers = self._awarded_sellers(market)
        statements: list[SettlementStatement] = []
        totals = [[0.0] * n for _ in range(4)]  # ordered, delivered, payment, penalty
        gaps = [False] * n
        for seller in sellers:
            awards = list(iter_awards_of(market, seller))
            ordered = [sum(a.accepted_kw[i] for a in awards) for i in range(n)]
            payment = [sum(a.accepted_kw[i] * a.prices[i] * h for a in awards) for i in range(n)]
            point = metering_point(seller, req.location)
            metered = [self.s.meter.average_kw(point, t, req.interval_minutes) for t in starts]
            res = settle_seller(
                direction=req.direction, hours=h, ordered_kw=ordered, payment_dkk=payment,
                baseline_kw=market.baselines[seller], metered_kw=metered, penalty_price=market.penalty_price,
                gap_rule=self.s.settlement.gap_rule,
            )
            statements.append(self.statement(
                market, seller, "seller", req.sender, interval_start=starts, ordered_kwh=res.ordered_kwh,
                delivered_kwh=res.delivered_kwh, payment_dkk=res.payment_dkk, penalty_dkk=res.penalty_dkk,
                net_dkk=res.net_dkk, meter_gap=res.gap,
            ))
            for k, vals in enumerate((res.ordered_kwh, res.delivered_kwh, res.payment_dkk, res.penalty_dkk)):
                for i, v in enumerate(vals):
                    totals[k][i] += v
            gaps = [g or x for g, x in zip(gaps, res.gap, strict=True)]
        if sellers:
            ordered_t, delivered_t, payment_t, penalty_t = (tuple(t) for t in totals)
            statements.append(self.statement(
                market, req.sender, "buyer", ",".join(sellers), interval_start=starts, ordered_kwh=ordered_t,
                delivered_kwh=delivered_t, payment_dkk=payment_t, penalty_dkk=penalty_t,
                net_dkk=tuple(q - p for p, q in zip(payment_t, penalty_t, strict=True)), meter_gap=tuple(gaps),
            ))
        return statements
