"""BL (baseline service): clearing through the core, the platform's baselines, and settlement.

Every expected number is worked by hand in the comment above it. Intervals are 60 min
(kW = kWh). Meter data is published at 15-minute resolution.
"""

from __future__ import annotations

import pytest

from flech_sim.baselines import Baseline, BaselineSpec, compute, meter_before_after, rolling_average, x_of_y
from flech_sim.messages import BidRequest, RejectReason
from tests.least_cost_cases import LEAST_COST_CASES
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

DAY = 1440


@pytest.fixture
def make_scenario():  # type: ignore[no-untyped-def]
    return all_products_scenario


# BL clears as SRP does: the same hand-worked books, sent as BL bids (which need no declared baseline)
CASES = {k: LEAST_COST_CASES[k] for k in ("merit_order", "thin", "tie_arrival", "block_rejected", "block_overshoots")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_worked_bl_clearing(harness, name: str) -> None:  # type: ignore[no-untyped-def]
    h, case = harness, CASES[name]
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=case["need"], product="BL")))
    for seller, bid_id, price, qty, block, minute in case["bids"]:
        h.at(
            minute,
            lambda s=seller, b=bid_id, p=price, q=qty, k=block: h.send(
                s, bid(h, s, b, p, q, product="BL", block=k, baseline=())
            ),
        )
    h.run(61)
    got = awards(h)
    assert sorted(got) == sorted(case["accepted"])
    for _seller, bid_id, price, _qty, _block, _minute in case["bids"]:
        assert got[bid_id].accepted_kw == pytest.approx(case["accepted"][bid_id]), bid_id
        assert got[bid_id].prices == tuple(price for _ in case["need"])  # pay-as-bid
    res = result(h)
    assert res.status == "optimal"
    assert res.cost_dkk == pytest.approx(case["cost"])
    assert res.clearing_price == pytest.approx(case["price"])
    assert res.unmet_kw == pytest.approx(case["unmet"])


def test_terms_in_the_bid_request_and_bad_methods(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    h.at(0, lambda: h.send("dso-1", h.request("m1", product="BL", params={"baseline": "rolling_average"})))
    h.at(0, lambda: h.send("dso-1", h.request("m2", product="BL", params={"baseline": "yesterday"})))
    h.at(0, lambda: h.send("dso-1", h.request("m3", product="BL", params={"baseline_x": 6})))  # x > y = 5
    h.at(0, lambda: h.send("dso-1", h.request("m4", product="BL", params={"baseline_fallback": "declared"})))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 0.5, (10.0,), product="BL", market_id="m4", baseline=())))
    h.run(6)
    br = next(m for m in received(h, "agg-a", BidRequest) if m.market_id == "m1")
    assert br.params == {
        "baseline": "rolling_average",
        "baseline_x": 4,
        "baseline_y": 5,
        "baseline_days": 10,
        "baseline_min_days": 5,
        "baseline_before_minutes": 60,
        "baseline_after_minutes": 60,
        "baseline_fallback": "meter_before_after",
        "dispatch": "on_award",
        "settlement": "delivered_plus_penalty",  # the rule in force, for sellers to price a shortfall
    }
    r2, r3 = rejections(h, "dso-1")
    assert r2.reason == r3.reason == RejectReason.OUT_OF_RANGE
    assert "baseline" in r2.detail and "x <= y" in r3.detail
    (r4,) = rejections(h, "agg-a")
    assert "declared" in r4.detail


DELIVERY = 5 * DAY + 17 * 60  # day 5, 17:00


def _history(h, point: str, days_values: dict[int, float]) -> None:  # type: ignore[no-untyped-def]
    """The hour 17:00-18:00 of earlier days, published at minute 10."""
    for d, v in days_values.items():
        h.at(10, lambda d=d, v=v: h.send("datahub", meter(h, point, DELIVERY - d * DAY, [v] * 4)))


def test_bl_settles_on_the_platform_baseline_with_a_recorded_fallback(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    # need 100 in hour 17-18 of day 5; x_of_y with X = 2, Y = 3. A 60 @0.5 (declares 900: ignored), B 60 @1.0.
    # Cleared: A 60 (30 DKK), B 40 (40 DKK).
    h.at(
        0,
        lambda: h.send(
            "dso-1",
            h.request(
                "m1",
                need=(100.0,),
                product="BL",
                delivery_start=DELIVERY,
                params={"baseline": "x_of_y", "baseline_x": 2, "baseline_y": 3},
            ),
        ),
    )
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 0.5, (60.0,), product="BL", baseline=(900.0,))))
    h.at(5, lambda: h.send("agg-b", bid(h, "agg-b", "B", 1.0, (60.0,), product="BL", baseline=())))
    # A's history: days -1, -2, -3 at 500, 480, 520: the 2 highest are 520 and 500 -> baseline 510.
    _history(h, "agg-a@feeder-1", {1: 500.0, 2: 480.0, 3: 520.0})
    # B has one day only (1 < X = 2): fallback meter_before_after = mean of the hour before (300) and the hour
    # after (320) = 310, recorded as a fallback.
    _history(h, "agg-b@feeder-1", {1: 290.0})
    # Day 5, 16:00-19:00: A 500 / 460 / 500; B 300 / 280 / 320.
    h.at(
        DELIVERY + DAY,
        lambda: h.send("datahub", meter(h, "agg-a@feeder-1", DELIVERY - 60, [500.0] * 4 + [460.0] * 4 + [500.0] * 4)),
    )
    h.at(
        DELIVERY + DAY,
        lambda: h.send("datahub", meter(h, "agg-b@feeder-1", DELIVERY - 60, [300.0] * 4 + [280.0] * 4 + [320.0] * 4)),
    )
    h.run(DELIVERY + DAY + 1)
    sts = statements(h)
    penalty = 1.5 * 3.0
    # BL's default rule delivered_plus_penalty: the bid price on delivered kWh, the shortfall penalised.
    # A: baseline 510 - metered 460 = 50 of 60: payment 50 x 0.5 = 25, penalty 10 x 4.5 = 45, net -20.
    assert sts["agg-a"].delivered_kwh == pytest.approx((50.0,)) and sts["agg-a"].net_dkk == pytest.approx((-20.0,))
    # B: baseline 310 - 280 = 30 of 40: payment 30 x 1.0 = 30, penalty 45, net -15.
    assert sts["agg-b"].delivered_kwh == pytest.approx((30.0,)) and sts["agg-b"].payment_dkk == pytest.approx((30.0,))
    assert sts["agg-b"].penalty_dkk == pytest.approx((10 * penalty,))
    assert sts["agg-b"].net_dkk == pytest.approx((-15.0,))
    assert sts["dso-1"].net_dkk == pytest.approx((35.0,))
    assert_conserved(sts)
    assert "agg-b: baseline meter_before_after" in h.core.products["BL"].markets["m1"].note
    rows = {r["seller"]: r for r in table(h, "baselines")}
    assert (rows["agg-a"]["used"], rows["agg-a"]["fallback"], rows["agg-a"]["baseline_kw"]) == ("x_of_y", False, 510.0)
    assert (rows["agg-b"]["method"], rows["agg-b"]["used"], rows["agg-b"]["fallback"]) == (
        "x_of_y",
        "meter_before_after",
        True,
    )
    assert rows["agg-b"]["baseline_kw"] == pytest.approx(310.0)


def test_no_delivery_fallback_counts_nothing(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    # rolling_average needs 5 complete days; there are none, and the fallback is 'no_delivery':
    # A 10 kW @0.5 delivers nothing, so is paid nothing, and is penalised 10 x 4.5 = 45: net -45.
    h.at(
        0,
        lambda: h.send(
            "dso-1",
            h.request(
                "m1",
                need=(10.0,),
                product="BL",
                delivery_start=DELIVERY,
                params={"baseline": "rolling_average", "baseline_fallback": "no_delivery"},
            ),
        ),
    )
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 0.5, (10.0,), product="BL", baseline=())))
    h.at(DELIVERY + DAY, lambda: h.send("datahub", meter(h, "agg-a@feeder-1", DELIVERY, [100.0] * 4)))
    h.run(DELIVERY + DAY + 1)
    sts = statements(h)
    assert sts["agg-a"].delivered_kwh == (0.0,) and sts["agg-a"].net_dkk == pytest.approx((-45.0,))
    assert sts["agg-a"].meter_gap == (False,)
    (row,) = table(h, "baselines")
    assert row["used"] == "none" and row["baseline_kw"] is None and "5 needed" in row["detail"]


# == the baseline methods on their own (pure functions) ======================================


def _reader(series: dict[int, float | None], step: int = 15):  # type: ignore[no-untyped-def]
    def read(start: int, minutes: int) -> float | None:
        vals = [series.get(t) for t in range(start, start + minutes, step)]
        return None if any(v is None for v in vals) else sum(vals) / len(vals)  # type: ignore[arg-type, misc]

    return read


def _days(values: dict[int, list[float | None]], start: int = DELIVERY, step: int = 15) -> dict[int, float | None]:
    """Day offset d -> readings from start - d days (d = 0: the delivery day)."""
    out: dict[int, float | None] = {}
    for d, vals in values.items():
        for i, v in enumerate(vals):
            out[start - d * DAY + i * step] = v
    return out


def test_x_of_y_picks_the_highest_complete_days() -> None:
    # two 30-min intervals (2 readings each). Day -2 has a gap: skipped. Complete: -1 (mean 100), -3 (mean 130),
    # -4 (mean 90). High 2 of 4: days -3 and -1 -> per interval ((140 + 100)/2, (120 + 100)/2) = (120, 110).
    series = _days({1: [100, 100, 100, 100], 2: [500, None, 500, 500], 3: [140, 140, 120, 120], 4: [90] * 4})
    values, detail = x_of_y(_reader(series), DELIVERY, 30, 2, x=2, y=4)
    assert values == pytest.approx((120.0, 110.0)) and "days -1, -3" in detail
    assert x_of_y(_reader(series), DELIVERY, 30, 2, x=4, y=4)[0] is None


def test_rolling_average_and_meter_before_after() -> None:
    series = _days({1: [100.0] * 4, 2: [200.0] * 4, 3: [None] * 4})
    values, _ = rolling_average(_reader(series), DELIVERY, 60, 1, days=3, min_days=2)
    assert values == pytest.approx((150.0,))  # days -1 and -2; day -3 is a gap
    assert rolling_average(_reader(series), DELIVERY, 60, 1, days=3, min_days=3)[0] is None
    # before 60 min at 300, after 30 min at 330: minute-weighted (300*60 + 330*30)/90 = 310, flat
    around = {DELIVERY - 60 + 15 * i: 300.0 for i in range(4)} | {DELIVERY + 120 + 15 * i: 330.0 for i in range(2)}
    values, _ = meter_before_after(_reader(around), DELIVERY, 60, 2, 60, 30)
    assert values == pytest.approx((310.0, 310.0))
    assert meter_before_after(_reader(around), DELIVERY, 60, 2, 60, 60)[0] is None  # after-hour incomplete


def test_fallback_chain_is_declared_and_recorded() -> None:
    empty = _reader({})
    b = compute(empty, BaselineSpec(fallback="declared"), DELIVERY, 60, 2, declared=(7.0, 8.0))
    assert b == Baseline("x_of_y", "declared", (7.0, 8.0), True, b.detail) and "declared" in b.detail
    b = compute(empty, BaselineSpec(fallback="declared"), DELIVERY, 60, 2)  # nothing declared
    assert b.used == "none" and b.values == (None, None)
    b = compute(empty, BaselineSpec(), DELIVERY, 60, 2)  # default fallback meter_before_after, also short
    assert b.used == "none" and b.fallback
    with pytest.raises(ValueError, match="unknown baseline method"):
        BaselineSpec(method="yesterday")


def test_inflating_the_days_before_inflates_the_baseline() -> None:
    """The manipulation the EcoGrid 2.0 studies warn about: 10-of-10 rolling average, honest vs inflated."""
    honest = _days({d: [100.0] * 4 for d in range(1, 11)})
    inflated = _days({d: [100.0 if d > 3 else 160.0] * 4 for d in range(1, 11)})
    spec = BaselineSpec(method="rolling_average", days=10, min_days=10)
    b0 = compute(_reader(honest), spec, DELIVERY, 60, 1).values[0]
    b1 = compute(_reader(inflated), spec, DELIVERY, 60, 1).values[0]
    assert b0 == pytest.approx(100.0) and b1 == pytest.approx(118.0)  # (7 x 100 + 3 x 160) / 10
