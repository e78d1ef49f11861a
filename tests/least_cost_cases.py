"""Hand-worked least-cost books, shared by the products that clear by least cost, pay-as-bid
(SRP and BL, whose clearing is SRP's): each product runs them through its own core path.

Every expected number is worked out by hand in the comment above it. Intervals are 60 min,
so kW accepted equals kWh, and payment = kWh x price.
"""

from __future__ import annotations

from typing import Any

# (seller, bid_id, price, quantities, block, minute sent); ties at equal price rank by arrival at the platform
LEAST_COST_CASES: dict[str, dict[str, Any]] = {
    # need 100: cheapest first. A1 60 @0.5, A2 40 of 60 @0.8, B1 @1.0 nothing.
    # cost 60*0.5 + 40*0.8 = 62 DKK; marginal price 0.8.
    "merit_order": dict(
        need=(100.0,),
        bids=[
            ("agg-a", "A1", 0.5, (60.0,), False, 5),
            ("agg-a", "A2", 0.8, (60.0,), False, 5),
            ("agg-b", "B1", 1.0, (60.0,), False, 5),
        ],
        accepted={"A1": (60.0,), "A2": (40.0,), "B1": (0.0,)},
        cost=62.0,
        price=(0.8,),
        unmet=(0.0,),
    ),
    # thin market: everything offered is taken, the rest stays unmet (priced at the cap 3.0 in the objective).
    # cost 1.0*30*2 + 2.0*20 = 100; unmet (50, 70).
    "thin": dict(
        need=(100.0, 100.0),
        bids=[("agg-a", "A1", 1.0, (30.0, 30.0), False, 5), ("agg-b", "B1", 2.0, (20.0, 0.0), False, 6)],
        accepted={"A1": (30.0, 30.0), "B1": (20.0, 0.0)},
        cost=100.0,
        price=(2.0, 1.0),
        unmet=(50.0, 70.0),
    ),
    # tie on price: the earlier bid (B1, minute 5) is served first: B1 40, A1 10. cost 50.
    "tie_time": dict(
        need=(50.0,),
        bids=[("agg-a", "A1", 1.0, (40.0,), False, 10), ("agg-b", "B1", 1.0, (40.0,), False, 5)],
        accepted={"A1": (10.0,), "B1": (40.0,)},
        cost=50.0,
        price=(1.0,),
        unmet=(0.0,),
    ),
    # tie on price within one minute: arrival order at the platform decides (b-x arrived first, although
    # 'a-y' < 'b-x'): b-x 40, a-y 10. cost 50.
    "tie_arrival": dict(
        need=(50.0,),
        bids=[("agg-b", "b-x", 1.0, (40.0,), False, 5), ("agg-a", "a-y", 1.0, (40.0,), False, 5)],
        accepted={"a-y": (10.0,), "b-x": (40.0,)},
        cost=50.0,
        price=(1.0,),
        unmet=(0.0,),
    ),
    # block rejected: with block C (80/80 @1.2) + 20 of A: 2*(96+18) = 228; without: A 50 + B 50 per interval
    # = 2*(45+55) = 200, cheaper, so C is not taken.
    "block_rejected": dict(
        need=(100.0, 100.0),
        bids=[
            ("agg-b", "C", 1.2, (80.0, 80.0), True, 5),
            ("agg-a", "A", 0.9, (50.0, 50.0), False, 5),
            ("agg-a", "B", 1.1, (50.0, 50.0), False, 5),
        ],
        accepted={"C": (0.0, 0.0), "A": (50.0, 50.0), "B": (50.0, 50.0)},
        cost=200.0,
        price=(1.1, 1.1),
        unmet=(0.0, 0.0),
    ),
    # block accepted although it overshoots: block 60 @0.5 = 30 DKK beats 50 @1.0 = 50 DKK.
    "block_overshoots": dict(
        need=(50.0,),
        bids=[("agg-b", "BLK", 0.5, (60.0,), True, 5), ("agg-a", "A", 1.0, (50.0,), False, 5)],
        accepted={"BLK": (60.0,), "A": (0.0,)},
        cost=30.0,
        price=(0.5,),
        unmet=(0.0,),
    ),
}
