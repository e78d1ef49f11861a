"""Agent base: a SimPy process reading the participant's inbox and dispatching by message kind."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from typing import Any

import simpy

from ..endpoint import Connection
from ..messages import PLATFORM, Message
from ..persistor import Persistor
from ..schema import row

AGENT_ERRORS = "agent_errors"


class Recorder:
    """A participant's own output tables: a handle that writes only the tables it was given,
    so an agent records its own diagnostics without any way to write the platform's tables."""

    def __init__(self, persistor: Persistor, tables: frozenset[str]) -> None:
        self._persistor = persistor
        self.tables = tables

    def append(self, table: str, values: tuple[Any, ...]) -> None:
        if table not in self.tables:
            raise PermissionError(f"this recorder writes {sorted(self.tables)}, not {table!r}")
        self._persistor.append(table, values)


class Agent:
    """Subclasses define ``on_<kind>(msg)`` methods. A kind without one is not dropped: it is
    counted and recorded as a row of ``agent_errors`` (a platform message the agent cannot read
    is a protocol error someone must see)."""

    ignores: frozenset[str] = frozenset({"ack", "market_closed"})
    """Kinds received and deliberately not acted on (informational: an acknowledgement, a gate closure)."""

    def __init__(self, env: simpy.Environment, conn: Connection, recorder: Recorder) -> None:
        if AGENT_ERRORS not in recorder.tables:
            raise ValueError(f"an agent's recorder must take {AGENT_ERRORS!r}: unknown messages are recorded there")
        self.env = env
        self.conn = conn
        self.recorder = recorder
        self.received: Counter[str] = Counter()
        self.unhandled: Counter[str] = Counter()

    @property
    def id(self) -> str:
        return self.conn.participant_id

    @property
    def now(self) -> int:
        return int(self.env.now)

    def envelope(self, market_id: str, product_id: str) -> dict[str, Any]:
        """Routing fields for a message from this agent to the platform."""
        return {
            "msg_id": self.conn.next_id(),
            "sender": self.id,
            "recipient": PLATFORM,
            "market_id": market_id,
            "product_id": product_id,
            "sent_at": self.now,
        }

    def start(self) -> None:
        self.env.process(self._listen())

    def _listen(self) -> Generator[simpy.Event, Any, None]:
        while True:
            msg = yield self.conn.inbox.get()
            self.receive(msg)

    def receive(self, msg: Message) -> None:
        """Hand one message to its ``on_<kind>`` handler, or record that there is none."""
        self.received[msg.kind] += 1
        handler = getattr(self, f"on_{msg.kind}", None)
        if handler is None:
            if msg.kind in self.ignores:
                return
            self.unhandled[msg.kind] += 1
            self.recorder.append(
                AGENT_ERRORS,
                row(
                    AGENT_ERRORS,
                    participant=self.id,
                    msg_id=msg.msg_id,
                    kind=msg.kind,
                    market_id=msg.market_id,
                    product_id=msg.product_id,
                    at=self.now,
                    error="unhandled_kind",
                    detail=f"{type(self).__name__} has no handler for {msg.kind!r} messages; "
                    "the message was not acted on",
                ),
            )
        else:
            handler(msg)
