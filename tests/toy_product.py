"""A third-party product, plugged in without touching the core (used by test_registry).

"Take-it-all": the buyer pays every seller its bid price for whatever it
offered up to the need, first come first served, and delivery is taken on
trust (no metering). Clearing here is a custom algorithm, not the solver,
which the seed explicitly allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flech_sim.clearing import ClearingMethod, ClearingOutcome, ClearingProblem, ClearingStatus, SolverOptions
from flech_sim.messages import SettlementStatement
from flech_sim.products.base import Market, Product


class ToyProduct(Product):
    @classmethod
    def solve(
        cls, problem: ClearingProblem, terms: Mapping[str, Any], options: SolverOptions
    ) -> tuple[ClearingProblem, ClearingOutcome]:
        left = list(problem.need)
        accepted = []
        for b in sorted(problem.bids, key=lambda b: (b.submitted_at, b.bid_id)):
            take = tuple(min(q, r) for q, r in zip(b.quantities, left, strict=True))
            left = [r - t for r, t in zip(left, take, strict=True)]
            accepted.append(take)
        cost = sum(b.price * sum(a) * problem.interval_hours for b, a in zip(problem.bids, accepted, strict=True))
        return problem, ClearingOutcome(
            market_id=problem.market_id,
            status=ClearingStatus.OPTIMAL,
            method=ClearingMethod.MERIT,
            objective=cost,
            procurement_cost=cost,
            mip_gap=None,
            solve_time_s=0.0,
            accepted=tuple(accepted),
            unmet=tuple(left),
            marginal_price=tuple(None for _ in left),
            dual_price=tuple(None for _ in left),
            bid_ids=tuple(b.bid_id for b in problem.bids),
            message="first come, first served",
        )

    def settle(self, market: Market) -> list[SettlementStatement]:
        out = []
        starts = tuple(market.interval_start(i) for i in range(market.request.n_intervals))
        for a in market.awards:
            if not a.awarded:
                continue
            kwh = tuple(q * market.hours for q in a.accepted_kw)
            pay = tuple(k * p for k, p in zip(kwh, a.prices, strict=True))
            zero = tuple(0.0 for _ in kwh)
            out.append(
                self.statement(
                    market,
                    a.recipient,
                    "seller",
                    market.request.sender,
                    interval_start=starts,
                    ordered_kwh=kwh,
                    delivered_kwh=kwh,
                    payment_dkk=pay,
                    penalty_dkk=zero,
                    net_dkk=pay,
                )
            )
            out.append(
                self.statement(
                    market,
                    market.request.sender,
                    "buyer",
                    a.recipient,
                    interval_start=starts,
                    ordered_kwh=kwh,
                    delivered_kwh=kwh,
                    payment_dkk=pay,
                    penalty_dkk=zero,
                    net_dkk=tuple(-x for x in pay),
                )
            )
        return out
