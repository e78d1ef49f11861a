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

Message IDs are scoped per sender and remembered only once the sender is
authenticated, so nothing one participant sends, accepted or rejected, can make
another's message a duplicate. A message ID is remembered with its answer for at
least ``DUPLICATE_WINDOW_MINUTES`` (a week; two generations that rotate, so a
year of traffic does not keep millions of IDs in memory). The same message again
(a broker delivers at least once) is answered as the first time -- the same ack
or rejection, the copy recorded with verdict ``redelivery`` -- and nothing is done
twice; another message under a used ID is refused as ``duplicate`` under an ID of
its own (``flech-duplicate-<seq>``), so its rejection cannot be read as one of the
first message. A replay older than the window is still caught downstream: market
IDs are unique per product, bid IDs per market and activation IDs per market, and
a market whose gate has closed refuses bids.

Every incoming message is type-checked (JSON and typed messages built in-process
alike, :func:`flech_sim.messages.checked_copy`) and bounded
(:mod:`flech_sim.limits`) before anything else. A rejected message with fields
beyond the limits is recorded with its envelope columns clipped to what a column
holds (IDs to ``MAX_ID_CHARS``, ``sent_at`` clamped to [0, ``MAX_MINUTE``]); its
payload column keeps the message as sent (text beyond ``MAX_MESSAGE_BYTES`` cut
off, with a marker; a lone surrogate escaped).
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from heapq import heappush
from typing import Any, NamedTuple

import simpy
from simpy.core import NORMAL
from simpy.events import Event as _Event

from .limits import _PLANS, MAX_MESSAGE_BYTES, check_message, clamp_minute, clip_text
from .messages import (
    _DECODERS,
    _ENCODER,
    PLATFORM,
    Acknowledgement,
    Activation,
    Bid,
    MalformedMessage,
    MarketCancellation,
    MarketRequest,
    Message,
    MeterData,
    Rejected,
    Rejection,
    RejectReason,
    _encode,
    checked_copy,
    fields_of,
    from_json,
    to_json,
)
from .messages import _encode as _encode_in  # what comes in (the name _encode: what goes out, see --breakdown)
from .persistor import Persistor
from .schema import ROW_TYPES, TABLES, row

_MESSAGE_ROW: type[tuple[Any, ...]] = ROW_TYPES["messages"]
_new_tuple = tuple.__new__
_new_object = object.__new__
"""``_new_tuple(_MESSAGE_ROW, (...))``: a row built in C; the named tuple's own ``__new__`` is Python-level
and costs 2.5 times as much, on a path that writes two rows a message."""
_MESSAGE_COLUMNS = (
    "seq",
    "msg_id",
    "kind",
    "topic",
    "direction",
    "sender",
    "recipient",
    "authenticated_as",
    "market_id",
    "product_id",
    "sent_at",
    "ref_msg_id",
    "verdict",
    "payload",
)
if TABLES["messages"].names != _MESSAGE_COLUMNS:  # the two hot paths below fill a row by position
    raise ImportError(f"flech_sim.endpoint writes messages rows as {_MESSAGE_COLUMNS}; the schema has changed")

DUPLICATE_WINDOW_MINUTES = 7 * 24 * 60
_ACK_HEADS = 4096
"""Markets whose ack topic and JSON head the endpoint keeps (then it starts again: a year of markets
must not pile up; a head is rebuilt in a microsecond)."""
_PLATFORM_PREFIX = PLATFORM + "-"
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
        """A message ID unique to this participant (deterministic: a counter): ``<participant>-NNNNNN``."""
        self._counter += 1
        return self.participant_id + "-" + str(self._counter).zfill(6)  # f"{...}-{n:06d}", a third cheaper

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
        # Used message IDs and their answers, per sender: this generation and the previous one.
        self._seen: dict[str, dict[str, _Answer]] = {}
        self._seen_before: dict[str, dict[str, _Answer]] = {}
        self._generation_end: float = DUPLICATE_WINDOW_MINUTES
        self._seq = 0
        self._platform_ids = 0
        self.counts = {"in": 0, "out": 0, "rejected": 0}
        self._ack_heads: dict[tuple[str, str], tuple[str, bytes]] = {}  # (product, market) -> ack topic, JSON head

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
        """``flech-NNNNNNN``: the platform's own message IDs, in the order it sends."""
        self._platform_ids += 1
        return _PLATFORM_PREFIX + str(self._platform_ids).zfill(7)  # f"{PLATFORM}-{n:07d}", a third cheaper

    # -- incoming -------------------------------------------------------------------
    def receive(self, raw: Message | str | bytes, conn: Connection) -> None:
        """Check one incoming message, hand it on, and answer it. Never raises for bad input.

        Order: types (``malformed``: JSON and typed messages alike), size and plausibility
        (:mod:`flech_sim.limits`), the sender's identity (``unauthorised``), the sender's own
        message IDs (an exact redelivery is answered again as the first time; another message
        under a used ID is ``duplicate``), role and recipient, then the product. Exactly one
        ``messages`` row and one answer (ack or rejection) per call.
        """
        self.counts["in"] += 1
        self._seq += 1
        seq = self._seq
        t = self.env.now
        now = int(t)
        if isinstance(raw, Message):
            decoder = _DECODERS.get(type(raw))
            try:
                if decoder is None:
                    msg, text = checked_copy(raw)
                else:  # checked_copy(raw), inlined for a type it has seen (one a message); any error: the long way
                    try:
                        data = _encode_in(raw, raw.topic)
                        msg, text = decoder.decode(data), data.decode()
                    except Exception:  # noqa: BLE001 - checked_copy says what is wrong, as MalformedMessage
                        msg, text = checked_copy(raw)
            except MalformedMessage as exc:
                self._record_malformed(seq, _describe(raw), conn, str(exc), _fields_of(raw))
                return
            original: Message = raw
        else:
            text, why = _as_text(raw)
            try:
                if why:
                    raise MalformedMessage(why)
                msg = from_json(raw)
            except MalformedMessage as exc:
                reason = RejectReason.TOO_LARGE if why.startswith("message of") else RejectReason.MALFORMED
                self._record_malformed(seq, text, conn, str(exc), _best_effort_fields(text), reason)
                return
            original = msg
        try:
            if len(text) > MAX_MESSAGE_BYTES:
                raise Rejected(
                    RejectReason.TOO_LARGE,
                    f"message of {len(text)} characters as JSON; at most {MAX_MESSAGE_BYTES} (flech_sim.limits)",
                )
            plan = _PLANS.get(type(original))
            if plan is None or not plan.fast(original):  # check_message(original, now): its one-expression test
                check_message(original, now)
        except Rejected as rej:  # implausible: answered, never remembered as a used ID
            if len(text) > MAX_MESSAGE_BYTES:
                text = clip_text(text, MAX_MESSAGE_BYTES)
            self._record_in(seq, msg, conn, "rejected", text, safe=False)
            self._reject(
                conn,
                clip_text(msg.msg_id),
                msg.kind,
                clip_text(msg.market_id),
                clip_text(msg.product_id),
                rej.reason,
                rej.detail,
            )
            return
        if msg.sender != conn.participant_id:  # not its ID to use: nothing is remembered
            self._record_in(seq, msg, conn, "rejected", text)
            self._reject(
                conn,
                msg.msg_id,
                msg.kind,
                msg.market_id,
                msg.product_id,
                RejectReason.UNAUTHORISED,
                f"connection is authenticated as {conn.participant_id!r} but the message claims sender {msg.sender!r}",
            )
            return
        if not msg.msg_id:
            self._record_in(seq, msg, conn, "rejected", text)
            self._reject(
                conn,
                msg.msg_id,
                msg.kind,
                msg.market_id,
                msg.product_id,
                RejectReason.MALFORMED,
                "msg_id must not be empty",
            )
            return
        digest = hash(text if original is raw else to_json(msg))
        sender, msg_id = conn.participant_id, msg.msg_id
        if t >= self._generation_end:  # (the clock cannot move during this call, so neither can the generation)
            self._rotate(t)
        mine = self._seen.get(sender)
        if mine is None:
            mine = self._seen[sender] = {}
        used = mine.get(msg_id)
        if used is None and self._seen_before:
            used = self._used(sender, msg_id)
        if used is not None:
            self._answer_again(seq, msg, conn, text, used, digest)
            return
        try:
            if not (msg.recipient == PLATFORM and isinstance(msg, ROLE_MAY_SEND[conn.role])):
                self._authorise(msg, conn)  # says which of the two it is
            ref_id = self.route(msg)
        except Rejected as rej:
            mine[msg_id] = _answer((digest, None, rej.reason, rej.detail))
            self._record_in(seq, msg, conn, "rejected", text)
            self._reject(conn, msg.msg_id, msg.kind, msg.market_id, msg.product_id, rej.reason, rej.detail)
            return
        except Exception:
            # A bug, not bad input: record what arrived, then fail the run loudly.
            self._record_in(seq, msg, conn, "error", text)
            raise
        mine[msg_id] = _answer((digest, ref_id, None, ""))
        # self._record_in(seq, msg, conn, "accepted", text), inlined: the columns of _MESSAGE_COLUMNS, in order
        self.persistor.append(
            "messages",
            _new_tuple(
                _MESSAGE_ROW,
                (
                    seq,
                    msg_id,
                    msg.kind,
                    msg.topic,
                    "in",
                    sender,
                    msg.recipient,
                    sender,
                    msg.market_id,
                    msg.product_id,
                    msg.sent_at,
                    None,
                    "accepted",
                    text,
                ),
            ),
        )
        self._ack(conn, msg, ref_id)

    def refuse(self, raw: str | bytes, conn: Connection, reason: RejectReason, detail: str) -> None:
        """Record and refuse what a transport will not pass on (a flood, a topic not the message's):
        one ``messages`` row (verdict ``rejected``) and one rejection, like any refused message."""
        self.counts["in"] += 1
        seq = self._next_seq()
        text, why = _as_text(raw)
        try:
            if why:
                raise MalformedMessage(why)
            msg = from_json(raw)
            check_message(msg, self.now)
        except (MalformedMessage, Rejected):
            self._record_malformed(seq, text, conn, detail, _best_effort_fields(text), reason)
            return
        self._record_in(seq, msg, conn, "rejected", text)
        self._reject(conn, msg.msg_id, msg.kind, msg.market_id, msg.product_id, reason, detail)

    def _ack(self, conn: Connection, msg: Message, ref_id: str) -> None:
        """Acknowledge ``msg``: what :meth:`_deliver` does for any platform message, for the one message
        answered most (one a bid), with the ack's topic and the JSON in front of its fields kept per market
        (:data:`_ACK_HEADS`); the row and the payload are those of :meth:`_deliver` (tests/test_msgpath_ack.py)."""
        self._platform_ids += 1
        product_id, market_id, recipient = msg.product_id, msg.market_id, conn.participant_id
        now = int(self.env.now)
        ack = Acknowledgement(
            msg_id=_PLATFORM_PREFIX + str(self._platform_ids).zfill(7),  # new_msg_id(), inlined (one a message)
            sender=PLATFORM,
            recipient=recipient,
            market_id=market_id,
            product_id=product_id,
            sent_at=now,
            ref_msg_id=msg.msg_id,
            ref_id=ref_id,
        )
        key = (product_id, market_id)
        head = self._ack_heads.get(key)
        if head is None:
            if len(self._ack_heads) >= _ACK_HEADS:
                self._ack_heads.clear()
            topic = ack.topic
            head = self._ack_heads[key] = (topic, b'{"kind":"ack","topic":' + _ENCODER.encode(topic) + b",")
        self.counts["out"] += 1
        self._seq += 1
        # the columns of _MESSAGE_COLUMNS, in order (checked at import)
        self.persistor.append(
            "messages",
            _new_tuple(
                _MESSAGE_ROW,
                (
                    self._seq,
                    ack.msg_id,
                    "ack",
                    head[0],
                    "out",
                    PLATFORM,
                    recipient,
                    PLATFORM,
                    market_id,
                    product_id,
                    now,
                    ack.ref_msg_id,
                    "sent",
                    (head[1] + _ENCODER.encode(ack)[1:]).decode(),  # to_json(ack)
                ),
            ),
        )
        _put(conn.inbox, ack)

    # -- message IDs, per sender ------------------------------------------------------
    def _rotate(self, now: float) -> None:
        """Start a new generation of remembered IDs; the one before the last is forgotten."""
        self._seen_before, self._seen = self._seen, {}
        self._generation_end = now + DUPLICATE_WINDOW_MINUTES

    def _used(self, sender: str, msg_id: str) -> _Answer | None:
        """How a message of ``sender`` under ``msg_id`` was answered, if it was (within the window)."""
        if self.env.now >= self._generation_end:
            self._rotate(self.env.now)
        mine = self._seen.get(sender)
        used = mine.get(msg_id) if mine else None
        if used is None:
            before = self._seen_before.get(sender)
            used = before.get(msg_id) if before else None
        return used

    def _answer_again(self, seq: int, msg: Message, conn: Connection, text: str, used: _Answer, digest: int) -> None:
        """A message ID the sender used before: the same message again is answered as the first time
        (a broker delivers at least once; nothing is done twice), another message is a duplicate."""
        if used.digest == digest:
            self._record_in(seq, msg, conn, "redelivery", text)
            if used.reason is None:
                self._ack(conn, msg, used.ref_id or "")
            else:
                self._reject(conn, msg.msg_id, msg.kind, msg.market_id, msg.product_id, used.reason, used.detail)
            return
        # Recorded under an ID of its own, so that the rejection cannot be read as one of the first message.
        copy_id = f"{PLATFORM}-duplicate-{seq}"
        self._record_in(seq, msg, conn, "rejected", text, msg_id=copy_id)
        self._reject(
            conn,
            copy_id,
            msg.kind,
            msg.market_id,
            msg.product_id,
            RejectReason.DUPLICATE,
            f"message ID {msg.msg_id!r} was already used by another message of yours; "
            f"this one is recorded as {copy_id!r}",
        )

    def _authorise(self, msg: Message, conn: Connection) -> None:
        if not isinstance(msg, ROLE_MAY_SEND[conn.role]):
            raise Rejected(RejectReason.UNAUTHORISED, f"a {conn.role} may not send {msg.kind!r} messages")
        if msg.recipient != PLATFORM:
            raise Rejected(
                RejectReason.UNAUTHORISED,
                f"participants address the platform {PLATFORM!r}, not {msg.recipient!r}",
            )

    def _record_in(
        self,
        seq: int,
        msg: Message,
        conn: Connection,
        verdict: str,
        text: str,
        msg_id: str | None = None,
        safe: bool = True,
    ) -> None:
        """One ``messages`` row; ``safe=False``: fields beyond the limits, clipped for the columns
        (the payload keeps the message itself)."""
        if safe:  # the hot path: one row by position, the columns of _MESSAGE_COLUMNS in order (checked at import)
            self.persistor.append(
                "messages",
                _new_tuple(
                    _MESSAGE_ROW,
                    (
                        seq,
                        msg.msg_id if msg_id is None else msg_id,
                        msg.kind,
                        msg.topic,
                        "in",
                        msg.sender,
                        msg.recipient,
                        conn.participant_id,
                        msg.market_id,
                        msg.product_id,
                        msg.sent_at,
                        None,
                        verdict,
                        text,
                    ),
                ),
            )
            return
        msg_id = msg.msg_id if msg_id is None else msg_id
        msg_id, sender, recipient, market_id, product_id, topic = map(
            clip_text, (msg_id, msg.sender, msg.recipient, msg.market_id, msg.product_id, msg.topic)
        )
        self.persistor.append(
            "messages",
            _new_tuple(
                _MESSAGE_ROW,
                (
                    seq,
                    msg_id,
                    msg.kind,
                    topic,
                    "in",
                    sender,
                    recipient,
                    conn.participant_id,
                    market_id,
                    product_id,
                    clamp_minute(msg.sent_at),
                    None,
                    verdict,
                    text,
                ),
            ),
        )

    def _record_malformed(
        self,
        seq: int,
        text: str,
        conn: Connection,
        why: str,
        guess: dict[str, Any],
        reason: RejectReason = RejectReason.MALFORMED,
    ) -> None:
        sender, market_id, product_id = (_guess(guess, k) for k in ("sender", "market_id", "product_id"))
        msg_id = f"{PLATFORM}-malformed-{seq}"
        self.persistor.append(
            "messages",
            row(
                "messages",
                seq=seq,
                msg_id=msg_id,
                kind="malformed",
                topic="flech/-/-/malformed",
                direction="in",
                sender=sender,
                recipient=PLATFORM,
                authenticated_as=conn.participant_id,
                market_id=market_id,
                product_id=product_id,
                sent_at=self.now,
                ref_msg_id=None,
                verdict="rejected",
                payload=text,
            ),
        )
        self._reject(conn, msg_id, "malformed", market_id, product_id, reason, why)

    def _reject(
        self,
        conn: Connection,
        ref_msg_id: str,
        ref_kind: str,
        market_id: str,
        product_id: str,
        reason: RejectReason,
        detail: str,
    ) -> None:
        self.counts["rejected"] += 1
        rej = Rejection(
            msg_id=self.new_msg_id(),
            sender=PLATFORM,
            recipient=conn.participant_id,
            market_id=market_id,
            product_id=product_id,
            sent_at=self.now,
            ref_msg_id=ref_msg_id,
            reason=reason,
            detail=detail,
        )
        self.persistor.append(
            "rejections",
            row(
                "rejections",
                msg_id=rej.msg_id,
                ref_msg_id=ref_msg_id,
                ref_kind=ref_kind,
                participant=conn.participant_id,
                market_id=market_id,
                product_id=product_id,
                reason=str(reason),
                detail=detail,
                at=self.now,
            ),
        )
        self.send(rej)

    # -- outgoing -------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        """Deliver a platform message to its recipient's inbox and persist it."""
        conn = self._connections.get(msg.recipient)
        if conn is None:
            raise ValueError(f"platform tried to send {msg.kind} to unknown participant {msg.recipient!r}")
        self._deliver(conn, msg)

    def _deliver(self, conn: Connection, msg: Message) -> None:
        """Persist a platform message (one ``messages`` row) and put it into ``conn``'s inbox."""
        self.counts["out"] += 1
        self._seq += 1
        topic = msg.topic
        # the columns of _MESSAGE_COLUMNS, in order (checked at import)
        self.persistor.append(
            "messages",
            _new_tuple(
                _MESSAGE_ROW,
                (
                    self._seq,
                    msg.msg_id,
                    msg.kind,
                    topic,
                    "out",
                    msg.sender,
                    msg.recipient,
                    PLATFORM,
                    msg.market_id,
                    msg.product_id,
                    msg.sent_at,
                    getattr(msg, "ref_msg_id", None),
                    "sent",
                    _encode(msg, topic).decode(),  # to_json(msg, topic)
                ),
            ),
        )
        _put(conn.inbox, msg)

    @property
    def now(self) -> int:
        return int(self.env.now)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq


def _put(store: simpy.Store, item: Any) -> None:
    """``store.put(item)`` for an inbox with room (every inbox: unbounded): the same event, scheduled at
    the same moment with the same callback, so every later event keeps its place in SimPy's queue; the
    getter is woken when that event is processed, as before. Built with two Python calls instead of nine
    (issue 12: one a message out; the event is made and scheduled as ``Event.__init__`` and
    ``Environment.schedule`` do, without their frames). A store without room or with puts waiting goes
    the ordinary way.

    The event cannot be left out when no getter waits: a getter may start waiting before it is processed
    (another took the item) and is then woken by it, ahead of later events (tests/test_msgpath_shortcuts.py)."""
    if store.put_queue or len(store.items) >= store.capacity:
        store.put(item)
        return
    env = store._env
    event = _new_object(_Event)  # simpy.Event(env), its attributes set in the same order
    event.env = env
    event.callbacks = [store._trigger_get]
    store.items.append(item)
    event._ok, event._value = True, None  # event.succeed(), inlined
    heappush(env._queue, (env._now, NORMAL, next(env._eid), event))  # env.schedule(event), inlined


def _no_route(msg: Message) -> str:
    raise Rejected(RejectReason.UNKNOWN_PRODUCT, "no dispatcher is attached to the endpoint")


def _best_effort_fields(text: str) -> dict[str, Any]:
    """Routing fields of a malformed message, where they can be read, for the record."""
    try:
        data = json.loads(text)
    except Exception:  # noqa: BLE001 - invalid, too deep, numbers too long: nothing to read
        return {}
    return data if isinstance(data, dict) else {}


def _fields_of(msg: Message) -> dict[str, Any]:
    return {k: getattr(msg, k, None) for k in ("sender", "market_id", "product_id")}


def _guess(fields: dict[str, Any], key: str) -> str:
    """A routing field of a malformed message, for the record: a plausible string, or ''."""
    v = fields.get(key)
    return clip_text(v) if isinstance(v, str) else ""


def _as_text(raw: Any) -> tuple[str, str]:
    """(text to record, why it cannot be a message or ''): always valid UTF-8 and bounded."""
    if isinstance(raw, str):
        why = "" if len(raw) <= MAX_MESSAGE_BYTES else f"message of {len(raw)} characters"
        return clip_text(raw, MAX_MESSAGE_BYTES), why and f"{why}; at most {MAX_MESSAGE_BYTES} (flech_sim.limits)"
    if isinstance(raw, bytes | bytearray):
        why = "" if len(raw) <= MAX_MESSAGE_BYTES else f"message of {len(raw)} bytes"
        text = bytes(raw[:MAX_MESSAGE_BYTES]).decode("utf-8", "replace")
        return text, why and f"{why}; at most {MAX_MESSAGE_BYTES} (flech_sim.limits)"
    return _describe(raw), f"expected a message or JSON text, got {type(raw).__name__}"


def _describe(obj: Any) -> str:
    """A bounded, printable description of something that is not a valid message."""
    try:
        if isinstance(obj, Message):
            fields = ", ".join(f"{k}={reprlib.repr(v)}" for k, v in fields_of(obj).items())
            text = f"{type(obj).__name__}({fields})"
        else:
            text = reprlib.repr(obj)
    except Exception as exc:  # noqa: BLE001 - a hostile __repr__
        text = f"<{type(obj).__name__}: repr failed with {type(exc).__name__}>"
    return clip_text(text, MAX_MESSAGE_BYTES)


class _Answer(NamedTuple):
    """What the platform answered to a message ID: its ack (``reason`` None) or rejection."""

    digest: int  # hash of the message's canonical JSON: the same message again has the same
    ref_id: str | None
    reason: RejectReason | None
    detail: str


_answer: Callable[[tuple[int, str | None, RejectReason | None, str]], _Answer] = partial(tuple.__new__, _Answer)
"""``_answer((digest, ref_id, reason, detail))``: an :class:`_Answer` built in C (one a message: the
generated ``_Answer(...)`` is a Python-level ``__new__``, 0.3 us more)."""
