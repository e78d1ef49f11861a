"""Checks every product applies to market requests and bids: pure functions that raise Rejected.

They see only the message and what the platform knows (clock, locations, eligible
sellers, the market's request), never a SimPy process, so each is tested on its own
and the record of a run can be re-checked. The order of the checks is the order of
the reason codes a sender gets. :func:`finite_number` / :func:`finite_numbers` are the
one finite-number test of the products.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

from ..messages import Bid, MarketRequest, Rejected, RejectReason

__all__ = [
    "bid_passes",
    "check_bid",
    "check_declared_baseline",
    "check_request",
    "finite_nonneg",
    "finite_number",
    "finite_numbers",
    "namespace_owner",
]


def finite_number(x: object) -> bool:
    """A real int or float (not bool), neither NaN nor infinite."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def finite_nonneg(x: object) -> bool:
    return finite_number(x) and x >= 0  # type: ignore[operator]


def finite_numbers(xs: Sequence[object], *, nonneg: bool = False) -> bool:
    """All finite numbers (>= 0 with ``nonneg``). Fast path: sum, min and the bool test run in C; x - x is NaN
    for NaN and inf; ``bool in map(type, xs)`` is ``any(isinstance(x, bool) ...)`` (bool has no subclasses)."""
    try:
        total = sum(xs)  # type: ignore[arg-type]
        ok = total - total == 0 and bool not in map(type, xs)
        return bool(ok and (not nonneg or not xs or min(xs) >= 0))  # type: ignore[type-var, operator]
    except TypeError:
        return False


def namespace_owner(market_id: str, is_participant: Callable[[str], bool]) -> str | None:
    """The participant whose namespace a market ID is in: the longest participant ID ``p`` such that the
    ID starts with ``p + '-'`` (None: in nobody's namespace)."""
    parts = market_id.split("-")
    for k in range(len(parts) - 1, 0, -1):
        prefix = "-".join(parts[:k])
        if is_participant(prefix):
            return prefix
    return None


def check_request(
    req: MarketRequest,
    *,
    now: int,
    locations: Collection[str],
    existing: Collection[str],
    is_participant: Callable[[str], bool] = lambda _pid: False,
) -> None:
    """What every market request must satisfy, in reason-code order.

    Market IDs are namespaced by participant (issue 13, market-ID squatting): ``<buyer>-<name>`` belongs to
    the buyer ``<buyer>`` (the longest participant ID that prefixes it), and a request for an ID in another
    participant's namespace is refused as unauthorised, so no buyer can take another's next market ID. The
    built-in buyers name every market this way; an ID in nobody's namespace is first come, first served.
    """
    if not req.market_id:
        raise Rejected(RejectReason.MALFORMED, "market_id must not be empty")
    owner = namespace_owner(req.market_id, is_participant)
    if owner is not None and owner != req.sender:
        raise Rejected(
            RejectReason.UNAUTHORISED,
            f"market ID {req.market_id!r} is in {owner}'s namespace; name yours '{req.sender}-<name>'",
        )
    if req.market_id in existing:
        raise Rejected(RejectReason.DUPLICATE, f"market {req.market_id!r} already exists")
    if req.gate_close <= now:
        raise Rejected(RejectReason.INVALID_TIMES, f"gate_close {req.gate_close} is not after now ({now})")
    if req.delivery_start < req.gate_close:
        raise Rejected(RejectReason.INVALID_TIMES, "delivery_start must not be before gate_close")
    if req.interval_minutes <= 0 or not req.need_kw:
        raise Rejected(RejectReason.OUT_OF_RANGE, "need interval_minutes > 0 and at least one interval")
    if not finite_numbers(req.need_kw, nonneg=True):
        raise Rejected(RejectReason.OUT_OF_RANGE, "need_kw values must be finite and >= 0")
    if not (finite_nonneg(req.price_cap) and req.price_cap > 0):
        raise Rejected(RejectReason.OUT_OF_RANGE, f"price_cap must be a positive number, got {req.price_cap!r}")
    if req.penalty_price is not None and not finite_nonneg(req.penalty_price):
        raise Rejected(RejectReason.OUT_OF_RANGE, "penalty_price must be finite and >= 0")
    if req.location not in locations and req.location != "*":
        raise Rejected(RejectReason.OUT_OF_RANGE, f"unknown location {req.location!r}")


def check_bid(
    req: MarketRequest,
    bid: Bid,
    *,
    now: int,
    is_open: bool,
    cancelled: bool,
    sellers: Collection[str],
    bid_ids: Collection[str],
) -> None:
    """What every bid must satisfy against its market (found by the caller), in reason-code order."""
    if cancelled:
        raise Rejected(RejectReason.GATE_CLOSED, f"market {bid.market_id} was cancelled")
    if now >= req.gate_close or not is_open:
        raise Rejected(
            RejectReason.GATE_CLOSED, f"bid arrived at minute {now}; the gate closed at minute {req.gate_close}"
        )
    if bid.sender not in sellers:
        raise Rejected(RejectReason.NOT_ELIGIBLE, f"{bid.sender} has no portfolio at {req.location}")
    if not bid.bid_id or bid.bid_id in bid_ids:
        raise Rejected(RejectReason.DUPLICATE, f"bid ID {bid.bid_id!r} is empty or already used in this market")
    quantities = bid.quantities_kw
    n = len(req.need_kw)  # req.n_intervals
    if len(quantities) != n:
        raise Rejected(
            RejectReason.OUT_OF_RANGE,
            f"quantities_kw has {len(quantities)} values; the market has {n} intervals",
        )
    if not finite_numbers(quantities, nonneg=True) or not max(quantities) > 0:
        raise Rejected(RejectReason.OUT_OF_RANGE, "quantities_kw must be finite, >= 0, and not all zero")
    if not finite_nonneg(bid.price) or bid.price > req.price_cap:
        raise Rejected(
            RejectReason.OUT_OF_RANGE, f"price {bid.price!r} DKK/kWh is outside [0, {req.price_cap}] (the buyer's cap)"
        )


def bid_passes(req: MarketRequest, bid: Bid, *, sellers: Collection[str], bid_ids: Collection[str]) -> bool:
    """True only if :func:`check_bid` passes a bid to a market that is open before its gate (the caller's
    test): the same tests as plain compares in one pass, for the hot path (one call a bid). False says
    nothing: :func:`check_bid` then finds the reason. A price other than a float falls back to it too."""
    quantities, price = bid.quantities_kw, bid.price
    try:
        total = sum(quantities)
    except TypeError:
        return False
    return bool(
        bid.sender in sellers
        and bid.bid_id
        and bid.bid_id not in bid_ids
        and quantities
        and len(quantities) == len(req.need_kw)
        and total - total == 0
        and bool not in map(type, quantities)
        and min(quantities) >= 0
        and max(quantities) > 0
        and type(price) is float
        and 0.0 <= price <= req.price_cap
    )


_FLOATS = frozenset({float})


def check_declared_baseline(
    product_id: str, req: MarketRequest, bid: Bid, earlier: tuple[float, ...] | None
) -> tuple[float, ...]:
    """The bid's declared baseline: one finite value per interval, equal to the seller's earlier one.

    Fast path (every bid of a seller after its first in a market): a tuple of floats equal to the earlier
    baseline, which was checked, passes as it is (``tuple(map(float, ...))`` of floats is the same values)."""
    baseline = bid.baseline_kw
    if earlier is not None and baseline == earlier and type(baseline) is tuple and set(map(type, baseline)) <= _FLOATS:
        return baseline
    n = len(req.need_kw)  # req.n_intervals
    if len(baseline) != n or not finite_numbers(baseline):
        raise Rejected(RejectReason.OUT_OF_RANGE, f"{product_id} bids must declare baseline_kw: {n} finite values")
    declared = tuple(map(float, baseline))
    if earlier is not None and earlier != declared:
        raise Rejected(
            RejectReason.OUT_OF_RANGE, "baseline_kw differs from the baseline of your earlier bid in this market"
        )
    return declared
