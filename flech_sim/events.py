"""Platform events: what one core component tells others without reaching into their state.

Products publish; observers (the TSO/DSO coordinator, study outputs) subscribe.
Events are frozen and carry only what an observer may know, never a product's
internal ``Market``. Delivery is synchronous and in subscription order, so a
run stays deterministic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .messages import Direction

E = TypeVar("E")


@dataclass(frozen=True)
class MarketCleared:
    """A market was cleared: its terms and, per interval, the total kW awarded (0 where nothing was)."""

    product_id: str
    market_id: str
    buyer: str
    location: str
    direction: Direction
    delivery_start: int
    interval_minutes: int
    awarded_kw: tuple[float, ...]
    accepted_by_bid: tuple[tuple[str, tuple[float, ...]], ...] = ()
    """(bid ID, kW accepted per interval) of every award: what the coordinator commits on the grid."""

    @property
    def delivery_end(self) -> int:
        return self.delivery_start + self.interval_minutes * len(self.awarded_kw)


@dataclass(frozen=True)
class MarketEnded:
    """A market left the life cycle: ``state`` is 'settled', 'cancelled' or 'failed'."""

    product_id: str
    market_id: str
    state: str


class EventBus:
    """Synchronous publish/subscribe keyed by event type."""

    def __init__(self) -> None:
        self._subs: dict[type[Any], list[Callable[[Any], None]]] = defaultdict(list)

    def subscribe(self, event_type: type[E], handler: Callable[[E], None]) -> None:
        self._subs[event_type].append(handler)

    def publish(self, event: object) -> None:
        for handler in self._subs.get(type(event), ()):
            handler(event)
