"""The expected-profit strategy prices the portfolio's baseline error where the product settles the whole load.

CL penalises the load's whole excess over the cap and BL recognises only what the platform's baseline shows,
so a seller's baseline noise (kW, whatever the award's size) is its delivery risk there. Checked by hand.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest
import simpy

from flech_sim.agents.aggregator import Aggregator
from flech_sim.agents.strategies import Offer, baseline_risk_dkk_per_h, make_offers, newsvendor_kw
from flech_sim.messages import BidRequest, Direction, SettlementStatement
from flech_sim.persistor import Persistor
from flech_sim.scenario import BiddingConfig, Scenario
from flech_sim.simulation import _build

PHI0 = NormalDist().pdf(0.0)  # E[max(0, Z)] for a standard normal Z
CFG = BiddingConfig(strategy="expected_profit", steps=1, forecast_cv=0.3, min_price_dkk_per_kwh=1.5)
PRICE = 1.5 * 1.25  # step 1: the floor x (1 + step_markup)
FREE = np.array([80.0, 60.0])
RULES = {"CL": "award_minus_penalty"}  # what the platform names in CL's bid requests (the award is paid)


def request(product: str, need: tuple[float, ...] = (100.0, 100.0), **params: Any) -> BidRequest:
    return BidRequest(
        msg_id="p-1",
        sender="platform",
        recipient="agg",
        sent_at=0,
        market_id="m1",
        product_id=product,
        buyer="dso",
        location="f",
        direction=Direction.DOWN,
        gate_close=60,
        delivery_start=120,
        interval_minutes=60,
        need_kw=need,
        price_cap=6.5,
        params={"settlement": RULES.get(product, "delivered_plus_penalty")} | params,
        penalty_price=3.0,
    )


def offers(
    product: str, sd_kw: float | None, cfg: BiddingConfig = CFG, free: np.ndarray = FREE, **kw: Any
) -> list[Offer]:
    return make_offers(
        cfg,
        request(product, **kw),
        free_kw=free,
        rebound_ratio=1.0,
        spot_during=np.array([0.3, 0.3]),
        spot_after=0.3,
        baseline_sd_kw=None if sd_kw is None else np.full(len(free), sd_kw),
    )


def test_cap_risk_is_the_penalised_excess_whatever_the_reduction() -> None:
    # penalty 3 DKK/kWh x E[max(0, error)] = 3 x 10 x phi(0), for 1 kW as for 100; nothing without a reduction
    assert baseline_risk_dkk_per_h("cap", 1.0, 10.0, 2.0, 3.0) == pytest.approx(3.0 * 10.0 * PHI0)
    assert baseline_risk_dkk_per_h("cap", 100.0, 10.0, 2.0, 3.0) == pytest.approx(3.0 * 10.0 * PHI0)
    assert baseline_risk_dkk_per_h("cap", 0.0, 10.0, 2.0, 3.0) == 0.0
    assert baseline_risk_dkk_per_h("cap", 5.0, 0.0, 2.0, 3.0) == 0.0
    assert baseline_risk_dkk_per_h("", 5.0, 10.0, 2.0, 3.0) == 0.0  # a declared-baseline product: not this risk


def test_platform_baseline_risk_matches_a_simulated_baseline_error() -> None:
    rng = np.random.default_rng(7)
    err = rng.normal(0.0, 5.0, 400_000)  # platform baseline - counterfactual load, kW
    for r in (1.0, 5.0, 20.0):
        hidden = np.minimum(r, np.maximum(0.0, -err)).mean()  # kW of the reduction the baseline hides
        # delivered energy paid only: each hidden kWh loses its price and the penalty
        got = baseline_risk_dkk_per_h("platform_baseline", r, 5.0, 2.0, 3.0)
        assert got == pytest.approx(hidden * (2.0 + 3.0), rel=0.02)
        # the award paid anyway: the penalty alone
        paid = baseline_risk_dkk_per_h("platform_baseline", r, 5.0, 2.0, 3.0, rule="award_minus_penalty")
        assert paid == pytest.approx(hidden * 3.0, rel=0.02)
    # bounded by the half-normal mean: a large reduction loses a smaller share of itself
    assert baseline_risk_dkk_per_h("platform_baseline", 1e4, 5.0, 2.0, 3.0) == pytest.approx(5.0 * PHI0 * 5.0)


def test_cl_offer_falls_as_the_portfolio_baseline_uncertainty_rises() -> None:
    # step 1 at 1.875 DKK/kWh, margin 0.375 over the 1.5 floor; CL pays the award: loss = 3 - 1.875
    q = newsvendor_kw(FREE, 0.3, PRICE - 1.5, 3.0 - PRICE)
    margin_dkk_h = q * (PRICE - 1.5)  # [23.9, 17.9] DKK/h; the cap's risk is 3 x sd x phi(0)
    limits = margin_dkk_h / (3.0 * PHI0)  # sd (kW) above which an interval earns less than its risk
    assert limits[0] > limits[1]
    sweep = [0.0, 1.0, 0.5 * (limits[0] + limits[1]), 1.01 * limits[0], 40.0]
    totals = []
    for sd in sweep:
        got = offers("CL", sd)
        totals.append(sum(sum(o.quantities_kw) for o in got))
        for o in got:  # every offered interval expects a profit, the cap's risk included
            for kw in o.quantities_kw:
                assert kw == 0.0 or kw * (PRICE - 1.5) > baseline_risk_dkk_per_h("cap", kw, sd, PRICE, 3.0)
    assert totals[0] == pytest.approx(q.sum(), abs=0.01)  # no baseline risk: the newsvendor quantity
    assert totals[1] == pytest.approx(q.sum(), abs=0.01)
    assert totals[2] == pytest.approx(q[0], abs=0.01)  # the smaller interval's margin no longer covers its risk
    assert totals[3] == 0.0 and totals[4] == 0.0  # expected profit < 0: no offer at all
    assert all(a >= b for a, b in itertools.pairwise(totals)) and totals[0] > totals[-1]


def test_cl_offer_is_a_block_no_larger_than_the_need() -> None:
    (o,) = offers("CL", 2.0, need=(20.0, 30.0))
    assert o.block and o.quantities_kw == (20.0, 30.0)  # a partial award would pay the risk on too few kW
    # without a baseline sd (not CL/BL, or no sd known) the offer stays divisible and uncapped
    (o,) = offers("SRP", 2.0, need=(20.0, 30.0))
    assert not o.block and o.quantities_kw[0] > 20.0
    (o,) = offers("CL", None, need=(20.0, 30.0))
    assert not o.block and o.quantities_kw[0] > 20.0


def test_bl_drops_a_slice_the_platform_baseline_noise_would_swallow() -> None:
    # sd 5 kW: 6 kW would lose ~1.7 kW to a low baseline (x 4.875 DKK) > its 1.8 DKK/h margin; 80 kW would not
    (o,) = offers("BL", 5.0, free=np.array([80.0, 6.0]))
    q = newsvendor_kw(np.array([80.0, 6.0]), 0.3, PRICE - 1.5, 3.0)  # BL: delivered energy paid, loss = penalty
    assert o.quantities_kw[0] == pytest.approx(q[0], abs=1e-3) and o.quantities_kw[1] == 0.0
    assert offers("BL", 60.0, free=np.array([80.0, 6.0])) == []  # expected profit < 0 everywhere: no offer


def test_a_dearer_step_offers_what_the_cheap_one_could_not_carry() -> None:
    # two steps: at a sd where step 1 earns less than the risk, the quantity moves to the dearer step 2
    cfg = CFG.model_copy(update={"steps": 2})
    got = offers("CL", 30.0, cfg)
    assert [o.price for o in got] == [pytest.approx(1.5 * 1.25**2)]
    assert sum(got[0].quantities_kw) > 0


# == the aggregator feeds the strategy its own record ======================================
def _cl_aggregator(tmp_path: Path, make_scenario: Callable[..., Scenario]) -> Aggregator:
    s = make_scenario(
        products={"CL": "builtin"},
        buyers=[
            {"id": "dso-1", "role": "dso", "markets": [{"product": "CL", "location": "feeder-1", "need_kw": [20]}]}
        ],
        aggregators=[
            {"id": "agg-b", "households": {"feeder-1": 90}, "bidding": {"strategy": "expected_profit"}},
        ],
    )
    agent = _build(simpy.Environment(), Persistor(tmp_path / "run", s.start), s).agents["agg-b"]
    assert isinstance(agent, Aggregator)
    return agent


def test_the_aggregator_measures_its_baseline_error_in_kw_from_cl_settlements(
    tmp_path: Path, make_scenario: Callable[..., Scenario]
) -> None:
    agg = _cl_aggregator(tmp_path, make_scenario)
    load = np.array([200.0, 100.0])
    sd = agg._baseline_sd("CL", load)
    assert sd is not None and np.allclose(sd, 0.05 * load)  # the prior: baseline_cv x the forecast load
    assert agg._baseline_sd("SRP", load) is None  # a declared-baseline product: not this risk
    start = 24 * 60 + 17 * 60
    agg.on_bid_request(
        BidRequest(
            msg_id="p-1",
            sender="platform",
            recipient="agg-b",
            sent_at=0,
            market_id="m1",
            product_id="CL",
            buyer="dso-1",
            location="feeder-1",
            direction=Direction.DOWN,
            gate_close=60,
            delivery_start=start,
            interval_minutes=60,
            need_kw=(20.0, 20.0),
            price_cap=6.5,
            penalty_price=3.0,
            params={"settlement": "award_minus_penalty"},
        )
    )
    # interval 0 within the cap; interval 1 the load 20 kW above it on a 10 kW reduction: 60 DKK of penalty
    agg.on_settlement(
        SettlementStatement(
            msg_id="p-2",
            sender="platform",
            recipient="agg-b",
            sent_at=start + 600,
            market_id="m1",
            product_id="CL",
            party_role="seller",
            counterparty="dso-1",
            interval_start=(start, start + 60),
            ordered_kwh=(10.0, 10.0),
            delivered_kwh=(10.0, 0.0),
            payment_dkk=(20.0, 20.0),
            penalty_dkk=(0.0, 60.0),
            net_dkk=(20.0, -40.0),
        )
    )
    # the excess is the positive half of the error: sd = sqrt(2 x mean(excess^2)) = sqrt(2 x 400 / 2) = 20 kW
    # (from the penalty, not censored at the 10 kW ordered)
    assert agg.baseline_sd_kw("CL") == pytest.approx(20.0)
    sd = agg._baseline_sd("CL", load)
    assert sd is not None and np.allclose(sd, [20.0, 20.0])  # above both priors (10 and 5 kW)
    assert agg.delivery_risk("CL") is None  # not read as a fraction of the flexibility
