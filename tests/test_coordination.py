"""grid_headroom coordination: TSO bids screened against each feeder's forecast headroom in all hours,
their rebound included; awarded changes committed; every conflict recorded; the grid not made worse."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flech_sim.audit import audit_run
from flech_sim.coordination import Coordinator, footprint, grid_profile
from flech_sim.events import EventBus, MarketCleared, MarketEnded
from flech_sim.footprint import check_footprint, declare_footprint
from flech_sim.messages import PLATFORM, Acknowledgement, AttrValue, Bid, Direction, MarketRequest, RejectReason
from flech_sim.scenario import Scenario, load_scenario
from flech_sim.simulation import run

from .conftest import REPO
from .products_support import all_products_scenario, bid, received, rejections

DT = 15
Runs = dict[str, tuple[pd.DataFrame, float, Path]]
ROLES = {"dso-1": "dso", "tso-1": "tso", "agg-a": "aggregator", "agg-b": "aggregator"}
SELLERS = {"agg-a": frozenset({"f1", "f2"}), "agg-b": frozenset({"f2"})}


@dataclass
class FakeGrid:
    """A DSO's grid view with a flat forecast: what the coordinator may read of the grid, nothing more."""

    load: dict[str, float]
    limits: dict[str, float]
    now_step: int = 0
    dt: int = DT
    asked: list[int] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)  # SCADA, last step (default: the forecast level)

    @property
    def feeders(self) -> tuple[str, ...]:
        return tuple(sorted(self.limits))

    def limit_kw(self, feeder: str) -> float:
        return self.limits[feeder]

    def load_now(self, feeder: str) -> float:
        return self.measured.get(feeder, self.load[feeder])

    def forecast(self, horizon_steps: int) -> dict[str, np.ndarray]:
        self.asked.append(horizon_steps)
        return {f: np.full(horizon_steps, self.load[f]) for f in self.feeders}


class Log:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    def append(self, table: str, values: Any) -> None:
        assert table == "conflicts"
        self.rows.append(values)


def _req(direction: Direction, start: int = 60, market_id: str = "tso-m", n: int = 1) -> MarketRequest:
    return MarketRequest(
        msg_id=f"{market_id}-req",
        sender="tso-1",
        recipient=PLATFORM,
        market_id=market_id,
        product_id="mFRR",
        sent_at=0,
        location="*",
        direction=direction,
        gate_close=start - 45,
        delivery_start=start,
        interval_minutes=15,
        need_kw=(1000.0,) * n,
        price_cap=1.0,
    )


def _bid(
    seller: str, bid_id: str, qty: tuple[float, ...], attrs: dict[str, AttrValue], price: float = 0.5, **kw: Any
) -> Bid:
    return Bid(
        msg_id=f"{seller}-{bid_id}",
        sender=seller,
        recipient=PLATFORM,
        market_id=kw.pop("market_id", "tso-m"),
        product_id="mFRR",
        sent_at=0,
        bid_id=bid_id,
        price=price,
        quantities_kw=qty,
        attrs=attrs,
        **kw,
    )


class Screen(Coordinator):
    """The coordinator with the event bus it listens on, so a test can publish to it."""

    def __init__(self, grid: FakeGrid | None, log: Log, margin: float) -> None:
        self.bus = EventBus()
        super().__init__("grid_headroom", log, self.bus, ROLES.get, SELLERS, grid=grid, margin=margin)  # type: ignore[arg-type]


def _coordinator(grid: FakeGrid | None, margin: float = 0.0) -> tuple[Screen, Log]:
    log = Log()
    return Screen(grid, log, margin), log


def _publish(c: Screen, ev: object) -> None:
    c.bus.publish(ev)


# == pure pieces ============================================================================
def test_footprint_of_a_down_bid_is_its_shed_then_its_rebound() -> None:
    fp = footprint(Direction.DOWN, 60, 15, {"f1": (1000.0,)}, {"f1": 300.0}, DT)
    assert fp.first_step == 4 and fp.end_step == 5
    assert fp.kw["f1"].tolist() == [-1000.0] and fp.rebound == {"f1": (300.0, 1000.0)}
    up = footprint(Direction.UP, 60, 15, {"f1": (600.0,), "f2": (400.0,)}, {"f1": 300.0}, DT)
    assert {f: v.tolist() for f, v in up.kw.items()} == {"f1": [600.0], "f2": [400.0]} and up.rebound == {}


D = 1.0 - math.exp(-15 / 60)  # share of the slow tail drawn in one 15-minute step (time constant 1 h)


def rebound_step(kwh: float, power: float) -> float:
    """kW in the first step after the shed ends: 3/4 of the energy at up to ``power``, plus the tail's first step."""
    return min(power, 0.75 * kwh / 0.25) + 0.25 * kwh * D / 0.25


def test_a_rebound_comes_back_fast_at_twice_the_shed_power_then_slowly_once_the_run_ends() -> None:
    one = footprint(Direction.DOWN, 60, 15, {"f1": (1000.0,)}, {"f1": 300.0}, DT)
    # 225 kWh fast (900 kW for one step, below the 2000 kW cap), 75 kWh in a tail decaying by e an hour
    tail = 75.0 * D / 0.25
    np.testing.assert_allclose(
        grid_profile([one], "f1", 3, 8, DT), [0.0, -1000.0, 900.0 + tail, tail * (1 - D), tail * (1 - D) ** 2]
    )
    # two consecutive sheds: neither draws back until both are over, then 450 kWh fast, capped at 2000 kW
    two = footprint(Direction.DOWN, 75, 15, {"f1": (1000.0,)}, {"f1": 300.0}, DT)
    np.testing.assert_allclose(grid_profile([one, two], "f1", 4, 7, DT)[:3], [-1000.0, -1000.0, 1800.0 + 2 * tail])
    # a consume-more activation right after does not hold the rebound back: both add load
    up = footprint(Direction.UP, 75, 15, {"f1": (500.0,)}, {}, DT)
    np.testing.assert_allclose(grid_profile([one, up], "f1", 4, 6, DT), [-1000.0, 1400.0 + tail])
    assert grid_profile([one], "f2", 0, 8, DT).tolist() == [0.0] * 8
    # the tail is followed until it is below 1 kW, not for ever
    assert grid_profile([one], "f1", 40, 60, DT).tolist() == [0.0] * 20


def test_declared_footprint_round_trips_and_must_cover_the_quantity() -> None:
    attrs = declare_footprint(["f1", "f2", "f3"], np.array([[600.0], [400.0], [0.0]]), np.array([90.0, 60.0, 5.0]))
    assert attrs == {"kw@f1": (600.0,), "rebound_kwh@f1": 90.0, "kw@f2": (400.0,), "rebound_kwh@f2": 60.0}
    assert check_footprint(_bid("agg-a", "b", (1000.0,), attrs)) is None
    assert "fall short" in str(check_footprint(_bid("agg-a", "b", (1200.0,), attrs)))


# == the screen ===============================================================================
def test_an_up_bid_is_trimmed_to_the_headroom_and_a_block_refused() -> None:
    grid = FakeGrid(load={"f1": 3000.0, "f2": 1000.0}, limits={"f1": 3500.0, "f2": 5000.0})
    c, log = _coordinator(grid)
    fair = _bid("agg-a", "a0", (1000.0,), {"kw@f1": (800.0,), "kw@f2": (200.0,)})
    block = _bid("agg-a", "a1", (1000.0,), {"kw@f1": (1000.0,)}, price=0.6, block=True)
    other = _bid("agg-b", "b0", (1000.0,), {}, price=0.7)  # undeclared: all of it on its only feeder, f2
    out = c.screen(_req(Direction.UP), [fair, block, other])
    # f1 has 500 kW of room: a0 keeps 500/800 of itself; the block finds no room left; b0 fits on f2
    assert [b.bid_id for b in out] == ["a0", "b0"]
    a0 = out[0]
    assert a0.quantities_kw == pytest.approx((625.0,))
    assert a0.attrs["kw@f1"] == pytest.approx((500.0,)) and a0.attrs["kw@f2"] == pytest.approx((125.0,))
    assert out[1] is other
    rows = [(r.bid_id, r.feeder, r.action, round(r.quantity_kw, 3), r.rule) for r in log.rows]
    assert rows == [("a0", "f1", "trimmed", 375.0, "grid_headroom"), ("a1", "f1", "refused", 1000.0, "grid_headroom")]
    # the recorded cut is exactly what the book lost (the audit replays it so)
    assert fair.quantities_kw[0] - log.rows[0].quantity_kw == a0.quantities_kw[0]


def test_a_down_bid_is_screened_by_its_rebound_after_delivery() -> None:
    # f1 is well below its limit during the bid, but the 1000 kW coming back after it would not fit
    grid = FakeGrid(load={"f1": 3000.0, "f2": 0.0}, limits={"f1": 3600.0, "f2": 5000.0})
    c, log = _coordinator(grid, margin=0.0)
    bid = _bid("agg-a", "a0", (1000.0,), {"kw@f1": (1000.0,), "rebound_kwh@f1": 250.0})
    (out,) = c.screen(_req(Direction.DOWN), [bid])
    keep = 600.0 / rebound_step(250.0, 2000.0)  # its first rebound step then takes exactly the room
    assert out.quantities_kw == pytest.approx((1000.0 * keep,))
    assert out.attrs["rebound_kwh@f1"] == pytest.approx(250.0 * keep)
    (r,) = log.rows
    assert r.action == "trimmed" and "by its rebound" in r.reason
    assert grid.asked and grid.asked[-1] >= 2  # the forecast reached past the delivery, into the rebound
    # a margin keeps part of the limit free: 5 % of 3600 = 180 kW less room
    c2, _ = _coordinator(grid, margin=0.05)
    (out2,) = c2.screen(_req(Direction.DOWN), [bid])
    assert out2.quantities_kw == pytest.approx((1000.0 * 420.0 / rebound_step(250.0, 2000.0),))


def test_awards_are_committed_and_use_up_headroom_for_later_markets() -> None:
    grid = FakeGrid(load={"f1": 3000.0, "f2": 0.0}, limits={"f1": 4000.0, "f2": 5000.0})
    c, log = _coordinator(grid)
    first = _bid("agg-a", "a0", (1000.0,), {"kw@f1": (1000.0,), "rebound_kwh@f1": 250.0})
    assert c.screen(_req(Direction.DOWN, 60, "m1"), [first]) == [first]  # fits in the 1000 kW of room
    # cleared: 600 kW of it taken -> 0.6 of its rebound comes back from step 5 on f1
    _publish(c, _cleared("m1", 60, (600.0,), (("a0", (600.0,)),)))
    later = _bid("agg-a", "a1", (1000.0,), {"kw@f1": (1000.0,)}, market_id="m2")
    (out,) = c.screen(_req(Direction.UP, 75, "m2"), [later])  # delivered in step 5, on top of that rebound
    assert out.quantities_kw == pytest.approx((1000.0 - 0.6 * rebound_step(250.0, 2000.0),))
    assert [r.action for r in log.rows] == ["trimmed"]
    # a market that ends without clearing commits nothing
    c.screen(_req(Direction.UP, 90, "m3"), [_bid("agg-a", "a2", (500.0,), {"kw@f1": (500.0,)}, market_id="m3")])
    _publish(c, MarketEnded("mFRR", "m3", "cancelled"))
    (again,) = c.screen(_req(Direction.UP, 90, "m4"), [_bid("agg-a", "a3", (900.0,), {"kw@f1": (900.0,)})])
    assert again.quantities_kw == (900.0,)


def _cleared(
    market_id: str, start: int, awarded: tuple[float, ...], by_bid: tuple[tuple[str, tuple[float, ...]], ...]
) -> MarketCleared:
    return MarketCleared(
        product_id="mFRR",
        market_id=market_id,
        buyer="tso-1",
        location="*",
        direction=Direction.DOWN,
        delivery_start=start,
        interval_minutes=15,
        awarded_kw=awarded,
        accepted_by_bid=by_bid,
    )


def test_the_forecast_is_raised_to_the_measured_load_less_what_was_ordered() -> None:
    # Warm homes in a consume-more run forecast low: the feeder measures 2600 kW with 300 kW of it ordered,
    # so it would draw 2300 kW, not the 2000 kW forecast; 700 kW of room are left, not 1000.
    grid = FakeGrid(load={"f1": 2000.0, "f2": 0.0}, limits={"f1": 3000.0, "f2": 5000.0})
    c, log = _coordinator(grid)
    first = _bid("agg-a", "a0", (300.0,), {"kw@f1": (300.0,)}, market_id="m0")
    assert c.screen(_req(Direction.UP, 45, "m0"), [first]) == [first]
    _publish(c, MarketCleared("mFRR", "m0", "tso-1", "*", Direction.UP, 45, 15, (300.0,), (("a0", (300.0,)),)))
    grid.now_step, grid.measured = 4, {"f1": 2600.0}
    (out,) = c.screen(_req(Direction.UP, 105, "m1"), [_bid("agg-a", "a1", (1000.0,), {"kw@f1": (1000.0,)})])
    assert out.quantities_kw == pytest.approx((700.0,))
    assert [r.action for r in log.rows] == ["trimmed"] and "forecast 2300 kW" in log.rows[0].reason
    # a measurement below the forecast never loosens it
    grid.measured = {"f1": 1500.0}
    (out,) = c.screen(_req(Direction.UP, 105, "m2"), [_bid("agg-a", "a2", (1000.0,), {"kw@f1": (1000.0,)})])
    assert out.quantities_kw == (1000.0,)


def test_a_dso_purchase_rebound_is_protected_and_named_in_the_conflict() -> None:
    grid = FakeGrid(load={"f1": 3000.0, "f2": 0.0}, limits={"f1": 3500.0, "f2": 5000.0})
    c, log = _coordinator(grid)
    # the DSO bought 200 kW down on f1 at minute 60-120: its reduction is not headroom; its 200 kWh come
    # back right after the window, the fast part at up to 400 kW (twice the shed)
    _publish(
        c,
        MarketCleared(
            product_id="SRP",
            market_id="dso-m",
            buyer="dso-1",
            location="f1",
            direction=Direction.DOWN,
            delivery_start=60,
            interval_minutes=60,
            awarded_kw=(200.0,),
        ),
    )
    inside = c.screen(_req(Direction.UP, 75, "in"), [_bid("agg-a", "a0", (1000.0,), {"kw@f1": (1000.0,)})])
    after = c.screen(_req(Direction.UP, 120, "after"), [_bid("agg-a", "a1", (1000.0,), {"kw@f1": (1000.0,)})])
    assert inside[0].quantities_kw == pytest.approx((500.0,))  # room is the limit minus the forecast
    assert after[0].quantities_kw == pytest.approx((500.0 - rebound_step(200.0, 400.0),))  # ... minus its rebound
    assert [r.action for r in log.rows] == ["trimmed", "trimmed"]
    assert [r.dso_market_id for r in log.rows] == ["dso-m", ""]


def test_without_a_grid_view_grid_headroom_protects_the_dso_windows() -> None:
    c, log = _coordinator(None)
    _publish(
        c,
        MarketCleared("SRP", "dso-m", "dso-1", "f1", Direction.DOWN, 60, 60, (400.0,)),
    )
    bid = _bid("agg-a", "a0", (1000.0,), {})
    assert c.screen(_req(Direction.UP, 75), [bid]) == []
    assert [(r.action, r.rule) for r in log.rows] == [("refused", "dso_prevails")]


# == the grid, end to end ======================================================================
def _overload(name: str, tmp: Path, coordination: str) -> tuple[pd.DataFrame, float, Path]:
    s = load_scenario(REPO / "scenarios" / f"{name}.yaml", {"horizon_hours": 48, "seed": 1})
    s = s.model_copy(update={"coordination": coordination})
    out = tmp / coordination
    result = run(s, out)
    assert result.completed, result.error
    k = pd.read_parquet(out / "kpis.parquet")
    k = k[(k.scope == "feeder") & k.metric.isin(("overload_kwh", "overload_kwh_without_flex"))]
    over = k.pivot(index="feeder", columns="metric", values="value")
    mk = pd.read_parquet(out / "markets.parquet")
    aw = pd.read_parquet(out / "awards.parquet")
    mfrr = float(aw[aw.market_id.isin(mk.market_id[mk.product_id == "mFRR"])].accepted_kw.sum()) * 0.25
    return over, mfrr, out


@pytest.fixture(scope="module")
def competition(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp = tmp_path_factory.mktemp("coord")
    return {rule: _overload("tso_dso_competition", tmp, rule) for rule in ("grid_headroom", "dso_prevails")}


def test_trading_flexibility_never_adds_energy_above_a_feeder_limit(competition: Runs) -> None:
    over, mfrr, out = competition["grid_headroom"]
    assert mfrr > 1000.0  # the TSO still buys regulating power (more than 1 MWh over the two days)
    assert (over.overload_kwh <= over.overload_kwh_without_flex + 1e-6).all(), over
    conflicts = pd.read_parquet(out / "conflicts.parquet")
    assert len(conflicts) > 0 and set(conflicts.action) <= {"trimmed", "refused"}
    assert set(conflicts.rule) == {"grid_headroom"}
    # the rule that protects only the DSO's windows lets the same TSO trading overload a feeder more
    old, old_mfrr, _ = competition["dso_prevails"]
    assert (old.overload_kwh > old.overload_kwh_without_flex + 1e-6).any(), old
    assert old_mfrr > mfrr


def test_the_audit_replays_trimmed_books(competition: Runs) -> None:
    _, _, out = competition["grid_headroom"]
    conflicts = pd.read_parquet(out / "conflicts.parquet")
    assert (conflicts.action == "trimmed").any()
    audit = audit_run(out)
    assert audit.ok, [(m.market_id, m.differences) for m in audit.markets if not m.ok]


# == the mFRR product takes a declared footprint, and checks it ==================================
@pytest.fixture
def make_scenario() -> Callable[..., Scenario]:
    return all_products_scenario


def test_mfrr_bids_declare_their_footprint_on_the_run_feeders(harness) -> None:
    h = harness
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(2000.0,), product="mFRR", location="*", interval_minutes=15)))
    good = {"kw@feeder-1": (600.0,), "kw@feeder-2": (400.0,), "rebound_kwh@feeder-1": 50.0}
    cases = [
        ("agg-a", "good", good),
        ("agg-a", "short", {"kw@feeder-1": (500.0,)}),  # 500 kW declared for a 1000 kW bid
        ("agg-b", "elsewhere", {"kw@feeder-2": (1000.0,)}),  # agg-b has no households on feeder-2
        ("agg-c", "unknown", {"kw@feeder-9": (1000.0,)}),  # not a feeder of this run
        ("agg-c", "negative", {"kw@feeder-2": (-1000.0,)}),
    ]
    for seller, bid_id, attrs in cases:
        h.at(5, lambda s=seller, b=bid_id, a=attrs: h.send(s, bid(h, s, b, 0.3, (1000.0,), product="mFRR", attrs=a)))
    h.run(7)
    assert [a.ref_id for a in received(h, "agg-a", Acknowledgement) if a.ref_id == "good"] == ["good"]
    (short,) = rejections(h, "agg-a")
    assert short.reason == RejectReason.OUT_OF_RANGE and "fall short" in short.detail
    (elsewhere,) = rejections(h, "agg-b")
    assert "no portfolio on 'feeder-2'" in elsewhere.detail
    unknown, negative = rejections(h, "agg-c")
    assert "kw@feeder-9" in unknown.detail and "kw@feeder-2" in negative.detail
