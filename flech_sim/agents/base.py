"""Agent base: a SimPy process reading the participant's inbox and dispatching by message kind."""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator
from typing import Any

import simpy

from ..endpoint import Connection
from ..messages import PLATFORM


class Agent:
    """Subclasses define ``on_<kind>(msg)`` methods; unhandled kinds are counted, not lost."""

    def __init__(self, env: simpy.Environment, conn: Connection) -> None:
        self.env = env
        self.conn = conn
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
        return {"msg_id": self.conn.next_id(), "sender": self.id, "recipient": PLATFORM,
                "market_id": market_id, "product_id": product_id, "sent_at": self.now}

    def start(self) -> None:
        self.env.process(self._listen())

    def _listen(self) -> Generator[simpy.Event, Any, None]:
        while True:
            msg = yield self.conn.inbox.get()
            self.received[msg.kind] += 1
            handler = getattr(self, f"on_{msg.kind}", None)
            if handler is None:
                self.unhandled[msg.kind] += 1
            else:
                handler(msg)
