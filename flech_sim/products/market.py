"""A market's platform-side state and what the core lends a product (no behaviour here)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import simpy

from ..clearing import ClearingOutcome, SolverOptions
from ..events import EventBus
from ..messages import Award, Bid, MarketRequest, Message
from ..metering import MeterService
from ..persistor import Persistor

if TYPE_CHECKING:  # products never import the scenario: scenario -> registry -> products stays acyclic
    from ..imbalance_price import ImbalancePrices
    from ..scenario import SettlementConfig

__all__ = ["Market", "MarketState", "PlatformServices"]


class MarketState(StrEnum):
    OPEN = "open"
    GATE_CLOSED = "gate_closed"
    CLEARED = "cleared"
    DELIVERED = "delivered"
    SETTLED = "settled"
    CANCELLED = "cancelled"
    FAILED = "failed"


def _no_screen(request: MarketRequest, bids: list[Bid]) -> list[Bid]:
    return bids


@dataclass
class PlatformServices:
    """What the core lends a product: clock, storage, replies, directory, meters, settings, events."""

    env: simpy.Environment
    persistor: Persistor
    reply: Callable[[Message], None]
    new_msg_id: Callable[[], str]
    sellers_at: Callable[[str], list[str]]
    meter: MeterService
    solver: SolverOptions
    settlement: SettlementConfig
    locations: frozenset[str]
    screen: Callable[[MarketRequest, list[Bid]], list[Bid]] = _no_screen
    """Coordination between buyers (flech_sim.coordination): what of a market's book may be cleared."""
    events: EventBus = field(default_factory=EventBus)
    """Products publish MarketCleared and MarketEnded here (flech_sim.events)."""
    is_participant: Callable[[str], bool] = lambda _pid: False
    """Whether an ID is a connected participant's: market IDs are namespaced by it (validation.check_request)."""
    imbalance_prices: ImbalancePrices | None = None
    """Spot and imbalance prices of the run: what the 'imbalance' settlement rule settles deviations at."""


@dataclass
class Market:
    """Platform-side state of one market (internal to its product; never sent as is)."""

    request: MarketRequest
    requested_at: int
    penalty_price: float
    state: MarketState = MarketState.OPEN
    bids: list[Bid] = field(default_factory=list)
    """Acknowledged bids in arrival order: the order the platform assigns, which breaks ties."""
    bid_ids: set[str] = field(default_factory=set)
    book: list[Bid] = field(default_factory=list)
    """The bids that go into clearing: ``bids`` after the TSO/DSO coordination screen."""
    baselines: dict[str, tuple[float, ...]] = field(default_factory=dict)
    outcome: ClearingOutcome | None = None
    awards: list[Award] = field(default_factory=list)
    cleared_at: int | None = None
    settled_at: int | None = None
    note: str = ""
    n_bids: int = 0
    procured_kwh: float = 0.0  # accepted energy (set when cleared)
    unmet_kwh: float = 0.0
    cost_dkk: float = 0.0  # what the awards pay
    terms: dict[str, Any] = field(default_factory=dict)
    """The product's terms of this market: the request's params checked, defaults filled in."""
    activated: dict[str, list[float]] = field(default_factory=dict)
    """Options: bid ID -> kW activated per interval so far (never above the bid's award)."""
    activation_ids: set[str] = field(default_factory=set)
    arrival: dict[str, int] = field(default_factory=dict)
    """Bid ID -> arrival position in this market (0, 1, ...): the tie-break, also for activations."""

    @property
    def market_id(self) -> str:
        return self.request.market_id

    @property
    def hours(self) -> float:
        return self.request.interval_minutes / 60.0

    def interval_start(self, i: int) -> int:
        return self.request.delivery_start + i * self.request.interval_minutes

    @property
    def bidders(self) -> list[str]:
        return sorted({b.sender for b in self.bids})
