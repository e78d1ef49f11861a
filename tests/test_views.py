"""Narrow views and typed wiring: each role sees only its part of the world; the coordinator hears of
cleared DSO markets on the event bus; an unknown message kind is recorded; rows are built by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import simpy

from flech_sim.agents.base import AGENT_ERRORS, Agent, Recorder
from flech_sim.coordination import Coordinator
from flech_sim.endpoint import Endpoint
from flech_sim.events import EventBus, MarketCleared, MarketEnded
from flech_sim.households import child_seed
from flech_sim.messages import (
    PLATFORM,
    Acknowledgement,
    Bid,
    Direction,
    MarketCancellation,
    MarketRequest,
)
from flech_sim.persistor import Persistor, require_row_types
from flech_sim.scenario import Scenario
from flech_sim.simulation import Wiring, _build
from flech_sim.world import World

ROLES = {"dso-1": "dso", "tso-1": "tso", "agg-a": "aggregator", "agg-c": "aggregator"}
SELLERS = {"agg-a": frozenset({"feeder-1", "feeder-2"}), "agg-c": frozenset({"feeder-2"})}


@pytest.fixture
def strict_rows() -> Iterator[None]:
    """Only modules that build every row with schema.row run under this (products join after the merge)."""
    require_row_types(True)
    try:
        yield
    finally:
        require_row_types(False)


def _persistor(tmp_path: Path, scenario: Scenario) -> Persistor:
    return Persistor(tmp_path / "run", scenario.start)


def _read(p: Persistor, table: str) -> pd.DataFrame:
    p.close()
    return pd.read_parquet(p.out_dir / f"{table}.parquet")


# == the coordinator, fed by events it is published ======================================
def _tso_request(start: int = 600, n: int = 2) -> MarketRequest:
    return MarketRequest(
        msg_id="tso-1-1",
        sender="tso-1",
        recipient=PLATFORM,
        market_id="tso-m",
        product_id="mFRR",
        sent_at=0,
        location="*",
        direction=Direction.UP,
        gate_close=start - 30,
        delivery_start=start,
        interval_minutes=60,
        need_kw=(50.0,) * n,
        price_cap=3.0,
    )


def _bid(seller: str, bid_id: str, qty: tuple[float, ...], block: bool = False) -> Bid:
    return Bid(
        msg_id=f"{seller}-{bid_id}",
        sender=seller,
        recipient=PLATFORM,
        market_id="tso-m",
        product_id="mFRR",
        sent_at=0,
        bid_id=bid_id,
        price=1.0,
        quantities_kw=qty,
        block=block,
    )


def _dso_cleared(awarded: tuple[float, ...], buyer: str = "dso-1", start: int = 600) -> MarketCleared:
    return MarketCleared(
        product_id="SRP",
        market_id="dso-m",
        buyer=buyer,
        location="feeder-1",
        direction=Direction.DOWN,
        delivery_start=start,
        interval_minutes=60,
        awarded_kw=awarded,
    )


def test_coordinator_screens_against_published_dso_markets(
    tmp_path: Path, make_scenario: Callable[..., Scenario], strict_rows: None
) -> None:
    p = _persistor(tmp_path, make_scenario())
    bus = EventBus()
    coord = Coordinator("dso_prevails", Recorder(p, frozenset({"conflicts"})), bus, ROLES.get, SELLERS)
    bids = [_bid("agg-a", "a0", (10.0, 20.0)), _bid("agg-c", "c0", (5.0, 5.0)), _bid("agg-a", "a1", (3.0, 3.0), True)]
    req = _tso_request()
    assert coord.screen(req, bids) == bids  # nothing published yet: nothing to protect
    bus.publish(_dso_cleared((0.0, 40.0), buyer="tso-1"))  # a TSO market is no congestion
    assert coord.screen(req, bids) == bids
    bus.publish(_dso_cleared((0.0, 40.0)))  # the DSO holds feeder-1 in the second hour only
    out = coord.screen(req, bids)
    # agg-a (on feeder-1) loses its second hour; its block bid goes entirely; agg-c (feeder-2 only) is untouched
    assert [(b.bid_id, b.quantities_kw) for b in out] == [("a0", (10.0, 0.0)), ("c0", (5.0, 5.0))]
    bus.publish(MarketEnded("SRP", "dso-m", "settled"))
    assert coord.screen(req, bids) == bids  # forgotten once it ended
    c = _read(p, "conflicts")
    assert list(zip(c.bid_id, c.interval, c.action, c.dso_market_id, strict=True)) == [
        ("a0", 1, "refused", "dso-m"),
        ("a1", 1, "refused", "dso-m"),
    ]
    assert (c.feeder == "feeder-1").all() and c.quantity_kw.tolist() == [20.0, 3.0]


def test_coordinator_forgets_cancelled_markets_and_past_deliveries(
    tmp_path: Path, make_scenario: Callable[..., Scenario]
) -> None:
    p = _persistor(tmp_path, make_scenario())
    bus = EventBus()
    coord = Coordinator("tso_prevails", Recorder(p, frozenset({"conflicts"})), bus, ROLES.get, SELLERS)
    bus.publish(_dso_cleared((40.0, 40.0)))
    assert len(coord.windows(600, 720)) == 2 and coord.windows(720, 800) == []  # delivery over: dropped
    bus.publish(_dso_cleared((40.0,), start=900))
    bids = [_bid("agg-a", "a0", (10.0,))]
    assert coord.screen(_tso_request(900, 1), bids) == bids  # tso_prevails: allowed, but recorded
    bus.publish(MarketEnded("SRP", "dso-m", "cancelled"))
    assert coord.windows(900, 960) == []
    c = _read(p, "conflicts")
    assert c.action.tolist() == ["allowed"] and c.rule.tolist() == ["tso_prevails"]


# == agents: an unknown kind is recorded, never dropped ==================================
class _Silent(Agent):
    """An agent with no handlers at all."""


def test_unknown_message_kind_is_recorded(
    tmp_path: Path, make_scenario: Callable[..., Scenario], strict_rows: None
) -> None:
    p = _persistor(tmp_path, make_scenario())
    env = simpy.Environment()
    conn = Endpoint(env, p).connect("agg-a", "aggregator")
    agent = _Silent(env, conn, Recorder(p, frozenset({AGENT_ERRORS})))
    agent.start()
    head = {"sender": PLATFORM, "recipient": "agg-a", "market_id": "m1", "product_id": "SRP"}
    conn.inbox.put(Acknowledgement(msg_id="flech-1", sent_at=0, ref_msg_id="x", ref_id="y", **head))
    conn.inbox.put(MarketCancellation(msg_id="flech-2", sent_at=0, reason="r", **head))
    env.run(until=5)
    assert agent.received == {"ack": 1, "market_cancellation": 1} and agent.unhandled == {"market_cancellation": 1}
    e = _read(p, AGENT_ERRORS)
    assert e[["participant", "msg_id", "kind", "market_id", "error"]].values.tolist() == [
        ["agg-a", "flech-2", "market_cancellation", "m1", "unhandled_kind"]
    ]


def test_an_agent_needs_a_recorder_for_its_errors_and_writes_only_its_tables(
    tmp_path: Path, make_scenario: Callable[..., Scenario]
) -> None:
    p = _persistor(tmp_path, make_scenario())
    env = simpy.Environment()
    conn = Endpoint(env, p).connect("agg-a", "aggregator")
    with pytest.raises(ValueError, match="agent_errors"):
        _Silent(env, conn, Recorder(p, frozenset({"flex_forecasts"})))
    with pytest.raises(PermissionError, match="awards"):
        Recorder(p, frozenset({AGENT_ERRORS})).append("awards", ())


# == rows by name ==========================================================================
def test_strict_rows_refuse_positional_tuples_and_the_endpoint_complies(
    tmp_path: Path, make_scenario: Callable[..., Scenario], strict_rows: None
) -> None:
    p = _persistor(tmp_path, make_scenario())
    with pytest.raises(TypeError, match=r"schema\.row"):
        p.append("conflicts", ("m", "b", "s", "f", 0, 0, 1.0, "d", "r", "a", "why"))
    p.append_dict(
        "agent_errors",
        {
            "participant": "x",
            "msg_id": "m",
            "kind": "k",
            "market_id": "",
            "product_id": "",
            "at": 0,
            "error": "e",
            "detail": "d",
        },
    )
    env = simpy.Environment()
    endpoint = Endpoint(env, p)  # no dispatcher: every message is rejected, so no product writes a row
    conn = endpoint.connect("agg-a", "aggregator")
    conn.send(_bid("agg-a", "b1", (1.0,)))
    conn.send("{not json")
    msgs, rej = _read(p, "messages"), pd.read_parquet(p.out_dir / "rejections.parquet")
    assert msgs.kind.tolist() == ["bid", "rejection", "malformed", "rejection"]
    assert msgs.direction.tolist() == ["in", "out", "in", "out"] and msgs.verdict.tolist()[0] == "rejected"
    assert rej.reason.tolist() == ["unknown_product", "malformed"] and (rej.participant == "agg-a").all()


# == the wiring and the views ==============================================================
@pytest.fixture
def wiring(tmp_path: Path, make_scenario: Callable[..., Scenario]) -> Wiring:
    s = make_scenario(
        buyers=[
            {
                "id": "dso-1",
                "role": "dso",
                "markets": [{"product": "SRP", "location": "feeder-1", "need_kw": [60, 90], "price_cap": 3.0}],
            },
            {"id": "tso-1", "role": "tso", "balancing": {"product": "mFRR"}},
        ],
        products={"SRP": "builtin", "mFRR": "builtin"},
    )
    env = simpy.Environment()
    return _build(env, _persistor(tmp_path, s), s)


def test_each_role_is_handed_only_its_view(wiring: Wiring) -> None:
    world, agents = wiring.world, wiring.agents
    dso, tso, agg_b, dp = agents["dso-1"], agents["tso-1"], agents["agg-b"], agents["datahub"]
    assert dso.grid is not None and dso.grid.feeders == ("feeder-1", "feeder-2") and tso.grid is None
    assert dso.grid.limit_kw("feeder-2") == 300.0
    fc = dso.grid.forecast(8)
    np.testing.assert_array_equal(fc["feeder-2"], world.feeder_forecast(8)[:, 1])
    assert agg_b.portfolio.owner == "agg-b" and agg_b.portfolio.feeders == ("feeder-1",)
    assert agents["agg-a"].portfolio.feeders == ("feeder-1", "feeder-2")
    assert not hasattr(agg_b, "world") and not hasattr(dp, "world") and not hasattr(dso, "world")
    assert dp.feed.points == ("agg-a@feeder-1", "agg-a@feeder-2", "agg-b@feeder-1")
    assert not world.keep_household_series  # only a household meter feed asks for it
    assert set(wiring.core.products) == {"SRP", "mFRR"} and set(agents) == {
        "dso-1",
        "tso-1",
        "agg-a",
        "agg-b",
        "datahub",
    }


def test_household_meter_feed_lists_every_aggregated_household(
    tmp_path: Path, make_scenario: Callable[..., Scenario]
) -> None:
    s = make_scenario()
    world = World(simpy.Environment(), s, child_seed(np.random.SeedSequence(1), 1), _persistor(tmp_path, s))
    feed = world.meter_feed(household_meters=True)
    assert world.keep_household_series
    assert len(feed.household_points) == 120 + 50 + 90  # aggregated homes only; none are unaggregated here
    assert feed.household_points[0] == "agg-a@feeder-1#0" and feed.points[:3] == feed.portfolio_points


def test_products_do_not_import_the_scenario() -> None:
    """scenario -> registry -> products must not lead back to scenario (the cycle late imports used to hide)."""
    import subprocess
    import sys

    code = "import sys, flech_sim.products, flech_sim.registry; sys.exit('flech_sim.scenario' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
