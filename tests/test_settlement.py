"""Settlement rules, by hand: the pure functions, the imbalance prices, the rule chosen per product in the
scenario reaching the statements and the ``settlements`` rows, and money conserved in a whole run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flech_sim.imbalance_price import ImbalancePrices, generate_premium
from flech_sim.messages import BidRequest, Direction, SettlementStatement
from flech_sim.scenario import ScenarioError, load_scenario, scenario_from_dict
from flech_sim.settlement import RULES, settle_by_rule, verify_against_baseline
from flech_sim.simulation import run
from tests.conftest import REPO, scenario_dict
from tests.products_support import (
    ALL_PRODUCTS,
    all_products_scenario,
    assert_conserved,
    bid,
    meter,
    received,
    table,
)

# -- the pure rules ---------------------------------------------------------------------------------------

# one seller, two 1-hour intervals: ordered 10 and 10 kW at 0.5 DKK/kWh; measured change 6 (short 4) and
# 13 (3 above the order); penalty 2 DKK/kWh; imbalance spread 0.1 DKK/kWh.
KW = dict(hours=1.0, ordered_kw=(10.0, 10.0), change_kw=(6.0, 13.0), gaps=(False, False), energy_price=(0.5, 0.5))


def test_delivered_plus_penalty_pays_delivered_energy_only() -> None:
    r = settle_by_rule("delivered_plus_penalty", penalty_price=2.0, **KW)  # type: ignore[arg-type]
    assert r.delivered_kwh == (6.0, 10.0)  # the change within [0, ordered]
    assert r.payment_dkk == pytest.approx((3.0, 5.0))  # 6 x 0.5, 10 x 0.5
    assert r.penalty_dkk == pytest.approx((8.0, 0.0))  # 4 short x 2
    assert r.imbalance_dkk == () and r.net_dkk == pytest.approx((-5.0, 5.0)) and r.rule == "delivered_plus_penalty"


def test_award_minus_penalty_pays_the_award_in_full() -> None:
    r = settle_by_rule("award_minus_penalty", penalty_price=2.0, **KW)  # type: ignore[arg-type]
    assert r.payment_dkk == pytest.approx((5.0, 5.0))  # 10 x 0.5 whatever was delivered
    assert r.penalty_dkk == pytest.approx((8.0, 0.0))
    assert r.net_dkk == pytest.approx((-3.0, 5.0))


def test_imbalance_settles_the_signed_deviation_at_the_spread() -> None:
    r = settle_by_rule("imbalance", penalty_price=0.0, imbalance_spread=(0.1, 0.1), **KW)  # type: ignore[arg-type]
    assert r.payment_dkk == pytest.approx((3.0, 5.0))  # delivered energy at the clearing price
    assert r.penalty_dkk == (0.0, 0.0)
    # deviation = ordered - change: 4 kWh short (pays 0.4), 3 kWh over (earns 0.3)
    assert r.imbalance_dkk == pytest.approx((0.4, -0.3))
    assert r.charge_dkk == pytest.approx((0.4, -0.3)) and r.net_dkk == pytest.approx((2.6, 5.3))
    # a penalty the market names is charged on top of the imbalance amount
    named = settle_by_rule("imbalance", penalty_price=2.0, imbalance_spread=(0.1, 0.1), **KW)  # type: ignore[arg-type]
    assert named.charge_dkk == pytest.approx((8.4, -0.3))


def test_option_availability_is_paid_under_every_rule() -> None:
    for rule in RULES:
        r = settle_by_rule(
            rule,
            hours=1.0,
            ordered_kw=(0.0,),
            change_kw=(0.0,),
            gaps=(False,),
            energy_price=(0.0,),
            penalty_price=2.0,
            fixed_dkk=(7.0,),
            imbalance_spread=(0.1,),
        )
        assert r.net_dkk == pytest.approx((7.0,)), rule


def test_unknown_rule_and_missing_spread_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown settlement rule"):
        settle_by_rule("pay_everyone", penalty_price=0.0, **KW)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="imbalance spread"):
        settle_by_rule("imbalance", penalty_price=0.0, **KW)  # type: ignore[arg-type]


def test_signed_verification_keeps_the_measured_change() -> None:
    common = dict(ordered_kw=(10.0, 10.0, 10.0), baseline_kw=(100.0, 100.0, None), gap_rule="no_delivery")
    capped, _ = verify_against_baseline(direction=Direction.DOWN, metered_kw=(105.0, 85.0, 90.0), **common)  # type: ignore[arg-type]
    signed, _ = verify_against_baseline(
        direction=Direction.DOWN,
        metered_kw=(105.0, 85.0, 90.0),
        signed=True,
        **common,  # type: ignore[arg-type]
    )
    assert capped == (0.0, 10.0, 0.0)
    assert signed == (-5.0, 15.0, 0.0)  # consumed 5 more than the baseline; 15 less; no baseline: nothing
    up, _ = verify_against_baseline(direction=Direction.UP, metered_kw=(105.0, 85.0, None), signed=True, **common)  # type: ignore[arg-type]
    assert up == (5.0, -15.0, 0.0)  # a gap under no_delivery: nothing


# -- imbalance prices --------------------------------------------------------------------------------------


def test_spread_is_the_imbalance_price_beyond_spot_in_the_direction_regulated() -> None:
    spot = np.array([0.40, 0.50, 0.60, 0.70])
    p = ImbalancePrices(15, spot, spot + np.array([0.1, 0.2, 0.0, 0.0]), spot - np.array([0.3, 0.1, 0.0, 0.0]), 0.04)
    # a 30-minute interval from minute 0 averages steps 0 and 1
    assert p.spread(Direction.DOWN, 0, 30) == pytest.approx(0.15)  # short system: bought at spot + premium
    assert p.spread(Direction.UP, 0, 30) == pytest.approx(0.2)  # long: sold at spot - premium
    assert p.price(Direction.DOWN, 15, 15) == pytest.approx(0.7)
    # one CSV series: above spot helps 'down', hurts the seller of 'up' (it gains from a deviation)
    csv = ImbalancePrices(15, spot, spot + 0.05, spot + 0.05, 0.04)
    assert csv.spread(Direction.DOWN, 30, 15) == pytest.approx(0.05)
    assert csv.spread(Direction.UP, 30, 15) == pytest.approx(-0.05)


def test_generated_premium_has_the_configured_mean_and_is_seeded() -> None:
    a = generate_premium(100_000, np.random.SeedSequence(3), 5.0)
    assert np.all(a > 0)
    assert a.mean() == pytest.approx(5.0, rel=0.05)
    assert np.median(a) < a.mean() < np.quantile(a, 0.99) / 2  # mostly a few EUR/MWh, with spikes
    assert np.array_equal(a, generate_premium(100_000, np.random.SeedSequence(3), 5.0))
    assert not np.array_equal(a, generate_premium(100_000, np.random.SeedSequence(4), 5.0))


# -- the rule chosen in the scenario, through the platform --------------------------------------------------

SPREAD = 0.1  # the CSVs below: spot 0.5 DKK/kWh, imbalance price 0.6


def _csv(path: Path, price: float) -> str:
    stamps = pd.date_range("2026-01-11", "2026-01-20", freq="h")
    pd.DataFrame({"timestamp": stamps, "price_dkk_per_kwh": price}).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def make_scenario(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("prices")
    settlement = {
        "rules": {"SRP": "award_minus_penalty"},  # mFRR and BL keep their defaults
        "imbalance_price": {"csv": _csv(d / "imbalance.csv", 0.6), "premium_eur_mwh": 4.0},
    }
    spot = {"csv": _csv(d / "spot.csv", 0.5)}
    return lambda **kw: all_products_scenario(settlement=settlement, spot=spot, **kw)


def test_mfrr_imbalance_rule_by_hand_and_rows_carry_the_rule(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    # mFRR: need (2000, 2000) over 120..150. A (pooled) 1000 @0.3 baseline 5000; B (feeder-1) 1500 @0.5 baseline
    # 3000. Accepted A 1000, B 1000 per interval, clearing price 0.5.
    h.at(
        0,
        lambda: h.send(
            "dso-1", h.request("m1", need=(2000.0, 2000.0), product="mFRR", location="*", interval_minutes=15)
        ),
    )
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 0.3, (1000.0, 1000.0), product="mFRR")))
    h.at(
        5,
        lambda: h.send(
            "agg-b",
            bid(h, "agg-b", "B", 0.5, (1500.0, 1500.0), product="mFRR", baseline=(3000.0, 3000.0), location="feeder-1"),
        ),
    )
    # SRP with the rule the scenario chose: A 60 @0.5 in 240..300, metered 450 against 500: delivered 50 of 60.
    h.at(0, lambda: h.send("dso-1", h.request("s1", need=(60.0,), product="SRP", delivery_start=240)))
    h.at(
        5,
        lambda: h.send("agg-a", bid(h, "agg-a", "SA", 0.5, (60.0,), product="SRP", market_id="s1", baseline=(500.0,))),
    )
    # A metered 4100 then 4500 (change 900, 500 kW); B 2000 then 1900 (change 1000, then 1100: 100 kW over).
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-1", 120, [2500.0, 2500.0])))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-1", 240, [450.0] * 4)))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-a@feeder-2", 120, [1600.0, 2000.0])))
    h.at(300, lambda: h.send("datahub", meter(h, "agg-b@feeder-1", 120, [2000.0, 1900.0])))
    h.run(400)
    brs = {m.market_id: m for m in received(h, "agg-a", BidRequest)}
    assert brs["m1"].params["settlement"] == "imbalance" and brs["m1"].penalty_price == 0.0
    assert brs["m1"].params["imbalance_premium"] == pytest.approx(4.0 * 7.45 / 1000)  # told the expected premium
    assert brs["s1"].params["settlement"] == "award_minus_penalty" and brs["s1"].penalty_price == pytest.approx(4.5)
    sts = {(m.market_id, who): m for who in h.people for m in received(h, who, SettlementStatement)}
    a, b, tso = sts[("m1", "agg-a")], sts[("m1", "agg-b")], sts[("m1", "dso-1")]
    # A: 250 kWh ordered per interval, delivered 225 then 125; paid 0.5 on delivered; deviation 25 and 125 kWh
    # at the spread 0.1 (imbalance price 0.6 - spot 0.5): 2.5 and 12.5 DKK, no penalty.
    assert a.payment_dkk == pytest.approx((112.5, 62.5)) and a.penalty_dkk == pytest.approx((2.5, 12.5))
    assert a.net_dkk == pytest.approx((110.0, 50.0))
    # B: delivered 250 both (the second capped), over by 25 kWh in the second: earns 25 x 0.1 = 2.5.
    assert b.payment_dkk == pytest.approx((125.0, 125.0)) and b.penalty_dkk == pytest.approx((0.0, -2.5))
    assert b.net_dkk == pytest.approx((125.0, 127.5))
    # the TSO pays the payments and receives the imbalance amounts: conserved
    assert tso.penalty_dkk == pytest.approx((2.5, 10.0)) and tso.net_dkk == pytest.approx((-235.0, -177.5))
    assert_conserved({"dso-1": tso, "agg-a": a, "agg-b": b})
    # SRP under award_minus_penalty: the award 60 x 0.5 = 30 paid in full, 10 short x 4.5 = 45 penalised
    sa = sts[("s1", "agg-a")]
    assert sa.payment_dkk == pytest.approx((30.0,)) and sa.penalty_dkk == pytest.approx((45.0,))
    rows = pd.DataFrame(table(h, "settlements"))
    by = rows.groupby(["market_id", "party"])
    assert set(rows[rows.market_id == "m1"].rule) == {"imbalance"}
    assert set(rows[rows.market_id == "s1"].rule) == {"award_minus_penalty"}
    assert by.get_group(("m1", "agg-a")).imbalance_dkk.tolist() == pytest.approx([2.5, 12.5])
    assert by.get_group(("m1", "dso-1")).imbalance_dkk.tolist() == pytest.approx([2.5, 10.0])
    assert by.get_group(("s1", "agg-a")).imbalance_dkk.tolist() == [0.0]


# -- scenario checks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        ({"XYZ": "imbalance"}, "unknown product ID"),
        ({"SRP": "imbalance"}, "SRP cannot settle by 'imbalance'"),
        ({"CL": "delivered_plus_penalty"}, "CL cannot settle by"),
        ({"mFRR": "pay_everyone"}, "settlement.rules.mFRR"),
    ],
)
def test_scenario_refuses_rules_a_product_cannot_use(rules: dict[str, str], fragment: str) -> None:
    with pytest.raises(ScenarioError, match=fragment):
        scenario_from_dict(scenario_dict(products=ALL_PRODUCTS, settlement={"rules": rules}))


# -- a whole run: money conserved, the imbalance amounts with it -------------------------------------------


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = run(load_scenario(REPO / "tests/reference_scenarios/products_mix.yaml"), tmp_path_factory.mktemp("mix"))
    assert result.completed, result.error
    return result.out_dir


def test_money_is_conserved_per_market_and_interval_including_imbalance(mix_run: Path) -> None:
    s = pd.read_parquet(mix_run / "settlements.parquet")
    assert {"mFRR", "CRP"} <= set(s.product_id)
    assert set(s[s.product_id == "mFRR"].rule) == {"imbalance"}
    assert set(s[s.product_id == "CRP"].rule) == {"delivered_plus_penalty"}
    money = ["payment_dkk", "penalty_dkk", "net_dkk", "imbalance_dkk"]
    sellers = s[s.role == "seller"].groupby(["market_id", "interval"])[money].sum()
    buyer = s[s.role == "buyer"].set_index(["market_id", "interval"])[sellers.columns].sort_index()
    np.testing.assert_allclose(buyer.net_dkk, -sellers.net_dkk.loc[buyer.index], atol=1e-9)
    np.testing.assert_allclose(buyer.payment_dkk, sellers.payment_dkk.loc[buyer.index], atol=1e-9)
    np.testing.assert_allclose(buyer.penalty_dkk, sellers.penalty_dkk.loc[buyer.index], atol=1e-9)
    np.testing.assert_allclose(buyer.imbalance_dkk, sellers.imbalance_dkk.loc[buyer.index], atol=1e-9)
    seller = s[s.role == "seller"]
    np.testing.assert_allclose(seller.net_dkk, seller.payment_dkk - seller.penalty_dkk, atol=1e-9)


def test_mfrr_imbalance_amounts_follow_the_recorded_prices(mix_run: Path) -> None:
    s = pd.read_parquet(mix_run / "settlements.parquet")
    markets = pd.read_parquet(mix_run / "markets.parquet").set_index("market_id")
    prices = pd.read_parquet(mix_run / "imbalance_prices.parquet")
    assert len(prices) and (prices.short_dkk_per_kwh > prices.spot_dkk_per_kwh).all()
    assert (prices.long_dkk_per_kwh < prices.spot_dkk_per_kwh).all()
    minute = (prices.interval_start - prices.interval_start.iloc[0]) / pd.Timedelta(minutes=1)
    m = s[(s.product_id == "mFRR") & (s.role == "seller")]
    assert len(m)
    for r in m.itertuples():
        assert r.imbalance_dkk == pytest.approx(r.penalty_dkk)  # no penalty named: only the imbalance amount
        start = (r.interval_start - prices.interval_start.iloc[0]) / pd.Timedelta(minutes=1)
        window = prices[(minute >= start) & (minute < start + markets.loc[r.market_id, "interval_minutes"])]
        gap = (window.short_dkk_per_kwh - window.spot_dkk_per_kwh).mean()
        if markets.loc[r.market_id, "direction"] == "up":
            gap = (window.spot_dkk_per_kwh - window.long_dkk_per_kwh).mean()
        assert gap > 0
        short = r.ordered_kwh - r.delivered_kwh
        if short > 1e-9:  # deviation >= the shortfall (larger only when the load moved the wrong way)
            assert r.imbalance_dkk >= short * gap - 1e-9
        else:  # delivered in full or more: nothing owed, an over-delivery earns the spread
            assert r.imbalance_dkk <= 1e-9
