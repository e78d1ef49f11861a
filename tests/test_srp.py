"""Hand-worked SRP markets through the whole core: endpoint -> dispatcher -> SRP -> clearing -> awards.

The books and their hand-worked outcomes are in :mod:`tests.least_cost_cases` (shared
with BL, which clears the same way); the other expected numbers are worked out by hand
in the comment above them. Intervals are 60 min, so kW accepted equals kWh.
"""

from __future__ import annotations

import pytest

from flech_sim.messages import Award, ClearingResult, MeterData, SettlementStatement
from tests.least_cost_cases import LEAST_COST_CASES

CASES = LEAST_COST_CASES


def run_case(h, case):  # type: ignore[no-untyped-def]
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=case["need"])))
    for seller, bid_id, price, qty, block, minute in case["bids"]:
        h.at(minute, lambda s=seller, b=bid_id, p=price, q=qty, k=block: h.send(s, h.bid(s, b, p, q, block=k)))
    h.run(61)
    awards = {m.bid_id: m for p in ("agg-a", "agg-b") for m in h.people[p].inbox if isinstance(m, Award)}
    result = [m for m in h.people["dso-1"].inbox if isinstance(m, ClearingResult)]
    return awards, result


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_worked_srp_clearing(harness, name: str) -> None:  # type: ignore[no-untyped-def]
    case = CASES[name]
    awards, results = run_case(harness, case)
    assert sorted(awards) == sorted(case["accepted"])
    for bid_id, expected in case["accepted"].items():
        assert awards[bid_id].accepted_kw == pytest.approx(expected), bid_id
    for bid in case["bids"]:
        a = awards[bid[1]]
        assert a.prices == tuple(bid[2] for _ in case["need"])  # pay-as-bid
        assert a.payment_dkk == pytest.approx(sum(a.accepted_kw) * bid[2])
    (res,) = results
    assert res.status == "optimal"
    assert res.cost_dkk == pytest.approx(case["cost"])
    assert res.clearing_price == pytest.approx(case["price"])
    assert res.unmet_kw == pytest.approx(case["unmet"])
    assert res.objective_dkk == pytest.approx(case["cost"] + 3.0 * sum(case["unmet"]))


def meter(h, point: str, start: int, values):  # type: ignore[no-untyped-def]
    return MeterData(
        **h.people["datahub"].env_fields("", "METER", int(h.env.now)),
        metering_point=point,
        start=start,
        interval_minutes=15,
        consumption_kw=tuple(values),
    )


def test_settlement_penalises_shortfall_and_conserves_money(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    # need (100, 100) over 120..240; A 60/60 @0.5 (baseline 500/500); B 40/40 @1.0 (baseline 300/300).
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(100.0, 100.0))))
    h.at(5, lambda: h.send("agg-a", h.bid("agg-a", "A", 0.5, (60.0, 60.0), baseline=(500.0, 500.0))))
    h.at(5, lambda: h.send("agg-b", h.bid("agg-b", "B", 1.0, (40.0, 40.0), baseline=(300.0, 300.0))))
    # A metered 450 then 430: delivered 50 (short 10), then 70 capped at 60.
    # B metered 260 in hour 1; hour 2 has a gap -> rule no_delivery: delivered 40, then 0 (short 40).
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-1", 120, [450.0] * 4 + [430.0] * 4)))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-b@feeder-1", 120, [260.0] * 4 + [260.0, None, 260.0, 260.0])))
    h.run(400)
    (st_a,) = [m for m in h.people["agg-a"].inbox if isinstance(m, SettlementStatement)]
    (st_b,) = [m for m in h.people["agg-b"].inbox if isinstance(m, SettlementStatement)]
    (st_dso,) = [m for m in h.people["dso-1"].inbox if isinstance(m, SettlementStatement)]
    penalty = 1.5 * 3.0  # default penalty factor x cap
    # SRP's default rule, delivered_plus_penalty: the bid price is paid on delivered kWh only
    assert st_a.delivered_kwh == pytest.approx((50.0, 60.0))
    assert st_a.payment_dkk == pytest.approx((50 * 0.5, 60 * 0.5))
    assert st_a.penalty_dkk == pytest.approx((10 * penalty, 0.0))
    assert st_a.net_dkk == pytest.approx((25.0 - 45.0, 30.0))
    assert st_b.delivered_kwh == pytest.approx((40.0, 0.0))
    assert st_b.payment_dkk == pytest.approx((40.0, 0.0))
    assert st_b.meter_gap == (False, True)
    assert st_b.penalty_dkk == pytest.approx((0.0, 40 * penalty))
    assert st_dso.party_role == "buyer" and st_dso.counterparty == "agg-a,agg-b"
    assert st_dso.ordered_kwh == pytest.approx((100.0, 100.0))
    assert sum(st_dso.net_dkk) == pytest.approx(-(sum(st_a.net_dkk) + sum(st_b.net_dkk)))
    assert h.core.products["SRP"].markets["m1"].state == "settled"


def test_settles_with_gap_rule_when_meter_data_never_comes(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(10.0,))))
    h.at(5, lambda: h.send("agg-a", h.bid("agg-a", "A", 0.5, (10.0,))))
    h.run(180 + 72 * 60 + 1)  # delivery ends at 180; the platform waits 72 h by default
    (st,) = [m for m in h.people["agg-a"].inbox if isinstance(m, SettlementStatement)]
    assert st.meter_gap == (True,) and st.delivered_kwh == (0.0,)
    m = h.core.products["SRP"].markets["m1"]
    assert m.state == "settled" and "missing meter data" in m.note
