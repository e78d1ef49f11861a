"""A second transport behind the same endpoint: external participants' traffic and the run's clock.

The platform is unchanged: external participants hold :class:`~flech_sim.endpoint.Connection`\\ s
like simulated ones, and their messages go through :meth:`Endpoint.receive` with that connection
(the identity the wire authenticated). The :class:`Bridge` only

* forwards what the platform puts into an external participant's inbox to the wire (JSON, the
  ``messages`` table's payload),
* hands what arrives from the wire to the endpoint, after the transport's own checks (the message's
  topic must be the one it was published on; a participant sending faster than ``RateLimit`` allows is
  refused) -- every arrival becomes a ``messages`` row, refused or not, in arrival order,
* runs the clock: ``speed > 0`` on SimPy's :class:`~simpy.rt.RealtimeEnvironment` (``speed`` simulated
  minutes per wall minute: 60 = a simulated minute per wall second; waiting for arrivals, not sleeping,
  between events), ``speed == 0`` as fast as the
  external participants answer: simulated time moves on only once every bid request sent to them has
  been answered (a message of that participant about that market) or ``answer_timeout_s`` has passed.

A wire is anything with ``start(participants)``, ``publish(participant, text)``, ``get(timeout) ->
Incoming | None`` and ``close()``: :class:`flech_sim.bridge.mqtt.MqttWire` (a real broker) or
:class:`LoopbackWire` (a participant's strategy in-process, for tests and for comparing transports).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import simpy
import simpy.rt

from ..endpoint import Connection, Endpoint
from ..messages import BidRequest, MalformedMessage, Message, RejectReason, from_json, to_json


class WaitingRealtimeEnvironment(simpy.rt.RealtimeEnvironment):
    """SimPy's real-time environment that, instead of sleeping until the next event is due, waits for
    arrivals (``wait(seconds)``) and hands each on at once: no polling delay, and an arrival is handled
    before every event due after it (a bid that arrives before the gate closes is in time). It is
    stamped with the time of the last event (``env.now``; the endpoint records whole minutes)."""

    def __init__(self, factor: float, wait: Callable[[float], None]) -> None:
        super().__init__(factor=factor, strict=False)
        self._wait = wait

    def step(self) -> None:
        while True:
            evt_time = self.peek()
            if evt_time == simpy.core.Infinity:
                raise simpy.core.EmptySchedule
            delta = self.real_start + (evt_time - self.env_start) * self.factor - time.monotonic()
            if delta <= 0:
                break
            self._wait(delta)
        simpy.Environment.step(self)


@dataclass(frozen=True)
class Incoming:
    """One message as it arrived: who the wire authenticated, the topic it came on, the raw payload."""

    participant: str
    topic: str  # "<product>/<market>/<kind>": the published topic after flech/in/<participant>/
    payload: bytes
    dropped: str = ""  # why the wire did not keep the payload (its queue for this participant was full)
    denied: str = ""  # the broker refused this publish (its ACL): what its log says; there is no payload


class Wire(Protocol):
    def start(self, participants: Sequence[str]) -> None: ...
    def publish(self, participant: str, text: str) -> None: ...
    def get(self, timeout: float) -> Incoming | None: ...
    def close(self) -> None: ...


class Transport(Protocol):
    """What :func:`flech_sim.simulation.run` needs of its ``transport`` (:class:`Bridge` is one)."""

    external: frozenset[str]

    def environment(self) -> simpy.Environment: ...
    def attach(self, core: Any) -> None: ...
    def run_clock(self, env: simpy.Environment, until: int) -> None: ...
    def describe(self) -> dict[str, Any]: ...


@dataclass
class RateLimit:
    """A token bucket per participant, in wall time: ``burst`` messages at once, ``per_second`` sustained."""

    per_second: float = 200.0
    burst: int = 400
    _tokens: dict[str, float] = field(default_factory=dict)
    _at: dict[str, float] = field(default_factory=dict)

    def allow(self, participant: str, now: float) -> bool:
        tokens = self._tokens.get(participant, float(self.burst))
        tokens = min(float(self.burst), tokens + (now - self._at.get(participant, now)) * self.per_second)
        self._at[participant] = now
        if tokens < 1.0:
            self._tokens[participant] = tokens
            return False
        self._tokens[participant] = tokens - 1.0
        return True


@dataclass
class BridgeStats:
    received: int = 0
    published: int = 0
    refused_topic: int = 0
    refused_rate: int = 0
    denied_by_broker: int = 0
    deadlines_passed: int = 0  # speed 0: the clock moved on without an answer
    unknown_participant: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    """Wall seconds from an arrival to its answer published (the latest 100,000)."""


class Bridge:
    """The transport for :func:`flech_sim.simulation.run` (its ``transport`` argument)."""

    def __init__(
        self,
        wire: Wire,
        external: frozenset[str],
        speed: float = 0.0,
        answer_timeout_s: float = 5.0,
        rate: RateLimit | None = None,
        quiet_s: float = 0.005,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0: as fast as the external participants answer)")
        self.wire = wire
        self.external = frozenset(external)
        self.speed = speed
        self.answer_timeout_s = answer_timeout_s
        self.quiet_s = quiet_s
        self.rate = rate or RateLimit()
        self.stats = BridgeStats()
        self.endpoint: Endpoint | None = None
        self.conns: dict[str, Connection] = {}
        self._pending: dict[str, set[str]] = {}  # participant -> markets it was asked to bid in
        self._arrived: dict[str, float] = {}  # participant -> wall time of its last accepted arrival
        self.env: simpy.Environment | None = None
        self._stop = threading.Event()

    # -- the Transport interface of flech_sim.simulation.run --------------------------------------
    def environment(self) -> simpy.Environment:
        self.env = (
            WaitingRealtimeEnvironment(60.0 / self.speed, self._wait_wall) if self.speed > 0 else simpy.Environment()
        )
        return self.env

    def attach(self, core: Any) -> None:
        """Take the external participants' connections and start forwarding their inboxes."""
        missing = self.external - set(core.external)
        if missing:
            raise ValueError(f"not participants of the scenario: {sorted(missing)}")
        self.endpoint = core.endpoint
        self.conns = dict(core.external)
        self._pending = {pid: set() for pid in self.conns}
        assert self.env is not None
        for pid in sorted(self.conns):
            self.env.process(self._forward(self.conns[pid]))
        self.wire.start(sorted(self.conns))

    def run_clock(self, env: simpy.Environment, until: int) -> None:
        try:
            if isinstance(env, simpy.rt.RealtimeEnvironment):
                env.sync()  # the clock starts now, not when the world was built
                env.run(until=until)
            else:
                self._run_answered(env, until)
            flush = getattr(self.wire, "flush", None)
            if flush is not None:  # e.g. the broker log's last lines
                flush()
            self._drain(0.0)  # what arrived before the end is recorded too
        finally:
            self.wire.close()

    def describe(self) -> dict[str, Any]:
        """For the run's manifest: the external participants, the clock and the transport's counts."""
        s = self.stats
        lat = sorted(s.latencies_s)
        return {
            "wire": type(self.wire).__name__,
            "external": sorted(self.external),
            "speed": self.speed,
            "answer_timeout_s": self.answer_timeout_s,
            "rate_limit": {"per_second": self.rate.per_second, "burst": self.rate.burst},
            "received": s.received,
            "published": s.published,
            "refused_topic": s.refused_topic,
            "refused_rate": s.refused_rate,
            "denied_by_broker": s.denied_by_broker,
            "deadlines_passed": s.deadlines_passed,
            "unknown_participant": s.unknown_participant,
            "answer_ms_median": round(1e3 * lat[len(lat) // 2], 3) if lat else None,
        }

    # -- outgoing ---------------------------------------------------------------------------------
    def _forward(self, conn: Connection) -> Generator[simpy.Event, Any, None]:
        pid = conn.participant_id
        while True:
            msg: Message = yield conn.inbox.get()
            if isinstance(msg, BidRequest):
                self._pending[pid].add(msg.market_id)
            self.wire.publish(pid, to_json(msg))
            self.stats.published += 1
            arrived = self._arrived.pop(pid, None)
            if arrived is not None:  # the answer to what it just sent (ack or rejection)
                self.stats.latencies_s.append(time.perf_counter() - arrived)

    # -- incoming ---------------------------------------------------------------------------------
    def deliver(self, item: Incoming) -> None:
        """Hand one arrival to the endpoint: exactly one ``messages`` row and one answer."""
        assert self.endpoint is not None
        self.stats.received += 1
        conn = self.conns.get(item.participant)
        if conn is None:  # the broker's ACL lets only external participants publish: a misconfigured broker
            self.stats.unknown_participant += 1
            return
        if item.denied:  # recorded as it reached the broker; not a message the platform could act on
            self.stats.denied_by_broker += 1
            self.endpoint.refuse(
                f"(refused by the broker: {item.denied})",
                conn,
                RejectReason.UNAUTHORISED,
                f"the broker refused {item.denied}: not a topic of yours (broker ACL)",
            )
            return
        now = time.perf_counter()
        if item.dropped or not self.rate.allow(item.participant, now):
            self.stats.refused_rate += 1
            self.endpoint.refuse(
                item.payload,
                conn,
                RejectReason.RATE_LIMITED,
                item.dropped
                or (
                    f"more than {self.rate.burst} messages at once or {self.rate.per_second:g} a second "
                    "(flech_sim.bridge.RateLimit)"
                ),
            )
            return
        self._arrived[item.participant] = now
        try:
            msg = from_json(item.payload)
        except MalformedMessage:
            msg = None  # the endpoint records and refuses it, saying why
        if msg is not None and msg.topic != f"flech/{item.topic}":
            self.stats.refused_topic += 1
            self.endpoint.refuse(
                item.payload,
                conn,
                RejectReason.UNAUTHORISED,
                f"published on flech/in/{item.participant}/{item.topic[:200]} but the message's "
                f"topic is {msg.topic[:200]}: publish under flech/in/<you>/ + the message's topic",
            )
            return
        if msg is not None:
            self._pending[item.participant].discard(msg.market_id)
        self.endpoint.receive(item.payload, conn)

    def _drain(self, quiet_s: float) -> None:
        """Deliver what has arrived; wait up to ``quiet_s`` for more after the last one."""
        while (item := self.wire.get(quiet_s)) is not None:
            self.deliver(item)

    def stop(self) -> None:
        """Real time: end ``run_clock`` at the current simulated time (from any thread; within 0.1 s)."""
        self._stop.set()

    def _wait_wall(self, seconds: float) -> None:
        """Real time: wait up to ``seconds`` for an arrival; deliver it and whatever came with it."""
        if self._stop.is_set():
            raise simpy.core.StopSimulation(None)
        item = self.wire.get(min(seconds, 0.1))
        if item is not None:
            self.deliver(item)
            self._drain(0.0)

    def _run_answered(self, env: simpy.Environment, until: int) -> None:
        """Step events; before simulated time moves on, wait for the external participants' answers."""
        while True:
            if env.peek() > env.now:  # every event of this minute is done
                self._await_answers()
                if env.peek() <= env.now:  # the answers made more work at this minute
                    continue
                if env.peek() >= until:
                    break
            env.step()
        env.run(until=until)

    def _await_answers(self) -> None:
        self._drain(0.0)
        if not any(self._pending.values()):
            return
        deadline = time.perf_counter() + self.answer_timeout_s
        while any(self._pending.values()):
            left = deadline - time.perf_counter()
            item = self.wire.get(left) if left > 0 else None
            if item is None:
                self.stats.deadlines_passed += sum(len(m) for m in self._pending.values())
                break
            self.deliver(item)
        for markets in self._pending.values():
            markets.clear()
        self._drain(self.quiet_s)


class LoopbackWire:
    """External participants answered in-process by ``strategy(participant, text) -> [texts]``: the same
    JSON in and out as over a broker, with no network (tests; the reference for a broker run)."""

    def __init__(self, strategy: Callable[[str, str], list[str]]) -> None:
        self.strategy = strategy
        self._queue: queue.SimpleQueue[Incoming] = queue.SimpleQueue()

    def start(self, participants: Sequence[str]) -> None:
        pass

    def publish(self, participant: str, text: str) -> None:
        for out in self.strategy(participant, text):
            topic = from_json(out).topic.removeprefix("flech/")
            self._queue.put(Incoming(participant, topic, out.encode()))

    def get(self, timeout: float) -> Incoming | None:
        """Never waits: every answer is in the queue as soon as its request was published."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        pass
