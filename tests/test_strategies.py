"""Bidding strategies, by hand: the expected-profit (newsvendor) offer against the penalty."""

from __future__ import annotations

import itertools
from statistics import NormalDist

import numpy as np
import pytest

from flech_sim.agents.strategies import make_offers, newsvendor_kw, shortfall_loss
from flech_sim.messages import BidRequest, Direction
from flech_sim.scenario import BiddingConfig

ENV = {"msg_id": "p-1", "sender": "platform", "recipient": "agg", "sent_at": 0, "market_id": "m1", "product_id": "SRP"}


def request(penalty: float | None, **params) -> BidRequest:  # type: ignore[no-untyped-def]
    return BidRequest(
        **ENV,
        buyer="dso",
        location="f",
        direction=Direction.DOWN,
        gate_close=60,
        delivery_start=120,
        interval_minutes=60,
        need_kw=(100.0, 100.0),
        price_cap=3.0,
        params=params,
        penalty_price=penalty,
    )


def offered(cfg: BiddingConfig, penalty: float | None, **params) -> float:  # type: ignore[no-untyped-def]
    offers = make_offers(
        cfg,
        request(penalty, **params),
        free_kw=np.array([80.0, 60.0]),
        rebound_ratio=1.0,
        spot_during=np.array([0.3, 0.3]),
        spot_after=0.3,
    )
    return float(sum(sum(o.quantities_kw) for o in offers))


def test_newsvendor_quantity_by_hand() -> None:
    # margin 0.5, loss 1.5: P(flex < q) = 0.25, so q = mean * (1 + z(0.25) * cv)
    q = newsvendor_kw(np.array([100.0]), cv=0.2, margin=0.5, loss=1.5)
    assert q[0] == pytest.approx(100.0 * (1 + NormalDist().inv_cdf(0.25) * 0.2))
    assert newsvendor_kw(np.array([100.0]), cv=0.0, margin=0.5, loss=9.0)[0] == 100.0  # riskless: all of it
    assert newsvendor_kw(np.array([100.0]), cv=0.2, margin=0.0, loss=1.0)[0] == 0.0  # no margin: nothing
    assert newsvendor_kw(np.array([100.0]), cv=0.2, margin=5.0, loss=0.1)[0] == 100.0  # never above the forecast


def test_expected_profit_offers_less_as_the_penalty_rises() -> None:
    cfg = BiddingConfig(strategy="expected_profit", steps=3, forecast_cv=0.3)
    sweep = [offered(cfg, p) for p in (0.0, 0.5, 1.0, 2.0, 4.5, 10.0, 50.0)]
    assert sweep[0] == pytest.approx(140.0, abs=0.01)  # no penalty: the whole forecast
    assert all(a > b for a, b in itertools.pairwise(sweep)), sweep  # strictly falling
    assert sweep[-1] < 0.5 * sweep[0]
    # the simple strategies ignore the penalty's size
    for simple in ("cost", "risk_aware"):
        c = BiddingConfig(strategy=simple)
        assert offered(c, 0.5) == offered(c, 50.0)


def test_expected_profit_prices_rise_by_step_and_respect_the_cap() -> None:
    cfg = BiddingConfig(strategy="expected_profit", steps=4, step_markup=0.5, forecast_cv=0.3)
    offers = make_offers(
        cfg,
        request(2.0),
        free_kw=np.array([80.0, 60.0]),
        rebound_ratio=1.0,
        spot_during=np.array([0.3, 0.3]),
        spot_after=0.3,
    )
    prices = [o.price for o in offers]
    assert prices == sorted(prices) and all(p <= 3.0 for p in prices)
    total = np.sum([o.quantities_kw for o in offers], axis=0)
    assert np.all(total <= np.array([80.0, 60.0]) + 1e-9)


def test_shortfall_loss_by_rule_by_hand() -> None:
    assert shortfall_loss("delivered_plus_penalty", 0.5, 4.5) == 4.5  # not paid, penalised
    assert shortfall_loss("award_minus_penalty", 0.5, 4.5) == 4.0  # paid anyway, penalised
    assert shortfall_loss("imbalance", 0.5, 0.0, 0.0373) == pytest.approx(0.0373)  # the imbalance premium
    assert shortfall_loss("imbalance", 0.5, 1.0, 0.0373) == pytest.approx(1.0373)  # plus a named penalty


def test_paying_undelivered_energy_lowers_the_loss_and_raises_the_offer() -> None:
    cfg = BiddingConfig(strategy="expected_profit", steps=2, forecast_cv=0.3)
    assert offered(cfg, 2.0, settlement="award_minus_penalty") > offered(cfg, 2.0, settlement="delivered_plus_penalty")
    assert offered(cfg, 2.0) == offered(cfg, 2.0, settlement="delivered_plus_penalty")  # the default rule


def test_under_the_imbalance_rule_the_offer_falls_as_the_premium_rises() -> None:
    cfg = BiddingConfig(strategy="expected_profit", steps=3, forecast_cv=0.3)
    sweep = [offered(cfg, 0.0, settlement="imbalance", imbalance_premium=x) for x in (0.0, 0.5, 2.0, 10.0)]
    assert sweep[0] == pytest.approx(140.0, abs=0.01)  # a free deviation: the whole forecast
    assert all(a > b for a, b in itertools.pairwise(sweep)), sweep
    # a few EUR/MWh (0.04 DKK/kWh) costs far less than a cap-multiple penalty of 4.5 DKK/kWh
    assert offered(cfg, 0.0, settlement="imbalance", imbalance_premium=0.04) > offered(cfg, 4.5)
    # the penalty price alone does not move an imbalance-rule offer when the request names none
    assert offered(cfg, 0.0, settlement="imbalance", imbalance_premium=0.04) == offered(
        cfg, None, settlement="imbalance", imbalance_premium=0.04
    )


def test_risk_aware_prices_the_shortfall_under_the_rule() -> None:
    cfg = BiddingConfig(strategy="risk_aware", steps=1)

    def price(penalty: float, **params) -> float:  # type: ignore[no-untyped-def]
        (o,) = make_offers(
            cfg,
            request(penalty, **params),
            free_kw=np.array([80.0, 60.0]),
            rebound_ratio=1.0,
            spot_during=np.array([0.3, 0.3]),
            spot_after=0.3,
        )
        return o.price

    base = price(0.0)
    # risk premium = quantile x cv x loss: 4.5 under delivered_plus_penalty, 0.04 under imbalance
    k = cfg.quantile * cfg.forecast_cv
    assert price(4.5) == pytest.approx(base + k * 4.5, abs=1e-6)
    assert price(0.0, settlement="imbalance", imbalance_premium=0.04) == pytest.approx(base + k * 0.04, abs=1e-6)


def test_minimum_bid_size_drops_small_slices() -> None:
    cfg = BiddingConfig(strategy="expected_profit", steps=3, forecast_cv=0.3)
    offers = make_offers(
        cfg,
        request(0.1, min_bid_kw=70.0),
        free_kw=np.array([80.0, 60.0]),
        rebound_ratio=1.0,
        spot_during=np.array([0.3, 0.3]),
        spot_after=0.3,
    )
    assert len(offers) == 1 and offers[0].quantities_kw[0] >= 70.0 and offers[0].quantities_kw[1] == 0.0
