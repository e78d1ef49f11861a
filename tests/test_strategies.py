"""Bidding strategies, by hand: the expected-profit (newsvendor) offer against the penalty."""

from __future__ import annotations

import itertools
from statistics import NormalDist

import numpy as np
import pytest

from flech_sim.agents.strategies import make_offers, newsvendor_kw
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


def test_paying_undelivered_energy_lowers_the_loss_and_raises_the_offer() -> None:
    cfg = BiddingConfig(strategy="expected_profit", steps=2, forecast_cv=0.3)
    assert offered(cfg, 2.0, pays_undelivered=True) > offered(cfg, 2.0)


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
