"""A product with its own bid and award fields, validation, clearing, pricing rule, settlement and table
plugs in from outside the package (tests/plugins/reserve.py), by configuration only.

Hand-worked book (60-min intervals, so kW = kWh; need (50, 50), cap 3.0, max_response_minutes 10):
A (agg-a) 1.0 DKK/kWh, (40, 40) kW, budget 60 kWh, responds in 2 min -> the solver sees (40, 20);
B (agg-b) 2.0 DKK/kWh, (50, 50) kW, no budget, responds in 8 min (slow: forfeits 10 %).
Merit order: interval 0 A 40 + B 10, interval 1 A 20 + B 30. Rule pay_as_bid_plus_10pc: A 1.1, B 2.2;
A is paid 60 x 1.1 = 66, B 40 x 2.2 = 88 (penalty 8.8, net 79.2); the buyer's net -145.2.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flech_sim.messages import Award, RejectReason, from_json, to_json
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run
from tests.conftest import scenario_dict
from tests.plugins import reserve
from tests.products_support import bid, rejections, result, statements, table

IMPL = "tests.plugins.reserve:ReserveProduct"


@pytest.fixture(autouse=True, scope="module")
def _forget_plugin_table():  # type: ignore[no-untyped-def]
    """The plug-in's table is registered process-wide; take it out again so later tests see the built-in schema."""
    yield
    from flech_sim import schema

    schema.TABLES.pop("rsv_budgets", None)
    schema.ROW_TYPES.pop("rsv_budgets", None)


@pytest.fixture
def make_scenario():  # type: ignore[no-untyped-def]
    return lambda **kw: scenario_from_dict(scenario_dict(products={"SRP": "builtin", "RSV": IMPL}, **kw))


def _book(h):  # type: ignore[no-untyped-def]
    h.at(
        0,
        lambda: h.send("dso-1", h.request("m1", need=(50.0, 50.0), product="RSV", params={"max_response_minutes": 10})),
    )
    book = [  # (seller, bid_id, price, kW, attrs)
        ("agg-a", "A", 1.0, (40.0, 40.0), {"energy_kwh": 60.0, "response_minutes": 2}),
        ("agg-b", "B", 2.0, (50.0, 50.0), {"response_minutes": 8}),
        ("agg-a", "over-budget", 1.0, (10.0, 10.0), {"energy_kwh": 30.0}),
        ("agg-b", "too-slow", 1.0, (10.0, 10.0), {"response_minutes": 20}),
        ("agg-a", "unknown", 1.0, (10.0, 10.0), {"colour": "red"}),
    ]
    for k, (who, bid_id, price, qty, attrs) in enumerate(book):
        h.at(
            5 + k,
            lambda w=who, b=bid_id, p=price, q=qty, a=attrs: h.send(w, bid(h, w, b, p, q, product="RSV", attrs=a)),
        )


def test_plugin_product_end_to_end_in_the_core(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    _book(h)
    h.run(300)
    rej = rejections(h, "agg-a") + rejections(h, "agg-b")
    assert sorted((r.reason, r.detail.split(" ")[0]) for r in rej) == [
        (RejectReason.OUT_OF_RANGE, "RSV"),
        (RejectReason.OUT_OF_RANGE, "RSV"),
        (RejectReason.OUT_OF_RANGE, "energy_kwh"),
    ]
    assert any("colour" in r.detail for r in rej) and any("response_minutes" in r.detail for r in rej)
    got = {m.bid_id: m for p in ("agg-a", "agg-b") for m in h.people[p].inbox if isinstance(m, Award)}
    assert got["A"].accepted_kw == pytest.approx((40.0, 20.0)) and got["B"].accepted_kw == pytest.approx((10.0, 30.0))
    assert got["A"].prices == pytest.approx((1.1, 1.1)) and got["B"].prices == pytest.approx((2.2, 2.2))
    assert got["A"].attrs["energy_kwh"] == pytest.approx(60.0) and got["B"].attrs["energy_kwh"] == pytest.approx(40.0)
    assert got["A"].payment_dkk == pytest.approx(66.0) and got["B"].payment_dkk == pytest.approx(88.0)
    assert from_json(to_json(got["A"])) == got["A"]
    assert result(h).cost_dkk == pytest.approx(154.0)
    sts = statements(h)
    assert sum(sts["agg-a"].net_dkk) == pytest.approx(66.0) and sum(sts["agg-b"].net_dkk) == pytest.approx(79.2)
    assert sum(sts["dso-1"].net_dkk) == pytest.approx(-145.2)
    rows = {r["bid_id"]: r for r in table(h, "rsv_budgets")}
    assert (rows["A"]["energy_kwh"], rows["A"]["accepted_kwh"], rows["A"]["response_minutes"]) == (60.0, 60.0, 2)
    assert rows["B"]["energy_kwh"] is None and rows["B"]["accepted_kwh"] == pytest.approx(40.0)
    assert {r["bid_id"] for r in table(h, "bids")} == {"A", "B"}


def test_plugin_public_clearing_matches_the_core() -> None:
    """The plug-in's pure clear_market gives the same awards from the messages alone."""
    from flech_sim.messages import Bid, Direction, MarketRequest

    env = dict(recipient="flech", market_id="m1", product_id="RSV", sent_at=0)
    req = MarketRequest(
        msg_id="r",
        sender="dso-1",
        **env,
        location="feeder-1",
        direction=Direction.DOWN,
        gate_close=60,
        delivery_start=120,
        interval_minutes=60,
        need_kw=(50.0, 50.0),
        price_cap=3.0,
        params={"max_response_minutes": 10},
    )
    bids = [
        Bid(
            msg_id="a",
            sender="agg-a",
            **env,
            bid_id="A",
            price=1.0,
            quantities_kw=(40.0, 40.0),
            attrs={"energy_kwh": 60.0},
        ),
        Bid(msg_id="b", sender="agg-b", **env, bid_id="B", price=2.0, quantities_kw=(50.0, 50.0)),
    ]
    cleared = reserve.clear_market(req, bids)
    assert cleared.is_ok and cleared.pricing is not None and cleared.pricing.rule == reserve.RULE
    assert {a.bid_id: a.accepted_kw for a in cleared.awards} == {"A": (40.0, 20.0), "B": (10.0, 30.0)}
    assert cleared.cost_dkk == pytest.approx(154.0)


def test_plugin_product_in_a_whole_run(tmp_path: Path) -> None:
    """Real aggregators bid in an RSV market opened by the DSO's timetable (they send no RSV fields)."""
    d = scenario_dict(horizon_hours=60, products={"SRP": "builtin", "RSV": IMPL})
    d["buyers"][0]["markets"].append({"product": "RSV", "location": "feeder-1", "need_kw": [20, 20], "count": 1})
    res = run(scenario_from_dict(d), tmp_path / "run")
    assert res.completed, res.error
    markets = pd.read_parquet(tmp_path / "run" / "markets.parquet")
    assert markets[markets.product_id == "RSV"].state.tolist() == ["settled"]
    budgets = pd.read_parquet(tmp_path / "run" / "rsv_budgets.parquet")
    bids = pd.read_parquet(tmp_path / "run" / "bids.parquet")
    assert set(budgets.bid_id) == set(bids[bids.product_id == "RSV"].bid_id) != set()
    assert budgets.accepted_kwh.sum() == pytest.approx(40.0)  # need 20 kW x 2 one-hour intervals, all covered
    assert "rsv_budgets" in res.manifest["row_counts"]
