"""CL (capacity limitation) through the whole core: pay-as-bid and VCG clearing, caps, settlement.

Every expected number is worked by hand in the comment above it. Intervals are 60 min
(kW = kWh). A bid declares its expected consumption E (baseline_kw) and offers a
reduction R (quantities_kw); its cap is E - accepted R. The buyer's cap is 3.0 DKK/kWh.
"""

from __future__ import annotations

import pytest

from flech_sim.messages import Direction, RejectReason
from tests.products_support import (
    all_products_scenario,
    assert_conserved,
    awards,
    bid,
    meter,
    rejections,
    result,
    statements,
)


@pytest.fixture
def make_scenario():  # type: ignore[no-untyped-def]
    return all_products_scenario


# (seller, bid_id, price, reduction kW, block, minute sent, expected consumption E)
CASES = {
    # pay-as-bid merit order: A1 60 @0.5, A2 40 of 60 @0.8, B1 nothing. Cost 30 + 32 = 62.
    # agg-a's cap: 500 - (60 + 40) = 400 in its two awards.
    "merit_pay_as_bid": dict(
        need=(100.0,),
        pricing="pay_as_bid",
        bids=[
            ("agg-a", "A1", 0.5, (60.0,), False, 5, 500.0),
            ("agg-a", "A2", 0.8, (60.0,), False, 5, 500.0),
            ("agg-b", "B1", 1.0, (60.0,), False, 5, 300.0),
        ],
        accepted={"A1": (60.0,), "A2": (40.0,), "B1": (0.0,)},
        prices={"A1": 0.5, "A2": 0.8, "B1": 1.0},
        caps={"A1": (400.0,), "A2": (400.0,), "B1": ()},
        cost=62.0,
        unmet=(0.0,),
    ),
    # VCG, two sellers. Optimum A 60 @0.5 + B 40 @1.0: C* = 30 + 40 = 70.
    # Without A: B 60 (60 DKK) + 40 unmet at 3.0 (120) = 180; others' cost with A = 70 - 30 = 40 -> P_A = 140,
    # 140/60 = 2.3333 DKK/kWh. Without B: A 60 (30) + 40 unmet (120) = 150; others with B = 70 - 40 = 30 ->
    # P_B = 120 = 40 kWh x 3.0 (the marginal winner is paid the cap). Total 260. Both >= their bids (30, 40).
    "vcg_two_sellers": dict(
        need=(100.0,),
        pricing="vcg",
        bids=[("agg-a", "A", 0.5, (60.0,), False, 5, 500.0), ("agg-b", "B", 1.0, (60.0,), False, 5, 300.0)],
        accepted={"A": (60.0,), "B": (40.0,)},
        prices={"A": 140.0 / 60.0, "B": 3.0},
        caps={"A": (440.0,), "B": (260.0,)},
        cost=260.0,
        unmet=(0.0,),
    ),
    # VCG with a block that over-covers: need 50; block A 60 @0.5 (30 DKK) beats B 50 @1.0 (50 DKK). C* = 30.
    # Without A: B 50 = 50; others' cost with A = 30 - 30 = 0 -> P_A = 50, 50/60 = 0.8333 DKK/kWh. B loses.
    "vcg_block": dict(
        need=(50.0,),
        pricing="vcg",
        bids=[("agg-a", "A", 0.5, (60.0,), True, 5, 500.0), ("agg-b", "B", 1.0, (50.0,), False, 5, 300.0)],
        accepted={"A": (60.0,), "B": (0.0,)},
        prices={"A": 50.0 / 60.0, "B": 1.0},
        caps={"A": (440.0,), "B": ()},
        cost=50.0,
        unmet=(0.0,),
    ),
    # tie on price: the earlier bid (B1, minute 5) first: B1 40, A1 10. Cost 50.
    "tie_earlier_bid": dict(
        need=(50.0,),
        pricing="pay_as_bid",
        bids=[("agg-a", "A1", 1.0, (40.0,), False, 10, 500.0), ("agg-b", "B1", 1.0, (40.0,), False, 5, 300.0)],
        accepted={"A1": (10.0,), "B1": (40.0,)},
        prices={"A1": 1.0, "B1": 1.0},
        caps={"A1": (490.0,), "B1": (260.0,)},
        cost=50.0,
        unmet=(0.0,),
    ),
    # thin, VCG: only A 30/30 @1.0 against need 100/100. C* = 60 + 3.0 x 140 = 480. Without A: 3.0 x 200 = 600;
    # others' cost with A = 480 - 60 = 420 -> P_A = 180 = 60 kWh x 3.0 (a monopolist is paid the cap).
    "thin_vcg": dict(
        need=(100.0, 100.0),
        pricing="vcg",
        bids=[("agg-a", "A", 1.0, (30.0, 30.0), False, 5, 200.0)],
        accepted={"A": (30.0, 30.0)},
        prices={"A": 3.0},
        caps={"A": (170.0, 170.0)},
        cost=180.0,
        unmet=(70.0, 70.0),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_worked_cl_clearing(harness, name: str) -> None:  # type: ignore[no-untyped-def]
    h, case = harness, CASES[name]
    n = len(case["need"])
    h.at(
        0,
        lambda: h.send("dso-1", h.request("m1", need=case["need"], product="CL", params={"pricing": case["pricing"]})),
    )
    for seller, bid_id, price, qty, block, minute, e in case["bids"]:
        h.at(
            minute,
            lambda s=seller, b=bid_id, p=price, q=qty, k=block, e=e: h.send(
                s, bid(h, s, b, p, q, product="CL", block=k, baseline=(e,) * n)
            ),
        )
    h.run(61)
    got = awards(h)
    assert sorted(got) == sorted(case["accepted"])
    for bid_id, expected in case["accepted"].items():
        a = got[bid_id]
        assert a.accepted_kw == pytest.approx(expected), bid_id
        assert a.prices == pytest.approx((case["prices"][bid_id],) * n), bid_id
        assert a.attrs.get("cap_kw", ()) == pytest.approx(case["caps"][bid_id]), bid_id
        assert a.payment_dkk == pytest.approx(sum(a.accepted_kw) * case["prices"][bid_id])
        if a.awarded:  # individual rationality: never below the bid
            own = next(b for b in case["bids"] if b[1] == bid_id)
            assert a.payment_dkk >= sum(a.accepted_kw) * own[2] - 1e-9
    res = result(h)
    assert res.status == "optimal"
    assert res.cost_dkk == pytest.approx(case["cost"])
    assert res.unmet_kw == pytest.approx(case["unmet"])


def test_reduction_above_expected_consumption_is_refused(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(100.0,), product="CL")))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A1", 0.5, (80.0,), product="CL", baseline=(100.0,))))
    # 80 + 30 > 100: the cap would be negative
    h.at(6, lambda: h.send("agg-a", bid(h, "agg-a", "A2", 0.5, (30.0,), product="CL", baseline=(100.0,))))
    h.at(6, lambda: h.send("agg-b", bid(h, "agg-b", "B1", 0.5, (30.0,), product="CL", baseline=())))
    h.at(7, lambda: h.send("dso-1", h.request("m2", need=(100.0,), product="CL", params={"pricing": "vickrey"})))
    h.at(7, lambda: h.send("dso-1", h.request("m3", need=(100.0,), product="CL", direction=Direction.UP)))
    h.at(7, lambda: h.send("dso-1", h.request("m4", need=(100.0,), product="CL", location="*")))
    h.run(8)
    (rej,) = rejections(h, "agg-a")
    assert rej.reason == RejectReason.OUT_OF_RANGE and "cap would be negative" in rej.detail
    (rej_b,) = rejections(h, "agg-b")
    assert "baseline_kw" in rej_b.detail
    rej_m, rej_up, rej_star = rejections(h, "dso-1")
    assert rej_m.reason == RejectReason.OUT_OF_RANGE and "pricing" in rej_m.detail
    assert "direction must be 'down'" in rej_up.detail and "feeder" in rej_star.detail


def test_cl_settlement_penalises_excess_over_the_cap(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    # need (100, 100); A: E 500, R 60 @0.5 -> cap 440; B: E 300, R 40 @1.0 -> cap 260. Both fully accepted.
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(100.0, 100.0), product="CL")))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 0.5, (60.0, 60.0), product="CL", baseline=(500.0, 500.0))))
    h.at(5, lambda: h.send("agg-b", bid(h, "agg-b", "B", 1.0, (40.0, 40.0), product="CL", baseline=(300.0, 300.0))))
    # A metered 430 (under its cap), then 460 (20 over). B metered 250, then a gap (rule no_delivery: all 40 excess).
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-1", 120, [430.0] * 4 + [460.0] * 4)))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-b@feeder-1", 120, [250.0] * 4 + [250.0, None, 250.0, 250.0])))
    h.run(400)
    assert awards(h)["A"].attrs["cap_kw"] == (440.0, 440.0)
    sts = statements(h)
    a, b, dso = sts["agg-a"], sts["agg-b"], sts["dso-1"]
    penalty = 1.5 * 3.0
    # A: payment 30/30; delivered (60, 60 - 20 = 40); penalty (0, 20 x 4.5 = 90); net (30, -60).
    assert a.ordered_kwh == pytest.approx((60.0, 60.0)) and a.delivered_kwh == pytest.approx((60.0, 40.0))
    assert a.penalty_dkk == pytest.approx((0.0, 20 * penalty)) and a.net_dkk == pytest.approx((30.0, -60.0))
    # B: payment 40/40; delivered (40, 0); penalty (0, 40 x 4.5 = 180); net (40, -140); gap in hour 2.
    assert b.delivered_kwh == pytest.approx((40.0, 0.0)) and b.penalty_dkk == pytest.approx((0.0, 180.0))
    assert b.net_dkk == pytest.approx((40.0, -140.0)) and b.meter_gap == (False, True)
    # buyer: -(30 + 40) = -70; -(-60 - 140) = 200
    assert dso.net_dkk == pytest.approx((-70.0, 200.0))
    assert_conserved(sts)


def test_cl_vcg_settlement_pays_the_vcg_price(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    # the vcg_two_sellers case, settled: all compliant; A gets 140, B 120; the buyer pays 260.
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(100.0,), product="CL", params={"pricing": "vcg"})))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 0.5, (60.0,), product="CL", baseline=(500.0,))))
    h.at(5, lambda: h.send("agg-b", bid(h, "agg-b", "B", 1.0, (60.0,), product="CL", baseline=(300.0,))))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-1", 120, [400.0] * 4)))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-b@feeder-1", 120, [260.0] * 4)))
    h.run(400)
    sts = statements(h)
    assert sts["agg-a"].net_dkk == pytest.approx((140.0,)) and sts["agg-b"].net_dkk == pytest.approx((120.0,))
    assert sts["dso-1"].net_dkk == pytest.approx((-260.0,))
    assert_conserved(sts)
