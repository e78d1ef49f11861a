"""Communication endpoint: terminates all traffic between participants and the platform.

In the seed it sits on an MQTT broker; here a participant holds a
:class:`Connection` (its authenticated session) and the endpoint delivers
replies into the participant's inbox (a SimPy store). The endpoint

* unmarshals raw JSON (the broker path) into typed messages,
* authenticates: the claimed sender must be the connection's identity, and
  the identity's role must be allowed to send that kind,
* forwards checked messages to the dispatcher, and answers each with an
  acknowledgement or a rejection that names the reason,
* persists every message, in and out, rejected and malformed included.

Duplicate message IDs are refused for at least ``DUPLICATE_WINDOW_MINUTES``
(a week) after first use: the IDs are kept in two generations that rotate,
so a year of traffic does not keep millions of IDs in memory. A replay older
than that is still caught downstream: market IDs are unique per product,
bid IDs per market and activation IDs per market, and a market whose gate
has closed refuses bids.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy

from .messages import (
    PLATFORM,
    Acknowledgement,
    Activation,
    Bid,
    MarketCancellation,
    MarketRequest,
    MeterData,
    Message,
    MalformedMessage,
    Rejected,
    RejectReason,
    Rejection,
    check_finite,
    from_json,
    to_json,
)
from .persistor import Persistor
from .schema import row

DUPLICATE_WINDOW_MINUTES = 7 * 24 * 60
_BUYER = (MarketRequest, MarketCancellation, Activation)
ROLE_MAY_SEND: dict[str, tuple[type[Message], ...]] = {
    "dso": _BUYER,
    "tso": _BUYER,
    "aggregator": (Bid,),
    "data_provider": (MeterData,),
}
"""Which message types each role may send to the platform (everything else is the platform's).
Subclasses count: a product's own bid type (a subclass of Bid) may be sent by aggregators."""


@dataclass
class Connection:
    """A participant's authenticated session with the platform (its MQTT client, in the seed)."""

    participant_id: str
    role: str
    inbox: simpy.Store
    _endpoint: Endpoint = field(repr=False)
    _counter: int = 0

    def next_id(self) -> str:
        """A message ID unique to this participant (deterministic: a counter)."""
        self._counter += 1
        return f"{self.participant_id}-{self._counter:06d}"

    def send(self, msg: Message | str | bytes) -> None:
        """Send a typed message or its raw JSON to the platform."""
        self._endpoint.receive(msg, self)

    @property
    def sent(self) -> int:
        return self._counter


class Endpoint:
    def __init__(self, env: simpy.Environment, persistor: Persistor) -> None:
        self.env = env
        self.persistor = persistor
        self.route: Callable[[Message], str] = _no_route
        self._connections: dict[str, Connection] = {}
        self._seen_ids: set[str] = set()  # this generation of used message IDs
        self._seen_before: set[str] = set()  # the previous generation
        self._generation_end = DUPLICATE_WINDOW_MINUTES
        self._seq = 0
        self._platform_ids = 0
        self.counts = {"in": 0, "out": 0, "rejected": 0}

    # -- participants ---------------------------------------------------------------
    def connect(self, participant_id: str, role: str) -> Connection:
        if participant_id in self._connections or participant_id == PLATFORM:
            raise ValueError(f"participant {participant_id!r} is already connected")
        if role not in ROLE_MAY_SEND:
            raise ValueError(f"unknown role {role!r}; known: {sorted(ROLE_MAY_SEND)}")
        conn = Connection(participant_id, role, simpy.Store(self.env), self)
        self._connections[participant_id] = conn
        return conn

    def role_of(self, participant_id: str) -> str | None:
        conn = self._connections.get(participant_id)
        return conn.role if conn else None

    def new_msg_id(self) -> str:
        self._platform_ids += 1
        return f"{PLATFORM}-{self._platform_ids:07d}"

    # -- incoming -------------------------------------------------------------------
    def receive(self, raw: Message | str | bytes, conn: Connection) -> None:
        """Check one incoming message, hand it on, and answer it. Never raises for bad input."""
        self.counts["in"] += 1
        seq = self._next_seq()
        if isinstance(raw, Message):
            msg = raw
            try:
                check_finite(msg)
                text = to_json(msg, msg.topic)
            except (TypeError, ValueError) as exc:  # NaN, infinity or an object JSON cannot carry
                self._record_malformed(seq, repr(msg), conn, f"not serialisable as JSON: {exc}")
                return
        else:
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            try:
                msg = from_json(raw)
            except MalformedMessage as exc:
                self._record_malformed(seq, text, conn, str(exc))
                return
        try:
            self._authenticate(msg, conn)
            ref_id = self.route(msg)
        except Rejected as rej:
            self._record_in(seq, msg, conn, "rejected", text)
            self._reject(conn, msg.msg_id, msg.kind, msg.market_id, msg.product_id, rej.reason, rej.detail)
            return
        except Exception:
            # A bug, not bad input: record what arrived, then fail the run loudly.
            self._record_in(seq, msg, conn, "error", text)
            raise
        self._record_in(seq, msg, conn, "accepted", text)
        self.send(
            Acknowledgement(
                msg_id=self.new_msg_id(),
                sender=PLATFORM,
                recipient=conn.participant_id,
                market_id=msg.market_id,
                product_id=msg.product_id,
                sent_at=self.now,
                ref_msg_id=msg.msg_id,
                ref_id=ref_id,
            )
        )

    def _authenticate(self, msg: Message, conn: Connection) -> None:
        if self.env.now >= self._generation_end:
            self._seen_before, self._seen_ids = self._seen_ids, set()
            self._generation_end = self.env.now + DUPLICATE_WINDOW_MINUTES
        if msg.msg_id in self._seen_ids or msg.msg_id in self._seen_before:
            raise Rejected(RejectReason.DUPLICATE, f"message ID {msg.msg_id!r} was already used")
        self._seen_ids.add(msg.msg_id)
        if msg.sender != conn.participant_id:
            raise Rejected(
                RejectReason.UNAUTHORISED,
                f"connection is authenticated as {conn.participant_id!r} but the message claims sender {msg.sender!r}",
            )
        if not isinstance(msg, ROLE_MAY_SEND[conn.role]):
            raise Rejected(RejectReason.UNAUTHORISED, f"a {conn.role} may not send {msg.kind!r} messages")
        if msg.recipient != PLATFORM:
            raise Rejected(
                RejectReason.UNAUTHORISED,
                f"participants address the platform {PLATFORM!r}, not {msg.recipient!r}",
            )

    def _record_in(self, seq: int, msg: Message, conn: Connection, verdict: str, text: str) -> None:
        self.persistor.append("messages", row(
            "messages", seq=seq, msg_id=msg.msg_id, kind=msg.kind, topic=msg.topic, direction="in",
            sender=msg.sender, recipient=msg.recipient, authenticated_as=conn.participant_id,
            market_id=msg.market_id, product_id=msg.product_id, sent_at=msg.sent_at, ref_msg_id=None,
            verdict=verdict, payload=text,
        ))

    def _record_malformed(self, seq: int, text: str, conn: Connection, why: str) -> None:
        guess = _best_effort_fields(text)
        msg_id = f"{PLATFORM}-malformed-{seq}"
        self.persistor.append("messages", row(
            "messages", seq=seq, msg_id=msg_id, kind="malformed", topic="flech/-/-/malformed", direction="in",
            sender=str(guess.get("sender", "")), recipient=PLATFORM, authenticated_as=conn.participant_id,
            market_id=str(guess.get("market_id", "")), product_id=str(guess.get("product_id", "")),
            sent_at=self.now, ref_msg_id=None, verdict="rejected", payload=text,
        ))
        self._reject(conn, msg_id, "malformed", str(guess.get("market_id", "")),
                     str(guess.get("product_id", "")), RejectReason.MALFORMED, why)

    def _reject(self, conn: Connection, ref_msg_id: str, ref_kind: str, market_id: str, product_id: str,
                reason: RejectReason, detail: str) -> None:
        self.counts["rejected"] += 1
        rej = Rejection(
            msg_id=self.new_msg_id(), sender=PLATFORM, recipient=conn.participant_id, market_id=market_id,
            product_id=product_id, sent_at=self.now, ref_msg_id=ref_msg_id, reason=reason, detail=detail,
        )
        self.persistor.append("rejections", row(
            "rejections", msg_id=rej.msg_id, ref_msg_id=ref_msg_id, ref_kind=ref_kind, participant=conn.participant_id,
            market_id=market_id, product_id=product_id, reason=str(reason), detail=detail, at=self.now,
        ))
        self.send(rej)

    # -- outgoing -------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Deliver a platform message to its recipient's inbox and persist it."""
        conn = self._connections.get(msg.recipient)
        if conn is None:
            raise ValueError(f"platform tried to send {msg.kind} to unknown participant {msg.recipient!r}")
        self.counts["out"] += 1
        topic = msg.topic
        self.persistor.append("messages", row(
            "messages", seq=self._next_seq(), msg_id=msg.msg_id, kind=msg.kind, topic=topic, direction="out",
            sender=msg.sender, recipient=msg.recipient, authenticated_as=PLATFORM, market_id=msg.market_id,
            product_id=msg.product_id, sent_at=msg.sent_at, ref_msg_id=getattr(msg, "ref_msg_id", None),
            verdict="sent", payload=to_json(msg, topic),
        ))
        conn.inbox.put(msg)

    @property
    def now(self) -> int:
        return int(self.env.now)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


def _no_route(msg: Message) -> str:
    raise Rejected(RejectReason.UNKNOWN_PRODUCT, "no dispatcher is attached to the endpoint")


def _best_effort_fields(text: str) -> dict[str, Any]:
    """Routing fields of a malformed message, where they can be read, for the record."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
