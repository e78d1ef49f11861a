"""mFRR (regulating power) through the whole core: pay-as-clear, minimum size, gate closure, settlement.

Every expected number is worked by hand in the comment above it. Intervals are 15 min
(h = 0.25: kWh = kW / 4); prices in DKK/kWh (0.45 DKK/kWh = 450 DKK/MWh); the market is
system-wide (location '*'), so agg-a, agg-b and agg-c may all bid. Cap 3.0 DKK/kWh.
"""

from __future__ import annotations

import pytest

from flech_sim.messages import BidRequest, RejectReason
from tests.products_support import (
    all_products_scenario,
    assert_conserved,
    awards,
    bid,
    meter,
    received,
    rejections,
    result,
    statements,
    table,
)


@pytest.fixture
def make_scenario():  # type: ignore[no-untyped-def]
    # the hand-checked figures below use a cap-multiple penalty; the imbalance rule (mFRR's default) is
    # checked by hand in tests/test_settlement.py
    return lambda **kw: all_products_scenario(settlement={"rules": {"mFRR": "delivered_plus_penalty"}}, **kw)


def _request(h, need, **kw):  # type: ignore[no-untyped-def]
    return h.request("m1", need=need, product="mFRR", location="*", interval_minutes=15, **kw)


# (seller, bid_id, price, kW per interval, block, minute sent)
CASES = {
    # merit order: A1 1000 @0.30, B1 1000 @0.45, C1 1000 of 1500 @0.60. Pay-as-clear at 0.60 for all:
    # A1 1000 x 0.25 x 0.6 = 150, B1 150, C1 150 -> 450. (Pay-as-bid would be 75 + 112.5 + 150.)
    "pay_as_clear": dict(
        need=(3000.0,),
        bids=[
            ("agg-a", "A1", 0.30, (1000.0,), False, 5),
            ("agg-b", "B1", 0.45, (1000.0,), False, 5),
            ("agg-c", "C1", 0.60, (1500.0,), False, 5),
        ],
        accepted={"A1": (1000.0,), "B1": (1000.0,), "C1": (1000.0,)},
        price=(0.60,),
        cost=450.0,
        unmet=(0.0,),
    ),
    # minimum size on the accepted part (min_bid_kw 1000): need 2500; merit order would take C1 for 500 kW,
    # below the 1 MW minimum, so C1 is withdrawn and the 500 kW stay unmet. A1, B1 1000 each at 0.45:
    # 2000 x 0.25 x 0.45 = 225.
    "accepted_part_below_minimum": dict(
        need=(2500.0,),
        bids=[
            ("agg-a", "A1", 0.30, (1000.0,), False, 5),
            ("agg-b", "B1", 0.45, (1000.0,), False, 5),
            ("agg-c", "C1", 0.60, (1500.0,), False, 5),
        ],
        accepted={"A1": (1000.0,), "B1": (1000.0,), "C1": (0.0,)},
        price=(0.45,),
        cost=225.0,
        unmet=(500.0,),
    ),
    # tie at 0.5: B1 (arrived minute 5) before A1 (minute 10): B1 1500, A1 1000. 2500 x 0.25 x 0.5 = 312.5.
    "tie_earlier_bid": dict(
        need=(2500.0,),
        bids=[("agg-a", "A1", 0.5, (1500.0,), False, 10), ("agg-b", "B1", 0.5, (1500.0,), False, 5)],
        accepted={"A1": (1000.0,), "B1": (1500.0,)},
        price=(0.5,),
        cost=312.5,
        unmet=(0.0,),
    ),
    # a block above a divisible bid left with spare (no paradoxically rejected divisible bid): need 2000.
    # D 1500 @0.30 divisible, BLK 1000 @0.50 all-or-nothing. Without BLK: D 1500 (112.5) + 500 unmet at the cap
    # (500 x 0.25 x 3.0 = 375) = 487.5; with BLK: BLK 125 + D 1000 (75) = 200 -> BLK in, D 1000 of 1500.
    # The highest accepted price is BLK's 0.50, but D has 500 kW spare at 0.30: the uniform price is 0.30 (D is
    # not rejected below it) and BLK is paid its own 0.50 (make-whole). 1000 x 0.25 x 0.3 + 125 = 200.
    "block_above_uniform_price": dict(
        need=(2000.0,),
        bids=[("agg-a", "D", 0.30, (1500.0,), False, 5), ("agg-b", "BLK", 0.50, (1000.0,), True, 5)],
        accepted={"D": (1000.0,), "BLK": (1000.0,)},
        price=(0.30,),
        prices={"BLK": (0.50,)},
        cost=200.0,
        unmet=(0.0,),
    ),
    # linked block over two intervals over-covers: need (1500, 1500); BLK (2000, 2000) @0.35 = 4000 x 0.25 x 0.35
    # = 350 beats D (1500, 1500) @0.50 = 375. BLK only; price 0.35; overshoot 500 forced by the block.
    "block_overshoots": dict(
        need=(1500.0, 1500.0),
        bids=[("agg-b", "BLK", 0.35, (2000.0, 2000.0), True, 5), ("agg-a", "D", 0.50, (1500.0, 1500.0), False, 5)],
        accepted={"BLK": (2000.0, 2000.0), "D": (0.0, 0.0)},
        price=(0.35, 0.35),
        cost=350.0,
        unmet=(0.0, 0.0),
    ),
    # thin: one bid of 1000 @0.3 against 3000: all of it, 2000 unmet; price 0.3; cost 75.
    "thin": dict(
        need=(3000.0,),
        bids=[("agg-c", "C", 0.3, (1000.0,), False, 5)],
        accepted={"C": (1000.0,)},
        price=(0.3,),
        cost=75.0,
        unmet=(2000.0,),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_worked_mfrr_clearing(harness, name: str) -> None:  # type: ignore[no-untyped-def]
    h, case = harness, CASES[name]
    h.at(0, lambda: h.send("dso-1", _request(h, case["need"])))
    for seller, bid_id, price, qty, block, minute in case["bids"]:
        h.at(
            minute,
            lambda s=seller, b=bid_id, p=price, q=qty, k=block: h.send(s, bid(h, s, b, p, q, product="mFRR", block=k)),
        )
    h.run(61)
    got = awards(h)
    assert sorted(got) == sorted(case["accepted"])
    for _seller, bid_id, price, _qty, _block, _minute in case["bids"]:
        a = got[bid_id]
        assert a.accepted_kw == pytest.approx(case["accepted"][bid_id]), bid_id
        # pay-as-clear: everyone the uniform price (a block above it its own)
        assert a.prices == pytest.approx(case.get("prices", {}).get(bid_id, case["price"]))
        if a.awarded:
            assert all(p >= price for p in a.prices)
    res = result(h)
    assert res.status == "optimal"
    assert res.clearing_price == pytest.approx(case["price"])
    assert res.cost_dkk == pytest.approx(case["cost"])
    assert res.unmet_kw == pytest.approx(case["unmet"])
    acts = table(h, "activations")  # the award is the activation order
    assert {(r["bid_id"], r["quantity_kw"]) for r in acts} == {
        (b, q) for b, qs in case["accepted"].items() for q in qs if q > 0
    }


def test_request_rules_and_minimum_bid_size(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    h.at(0, lambda: h.send("dso-1", h.request("hourly", product="mFRR", location="*", interval_minutes=60)))
    h.at(
        0,
        lambda: h.send(
            "dso-1",
            h.request(
                "late-gate", product="mFRR", location="*", interval_minutes=15, gate_close=90, delivery_start=120
            ),
        ),
    )  # 30 min < 45
    h.at(0, lambda: h.send("dso-1", _request(h, (2000.0,))))  # gate 60, delivery 120: 60 min, fine
    h.at(
        0,
        lambda: h.send(
            "dso-1",
            h.request(
                "small", need=(500.0,), product="mFRR", location="*", interval_minutes=15, params={"min_bid_kw": 100.0}
            ),
        ),
    )
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "tiny", 0.3, (999.0,), product="mFRR")))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "ok-small", 0.3, (100.0,), product="mFRR", market_id="small")))
    h.at(
        5, lambda: h.send("agg-c", bid(h, "agg-c", "wrong-feeder", 0.3, (1000.0,), product="mFRR", location="feeder-1"))
    )
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "f1", 0.3, (1000.0,), product="mFRR", location="feeder-1")))
    h.at(6, lambda: h.send("agg-a", bid(h, "agg-a", "f2", 0.3, (1000.0,), product="mFRR", location="feeder-2")))
    h.run(7)
    r_hourly, r_gate = rejections(h, "dso-1")
    assert r_hourly.reason == r_gate.reason == RejectReason.INVALID_TIMES
    assert "15 minutes" in r_hourly.detail and "45 min" in r_gate.detail
    tiny, f2 = rejections(h, "agg-a")
    assert tiny.reason == RejectReason.OUT_OF_RANGE and "below the minimum bid size 1000 kW (1 MW)" in tiny.detail
    assert f2.reason == RejectReason.OUT_OF_RANGE and "differs from your earlier bid" in f2.detail
    (wrong,) = rejections(h, "agg-c")
    assert wrong.reason == RejectReason.NOT_ELIGIBLE
    br = next(m for m in received(h, "agg-b", BidRequest) if m.market_id == "m1")
    assert br.params == {"min_bid_kw": 1000.0, "dispatch": "on_award", "settlement": "delivered_plus_penalty"}


def test_mfrr_settlement_pays_delivered_energy_at_the_clearing_price(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    # need (2000, 2000) over 120..150. A (agg-a, pooled: feeder-1 + feeder-2) 1000 @0.3, baseline 5000;
    # B (agg-b, feeder-1) 1500 @0.5, baseline 3000. Accepted: A 1000, B 1000 in each; clearing price 0.5.
    h.at(0, lambda: h.send("dso-1", _request(h, (2000.0, 2000.0))))
    h.at(
        5,
        lambda: h.send("agg-a", bid(h, "agg-a", "A", 0.3, (1000.0, 1000.0), product="mFRR", baseline=(5000.0, 5000.0))),
    )
    h.at(
        5,
        lambda: h.send(
            "agg-b",
            bid(h, "agg-b", "B", 0.5, (1500.0, 1500.0), product="mFRR", baseline=(3000.0, 3000.0), location="feeder-1"),
        ),
    )
    # A metered: feeder-1 2500, 2500; feeder-2 1600, 2000 -> sums 4100 (delivered 900 of 1000), 4500 (500).
    # B metered 2000 (1000 delivered), 1900 (1100, capped at 1000).
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-1", 120, [2500.0, 2500.0])))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-2", 120, [1600.0, 2000.0])))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-b@feeder-1", 120, [2000.0, 1900.0])))
    h.run(400)
    sts = statements(h)
    a, b = sts["agg-a"], sts["agg-b"]
    # A: ordered (250, 250) kWh; delivered (225, 125); payment 225 x 0.5 = 112.5, 62.5;
    # penalty (25 x 4.5 = 112.5, 125 x 4.5 = 562.5); net (0, -500).
    assert a.ordered_kwh == pytest.approx((250.0, 250.0)) and a.delivered_kwh == pytest.approx((225.0, 125.0))
    assert a.payment_dkk == pytest.approx((112.5, 62.5)) and a.penalty_dkk == pytest.approx((112.5, 562.5))
    assert a.net_dkk == pytest.approx((0.0, -500.0))
    # B: delivered (250, 250); payment 125, 125; no penalty.
    assert b.delivered_kwh == pytest.approx((250.0, 250.0)) and b.net_dkk == pytest.approx((125.0, 125.0))
    # buyer: -(0 + 125) = -125; -(-500 + 125) = 375
    assert sts["dso-1"].net_dkk == pytest.approx((-125.0, 375.0))
    assert_conserved(sts)
    assert "agg-c" not in sts


def test_gap_at_one_pooled_point_is_a_gap(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    h.at(0, lambda: h.send("dso-1", _request(h, (1000.0,))))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 0.3, (1000.0,), product="mFRR", baseline=(5000.0,))))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-1", 120, [2000.0])))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-2", 120, [None])))
    h.run(400)
    st = statements(h)["agg-a"]
    # gap rule no_delivery: nothing delivered, 250 kWh short x 4.5 = 1125
    assert st.meter_gap == (True,) and st.delivered_kwh == (0.0,) and st.penalty_dkk == pytest.approx((1125.0,))
