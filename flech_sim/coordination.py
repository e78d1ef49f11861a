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

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .messages import Bid, Direction, MarketRequest
from .persistor import Persistor
from .products.base import Market, MarketState, Product

RULES = ("dso_prevails", "tso_prevails", "none")
_COMMITTED = (MarketState.CLEARED, MarketState.DELIVERED, MarketState.SETTLED)


@dataclass(frozen=True)
class CongestionWindow:
    market_id: str
    feeder: str
    direction: Direction
    start: int
    end: int


class Coordinator:
    def __init__(self, rule: str, persistor: Persistor, products: Mapping[str, Product],
                 role_of: Callable[[str], str | None], seller_feeders: Mapping[str, frozenset[str]]) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown coordination rule {rule!r}; known: {RULES}")
        self.rule = rule
        self.persistor = persistor
        self.products = products
        self.role_of = role_of
        self.seller_feeders = seller_feeders
        self._seen: dict[str, int] = {}  # markets of each product already looked at
        self._dso: list[Market] = []  # DSO markets whose delivery has not ended

    def windows(self, start: int, end: int) -> list[CongestionWindow]:
        """Intervals overlapping [start, end) in which a DSO holds awarded flexibility on a feeder.

        Only DSO markets are kept, and dropped once delivered: a year of 15-minute TSO
        markets must not rescan every market ever opened (that was quadratic).
        """
        for pid, product in self.products.items():
            seen = self._seen.get(pid, 0)
            for m in product.opened[seen:]:
                if self.role_of(m.request.sender) == "dso":
                    self._dso.append(m)
            self._seen[pid] = len(product.opened)
        self._dso = [m for m in self._dso if m.request.delivery_end > start and m.state is not MarketState.CANCELLED]
        out = []
        for m in self._dso:
            req = m.request
            if m.state not in _COMMITTED or m.outcome is None or req.delivery_start >= end:
                continue
            for i in range(req.n_intervals):
                t = m.interval_start(i)
                if t < end and start < t + req.interval_minutes and any(a.accepted_kw[i] > 0 for a in m.awards):
                    out.append(CongestionWindow(m.market_id, req.location, req.direction, t, t + req.interval_minutes))
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
                hit = next((w for w in windows if w.feeder in feeders and w.start < t1 and t0 < w.end
                            and w.direction is not req.direction), None)
                if hit is None:
                    continue
                refused = self.rule == "dso_prevails"
                self.persistor.append("conflicts", (
                    req.market_id, bid.bid_id, bid.sender, hit.feeder, i, t0, float(q), hit.market_id,
                    self.rule, "refused" if refused else "allowed",
                    f"TSO {req.direction} would worsen DSO congestion ({hit.direction}) on {hit.feeder}",
                ))
                if refused:
                    qty[i] = 0.0
            if qty != list(bid.quantities_kw):
                if bid.block or not any(q > 0 for q in qty):
                    continue  # an all-or-nothing bid cannot be partly refused
                bid = dataclasses.replace(bid, quantities_kw=tuple(qty))
            out.append(bid)
        return out
