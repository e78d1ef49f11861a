"""Shared fixtures: a bare FLECH core with scripted participants, and small scenarios."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import simpy

from flech_sim.endpoint import Connection
from flech_sim.messages import PLATFORM, Bid, Direction, MarketRequest, Message
from flech_sim.persistor import Persistor
from flech_sim.scenario import Scenario, scenario_from_dict
from flech_sim.simulation import Core, build_core

REPO = Path(__file__).resolve().parents[1]

BASE_SCENARIO: dict[str, Any] = {
    "name": "unit",
    "seed": 7,
    "start": "2026-01-12T00:00:00",
    "horizon_hours": 96,
    "feeders": {"feeder-1": {"limit_kw": 400}, "feeder-2": {"limit_kw": 300}},
    "buyers": [
        {
            "id": "dso-1",
            "role": "dso",
            "markets": [
                {"product": "SRP", "location": "feeder-1", "count": 2, "need_kw": [60, 90, 90, 60], "price_cap": 3.0}
            ],
        }
    ],
    "aggregators": [
        {"id": "agg-a", "households": {"feeder-1": 120, "feeder-2": 50}},
        {
            "id": "agg-b",
            "households": {"feeder-1": 90},
            "bidding": {"strategy": "risk_aware", "steps": 2, "block_last_step": True},
        },
    ],
}


def scenario_dict(**overrides: Any) -> dict[str, Any]:
    d = copy.deepcopy(BASE_SCENARIO)
    d.update(overrides)
    return d


@pytest.fixture
def make_scenario() -> Callable[..., Scenario]:
    return lambda **kw: scenario_from_dict(scenario_dict(**kw))


@dataclass
class Participant:
    """A scripted participant: sends what a test tells it, keeps everything it receives."""

    conn: Connection
    inbox: list[Message] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.conn.participant_id

    def env_fields(self, market_id: str, product_id: str, now: int, **kw: Any) -> dict[str, Any]:
        return {
            "msg_id": self.conn.next_id(),
            "sender": self.id,
            "recipient": PLATFORM,
            "market_id": market_id,
            "product_id": product_id,
            "sent_at": now,
            **kw,
        }

    def of(self, kind: str) -> list[Message]:
        return [m for m in self.inbox if m.kind == kind]


@dataclass
class Harness:
    env: simpy.Environment
    core: Core
    persistor: Persistor
    people: dict[str, Participant]

    def at(self, minute: int, action: Callable[[], None]) -> None:
        def proc():  # type: ignore[no-untyped-def]
            yield self.env.timeout(minute - self.env.now)
            action()

        self.env.process(proc())

    def run(self, until: int) -> None:
        self.env.run(until=until)

    def request(
        self,
        market_id: str = "m1",
        *,
        need: tuple[float, ...] = (100.0,),
        cap: float = 3.0,
        gate_close: int = 60,
        delivery_start: int = 120,
        interval_minutes: int = 60,
        location: str = "feeder-1",
        product: str = "SRP",
        buyer: str = "dso-1",
        **kw: Any,
    ) -> MarketRequest:
        p = self.people[buyer]
        return MarketRequest(
            **p.env_fields(market_id, product, int(self.env.now)),
            location=location,
            direction=kw.pop("direction", Direction.DOWN),
            gate_close=gate_close,
            delivery_start=delivery_start,
            interval_minutes=interval_minutes,
            need_kw=need,
            price_cap=cap,
            **kw,
        )

    def bid(
        self,
        seller: str,
        bid_id: str,
        price: float,
        qty: tuple[float, ...],
        *,
        market_id: str = "m1",
        block: bool = False,
        baseline: tuple[float, ...] | None = None,
        product: str = "SRP",
    ) -> Bid:
        p = self.people[seller]
        return Bid(
            **p.env_fields(market_id, product, int(self.env.now)),
            bid_id=bid_id,
            price=price,
            quantities_kw=qty,
            block=block,
            baseline_kw=baseline if baseline is not None else tuple(500.0 for _ in qty),
        )

    def send(self, who: str, msg: Message | str) -> None:
        self.people[who].conn.send(msg)


def _drain(env: simpy.Environment, part: Participant):  # type: ignore[no-untyped-def]
    while True:
        msg = yield part.conn.inbox.get()
        part.inbox.append(msg)


@pytest.fixture
def harness(tmp_path: Path, make_scenario: Callable[..., Scenario]) -> Harness:
    """A core with participants dso-1 (dso), agg-a and agg-b (aggregators, feeder-1), datahub."""
    scenario = make_scenario()
    env = simpy.Environment()
    persistor = Persistor(tmp_path / "run", scenario.start)
    sellers = {
        "agg-a": frozenset({"feeder-1", "feeder-2"}),
        "agg-b": frozenset({"feeder-1"}),
        "agg-c": frozenset({"feeder-2"}),
    }
    points = frozenset(f"{s}@{loc}" for s, locs in sellers.items() for loc in locs)
    core = build_core(env, persistor, scenario, sellers, points)
    people = {}
    for pid, role in [
        ("dso-1", "dso"),
        ("agg-a", "aggregator"),
        ("agg-b", "aggregator"),
        ("agg-c", "aggregator"),
        ("datahub", "data_provider"),
    ]:
        people[pid] = Participant(core.endpoint.connect(pid, role))
        env.process(_drain(env, people[pid]))
    return Harness(env, core, persistor, people)
