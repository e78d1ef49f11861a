"""Coordination between TSO and DSO markets that draw on the same aggregators.

A DSO that has bought a load *reduction* on a feeder for a window is
congested there; a TSO market clearing *more consumption* (up-regulation
of load, i.e. down-regulation of the system) from households on that
feeder in that window would worsen it (and vice versa for a DSO buying an
increase). The scenario's rule decides what happens:

* ``dso_prevails`` (default): the conflicting part of the TSO bid is taken
  out of the book (a block bid entirely) and the refusal is recorded;
* ``tso_prevails``: the bid clears as offered; the conflict is recorded;
* ``none``: no screening at all.

Every conflict is a row of the ``conflicts`` table, whatever the rule.
A bid without a location (pooled over feeders) is treated as coming from
every feeder its seller has households on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from .events import EventBus, MarketCleared, MarketEnded
from .messages import Bid, Direction, MarketRequest
from .schema import row

RULES = ("dso_prevails", "tso_prevails", "none")


@dataclass(frozen=True)
class CongestionWindow:
    market_id: str
    feeder: str
    direction: Direction
    start: int
    end: int


class ConflictLog(Protocol):
    def append(self, table: str, values: tuple[Any, ...]) -> None: ...


class Coordinator:
    """Learns of cleared DSO markets from the platform's events (``MarketCleared``, ``MarketEnded``),
    never from a product's internal state, and screens TSO books against them."""

    def __init__(
        self,
        rule: str,
        log: ConflictLog,
        events: EventBus,
        role_of: Callable[[str], str | None],
        seller_feeders: Mapping[str, frozenset[str]],
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown coordination rule {rule!r}; known: {RULES}")
        self.rule = rule
        self.log = log
        self.role_of = role_of
        self.seller_feeders = seller_feeders
        self._dso: dict[tuple[str, str], MarketCleared] = {}  # (product, market) -> cleared DSO market, in order
        events.subscribe(MarketCleared, self._on_cleared)
        events.subscribe(MarketEnded, self._on_ended)

    def _on_cleared(self, ev: MarketCleared) -> None:
        if self.role_of(ev.buyer) == "dso":
            self._dso[(ev.product_id, ev.market_id)] = ev

    def _on_ended(self, ev: MarketEnded) -> None:
        """Settled (delivery is over), cancelled or failed: it holds nothing any more."""
        self._dso.pop((ev.product_id, ev.market_id), None)

    def windows(self, start: int, end: int) -> list[CongestionWindow]:
        """Intervals overlapping [start, end) in which a DSO holds awarded flexibility on a feeder.

        DSO markets whose delivery ended by ``start`` are forgotten: a year of 15-minute TSO
        markets must not rescan every market ever cleared.
        """
        for key in [k for k, m in self._dso.items() if m.delivery_end <= start]:
            del self._dso[key]
        out = []
        # by product ID, then in clearing order: the order the coordinator used to scan products' markets in
        for m in sorted(self._dso.values(), key=lambda m: m.product_id):
            if m.delivery_start >= end:
                continue
            for i, kw in enumerate(m.awarded_kw):
                t = m.delivery_start + i * m.interval_minutes
                if t < end and start < t + m.interval_minutes and kw > 0:
                    out.append(CongestionWindow(m.market_id, m.location, m.direction, t, t + m.interval_minutes))
        return out

    def screen(self, req: MarketRequest, bids: list[Bid]) -> list[Bid]:
        """The bids of a TSO market that may be cleared under the rule; conflicts recorded."""
        if self.rule == "none" or self.role_of(req.sender) != "tso":
            return bids
        windows = self.windows(req.delivery_start, req.delivery_end)
        if not windows:
            return bids
        out = []
        for bid in bids:
            feeders = [bid.location] if bid.location else sorted(self.seller_feeders.get(bid.sender, ()))
            qty = list(bid.quantities_kw)
            for i, q in enumerate(bid.quantities_kw):
                if q <= 0:
                    continue
                t0 = req.delivery_start + i * req.interval_minutes
                t1 = t0 + req.interval_minutes
                hit = next(
                    (
                        w
                        for w in windows
                        if w.feeder in feeders and w.start < t1 and t0 < w.end and w.direction is not req.direction
                    ),
                    None,
                )
                if hit is None:
                    continue
                refused = self.rule == "dso_prevails"
                self.log.append(
                    "conflicts",
                    row(
                        "conflicts",
                        market_id=req.market_id,
                        bid_id=bid.bid_id,
                        seller=bid.sender,
                        feeder=hit.feeder,
                        interval=i,
                        interval_start=t0,
                        quantity_kw=float(q),
                        dso_market_id=hit.market_id,
                        rule=self.rule,
                        action="refused" if refused else "allowed",
                        reason=f"TSO {req.direction} would worsen DSO congestion ({hit.direction}) on {hit.feeder}",
                    ),
                )
                if refused:
                    qty[i] = 0.0
            if qty != list(bid.quantities_kw):
                if bid.block or not any(q > 0 for q in qty):
                    continue  # an all-or-nothing bid cannot be partly refused
                bid = msgspec.structs.replace(bid, quantities_kw=tuple(qty))
            out.append(bid)
        return out
