"""RSV, an energy-budget reserve: a product written outside flech_sim, with fields and a table of its own.

A seller offers kW per interval *and* an energy budget over the window (it can
hold 50 kW in any interval but only 60 kWh in all), and says how fast it
responds. Everything product-specific lives here and plugs in by configuration
(``products: {RSV: "tests.plugins.reserve:ReserveProduct"}``):

* bid fields (``Bid.attrs``): ``energy_kwh`` (optional, the budget; absent =
  no budget beyond the quantities; at most what the quantities add up to) and
  ``response_minutes`` (optional int, default 0; at most the market's
  ``max_response_minutes``);
* terms: ``max_response_minutes`` (int, default 15);
* clearing: its own algorithm -- merit order (price, then arrival) with each
  bid's budget spread over the intervals first come first served;
* pricing: its own rule ``pay_as_bid_plus_10pc`` (bid price + 10 %, never
  above the cap), registered in :mod:`flech_sim.clearing.pricing`;
* award field (``Award.attrs``): ``energy_kwh`` accepted over the window;
* settlement: delivery taken on trust, the award's payments paid, but a seller
  slower than 5 minutes forfeits 10 % (as a penalty);
* its own table ``rsv_budgets``: one row per bid with its budget and what was used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flech_sim.clearing import ClearingMethod, ClearingOutcome, ClearingProblem, ClearingStatus, SolverOptions
from flech_sim.clearing.pricing import Pricing, register_pricing
from flech_sim.messages import AttrValue, Bid, MarketRequest, Rejected, RejectReason, SettlementStatement
from flech_sim.products.attrs import AttrSpec
from flech_sim.products.base import Market, Product
from flech_sim.products.book import MarketClearing, clear_book, offers
from flech_sim.products.params import Param, read_params
from flech_sim.schema import Column, Table, row
from flech_sim.settlement import IntervalSettlement

RULE = "pay_as_bid_plus_10pc"
SLOW_MINUTES = 5
SLOW_FORFEIT = 0.10


def pay_as_bid_plus_10pc(problem: ClearingProblem, outcome: ClearingOutcome, options: SolverOptions) -> Pricing:
    h = problem.interval_hours
    acc = outcome.accepted_by_bid()
    prices = tuple(tuple(min(1.1 * b.price, problem.price_cap) for _ in problem.need) for b in problem.bids)
    payments = tuple(
        sum(q * p * h for q, p in zip(acc[b.bid_id], pr, strict=True))
        for b, pr in zip(problem.bids, prices, strict=True)
    )
    return Pricing(RULE, tuple(b.bid_id for b in problem.bids), prices, payments, outcome.status)


register_pricing(RULE, pay_as_bid_plus_10pc)

PARAMS = (Param("max_response_minutes", int, 15, "slowest response accepted, minutes", min=0),)
BID_ATTRS = (
    AttrSpec("energy_kwh", float, "energy budget over the window", unit="kWh", min=0.0),
    AttrSpec("response_minutes", int, "minutes to respond", unit="min", min=0, max_term="max_response_minutes"),
)
AWARD_ATTRS = (AttrSpec("energy_kwh", float, "energy accepted over the window", unit="kWh"),)
BUDGETS = Table(
    "rsv_budgets",
    "RSV: every bid's energy budget and what clearing used of it.",
    (
        Column("market_id", "str", "-", "market"),
        Column("bid_id", "str", "-", "the bid"),
        Column("seller", "str", "-", "bidder"),
        Column("energy_kwh", "float", "kWh", "the bid's budget (null = none)", nullable=True),
        Column("accepted_kwh", "float", "kWh", "energy accepted"),
        Column("response_minutes", "int", "min", "declared response time"),
    ),
)


class ReserveProduct(Product):
    BID_ATTRS = BID_ATTRS
    AWARD_ATTRS = AWARD_ATTRS
    TABLES = (BUDGETS,)
    pricing = RULE

    @classmethod
    def read_terms(cls, req: MarketRequest) -> dict[str, Any]:
        return read_params(req.product_id, req.params, PARAMS)

    def bid_request_params(self, req: MarketRequest) -> dict[str, str | float | int | bool]:
        return {"dispatch": "on_award", **self.markets[req.market_id].terms}

    def check_bid(self, market: Market, bid: Bid) -> None:
        budget = bid.attrs.get("energy_kwh")
        most = sum(bid.quantities_kw) * market.hours
        if budget is not None and budget > most + 1e-9:  # type: ignore[operator]
            raise Rejected(
                RejectReason.OUT_OF_RANGE, f"energy_kwh {budget} exceeds what the quantities can deliver ({most:g} kWh)"
            )

    @classmethod
    def clearing_problem(
        cls, req: MarketRequest, terms: Mapping[str, Any], bids: Sequence[Bid], book: Sequence[Bid]
    ) -> ClearingProblem:
        """Budgets cap the quantities the solver sees per bid: spread first come first served over intervals."""
        h = req.interval_minutes / 60.0
        budget = {b.bid_id: b.attrs.get("energy_kwh") for b in book}
        out = []
        for o in offers(bids, book):
            left = budget[o.bid_id]
            if left is None:
                out.append(o)
                continue
            q = []
            for x in o.quantities:
                take = min(x, float(left) / h)  # type: ignore[arg-type]
                q.append(take)
                left = float(left) - take * h  # type: ignore[arg-type]
            out.append(type(o)(o.bid_id, o.seller, o.price, tuple(q), o.block, o.submitted_at))
        return ClearingProblem(req.market_id, tuple(req.need_kw), req.price_cap, h, tuple(out))

    @classmethod
    def solve(
        cls, problem: ClearingProblem, terms: Mapping[str, Any], options: SolverOptions
    ) -> tuple[ClearingProblem, ClearingOutcome]:
        left = list(problem.need)
        by_id: dict[str, tuple[float, ...]] = {}
        for b in sorted(problem.bids, key=lambda b: (b.price, b.submitted_at, b.bid_id)):
            take = tuple(min(q, r) for q, r in zip(b.quantities, left, strict=True))
            left = [r - t for r, t in zip(left, take, strict=True)]
            by_id[b.bid_id] = take
        accepted = tuple(by_id[b.bid_id] for b in problem.bids)
        h = problem.interval_hours
        cost = sum(b.price * sum(a) * h for b, a in zip(problem.bids, accepted, strict=True))
        top = [
            max((b.price for b, a in zip(problem.bids, accepted, strict=True) if a[t] > 0), default=None)
            for t in range(len(left))
        ]
        return problem, ClearingOutcome(
            market_id=problem.market_id,
            status=ClearingStatus.OPTIMAL,
            method=ClearingMethod.MERIT,
            objective=cost + problem.price_cap * sum(left) * h,
            procurement_cost=cost,
            mip_gap=None,
            solve_time_s=0.0,
            accepted=accepted,
            unmet=tuple(left),
            marginal_price=tuple(top),
            dual_price=tuple(None for _ in left),
            bid_ids=tuple(b.bid_id for b in problem.bids),
        )

    @classmethod
    def award_attrs(
        cls,
        req: MarketRequest,
        terms: Mapping[str, Any],
        bids: Sequence[Bid],
        accepted: Mapping[str, tuple[float, ...]],
    ) -> dict[str, dict[str, AttrValue]]:
        h = req.interval_minutes / 60.0
        return {b.bid_id: {"energy_kwh": sum(accepted[b.bid_id]) * h} for b in bids}

    def on_cleared(self, market: Market) -> None:
        by_bid = {b.bid_id: b for b in market.bids}
        for a in market.awards:
            b = by_bid[a.bid_id]
            budget = b.attrs.get("energy_kwh")
            self.s.persistor.append(
                "rsv_budgets",
                row(
                    "rsv_budgets",
                    market_id=market.market_id,
                    bid_id=a.bid_id,
                    seller=a.recipient,
                    energy_kwh=None if budget is None else float(budget),  # type: ignore[arg-type]
                    accepted_kwh=a.attrs["energy_kwh"],
                    response_minutes=int(b.attrs.get("response_minutes", 0)),
                ),
            )

    def settle(self, market: Market) -> list[SettlementStatement]:
        n, h = market.request.n_intervals, market.hours
        slow = {b.sender for b in market.bids if int(b.attrs.get("response_minutes", 0)) > SLOW_MINUTES}
        results = {}
        for seller in sorted({a.recipient for a in market.awards if a.awarded}):
            mine = [a for a in market.awards if a.recipient == seller]
            ordered = tuple(sum(a.accepted_kw[i] for a in mine) * h for i in range(n))
            pay = tuple(sum(a.accepted_kw[i] * a.prices[i] * h for a in mine) for i in range(n))
            penalty = tuple(SLOW_FORFEIT * p if seller in slow else 0.0 for p in pay)
            results[seller] = IntervalSettlement(ordered, ordered, pay, penalty, (False,) * n)
        return self.issue_statements(market, results)


def clear_market(request: MarketRequest, bids: Sequence[Bid], options: SolverOptions | None = None) -> MarketClearing:
    return clear_book(ReserveProduct, request, bids, options)
