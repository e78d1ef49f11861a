"""TSO and DSO buying from the same aggregators; a DSO activating options when congestion appears."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flech_sim.scenario import FeederConfig, load_scenario
from flech_sim.simulation import run

from .conftest import REPO


def _run(name: str, tmp: Path, **update) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    s = load_scenario(REPO / "scenarios" / f"{name}.yaml").model_copy(update=update)
    result = run(s, tmp / name)
    assert result.completed, result.error
    names = ("markets", "conflicts", "settlements", "awards", "bids", "activations", "rejections", "messages")
    return {n: pd.read_parquet(tmp / name / f"{n}.parquet") for n in names}


# The bundled scenario is sized like a real grid (feeders above their limits on a few peak steps), so
# in 56 h a conflict may not arise; these mechanics tests tighten the limits until the DSO buys all day.
CONGESTED = {
    "feeders": {
        "feeder-1": FeederConfig(limit_kw=1500),
        "feeder-2": FeederConfig(limit_kw=1100),
        "feeder-3": FeederConfig(limit_kw=1400),
    }
}


@pytest.fixture(scope="module")
def competition(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    # the DSO-window rule by name: the bundled study uses grid_headroom (tests/test_coordination.py)
    return _run(
        "tso_dso_competition", tmp_path_factory.mktemp("c"), horizon_hours=56, coordination="dso_prevails", **CONGESTED
    )


def test_both_buyers_trade_with_the_same_aggregators(competition) -> None:  # type: ignore[no-untyped-def]
    awards = competition["awards"]
    won = awards[awards.accepted_kw > 0].groupby("product_id").seller.unique()
    assert set(won["SRP"]) & set(won["mFRR"])  # one aggregator sold to both buyers
    assert competition["rejections"].empty


def test_conflicts_are_recorded_and_the_dso_prevails(competition) -> None:  # type: ignore[no-untyped-def]
    c, awards, markets = competition["conflicts"], competition["awards"], competition["markets"]
    assert len(c) > 0 and set(c.action) == {"refused"} and set(c.rule) == {"dso_prevails"}
    # a refused bid was not awarded anything in that interval ...
    refused = c.merge(awards, on=["market_id", "bid_id", "interval"], how="left")
    assert (refused.accepted_kw.fillna(0.0) == 0).all()
    # ... the TSO market it belonged to asked for more consumption, the DSO market for less
    m = markets.set_index("market_id")
    assert (m.loc[c.market_id, "direction"].to_numpy() == "up").all()
    assert (m.loc[c.dso_market_id, "direction"].to_numpy() == "down").all()
    dso = m.loc[c.dso_market_id]
    t = pd.to_datetime(c.interval_start).to_numpy()
    assert ((dso.delivery_start.to_numpy() <= t) & (t < dso.delivery_end.to_numpy())).all()


def test_tso_prevails_records_but_allows(tmp_path: Path) -> None:
    t = _run("tso_dso_competition", tmp_path, horizon_hours=56, coordination="tso_prevails", **CONGESTED)
    assert len(t["conflicts"]) > 0 and set(t["conflicts"].action) == {"allowed"}


def test_money_is_conserved_per_product(competition) -> None:  # type: ignore[no-untyped-def]
    s = competition["settlements"]
    assert set(s.product_id) == {"SRP", "mFRR"}
    net = s.groupby(["product_id", "market_id", "interval", "role"]).net_dkk.sum().unstack("role")
    assert (net.buyer + net.seller).abs().max() < 1e-6


def test_mfrr_pays_everyone_the_clearing_price(competition) -> None:  # type: ignore[no-untyped-def]
    a = competition["awards"]
    a = a[(a.product_id == "mFRR") & (a.accepted_kw > 0)]
    bids = competition["bids"].set_index(["bid_id", "interval"]).price
    assert len(a) > 0
    assert (a.price.to_numpy() >= bids.loc[list(zip(a.bid_id, a.interval, strict=True))].to_numpy() - 1e-9).all()
    assert (a.groupby("market_id").price.nunique() == 1).all()


def test_dso_activates_its_options_when_congestion_appears(tmp_path: Path) -> None:
    t = _run(
        "dso_congestion",
        tmp_path,
        horizon_hours=72,  # the limits before the scenario was sized like a grid
        feeders={"feeder-1": FeederConfig(limit_kw=700), "feeder-2": FeederConfig(limit_kw=520)},
    )
    acts, msgs, st = t["activations"], t["messages"], t["settlements"]
    assert len(acts) > 0 and t["rejections"].empty
    calls = msgs[(msgs.kind == "activation") & (msgs.direction == "in")]
    assert set(calls.sender) == {"dso-bornholm"}
    # what sellers were asked to deliver in settlement is what the DSO activated (60-minute intervals: kW = kWh)
    seller_st = st[(st.role == "seller") & st.market_id.isin(acts.market_id)]
    called = acts[acts.market_id.isin(seller_st.market_id)]
    assert seller_st.ordered_kwh.sum() == pytest.approx(called.quantity_kw.sum()) and called.quantity_kw.sum() > 0
    assert (seller_st.delivered_kwh <= seller_st.ordered_kwh + 1e-9).all()
