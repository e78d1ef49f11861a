"""Activations of options: check a buyer's call against what is still reserved and split it. Pure.

:func:`check_activation` applies the checks in reason-code order and :func:`draw_activation`
decides who delivers: the awards cheapest activation price first, then earlier *arrival* at the
platform (never a claimed send time), then bid ID. Nothing here records or sends anything; the
product does that when both pass (see :meth:`flech_sim.products.base.Product.activate`).
"""

from __future__ import annotations

from ..messages import Activation, Rejected, RejectReason
from .market import Market, MarketState
from .validation import finite_numbers

__all__ = ["ACTIVATION_LEAD_MINUTES", "check_activation", "draw_activation"]

ACTIVATION_LEAD_MINUTES = (15, 60)
"""Default notice of an activation (options): its start at least 15 and at most 60 minutes after it is sent."""
_ACT_TOL_KW = 1e-6  # activation above what is still reserved by less than this is rounding, not an error


def check_activation(market: Market, msg: Activation, *, now: int, lead: tuple[int, int]) -> None:
    """Sender, state, ID, interval grid, quantities and notice (see Product.activate); raise Rejected."""
    req = market.request
    if msg.sender != req.sender:
        raise Rejected(RejectReason.UNAUTHORISED, f"only the market's buyer {req.sender} may activate in it")
    if market.state in (MarketState.OPEN, MarketState.GATE_CLOSED):
        raise Rejected(RejectReason.INVALID_TIMES, f"market {market.market_id} is not cleared yet")
    if market.state is not MarketState.CLEARED:
        raise Rejected(RejectReason.GATE_CLOSED, f"market {market.market_id} is {market.state}: nothing to activate")
    if not msg.activation_id or msg.activation_id in market.activation_ids:
        raise Rejected(RejectReason.DUPLICATE, f"activation ID {msg.activation_id!r} is empty or already used")
    step = req.interval_minutes
    if msg.interval_minutes != step:
        raise Rejected(
            RejectReason.OUT_OF_RANGE, f"interval_minutes must be the market's {step}, got {msg.interval_minutes}"
        )
    offset = msg.start - req.delivery_start
    if (
        offset < 0
        or offset % step
        or not msg.quantities_kw
        or msg.start + step * len(msg.quantities_kw) > req.delivery_end
    ):
        raise Rejected(
            RejectReason.INVALID_TIMES,
            f"an activation must start on an interval of the window [{req.delivery_start}, "
            f"{req.delivery_end}) every {step} min and end within it",
        )
    if not finite_numbers(msg.quantities_kw, nonneg=True) or not any(q > 0 for q in msg.quantities_kw):
        raise Rejected(RejectReason.OUT_OF_RANGE, "quantities_kw must be finite, >= 0, and not all zero")
    lo, hi = lead
    notice = msg.start - now
    if notice < lo:
        raise Rejected(
            RejectReason.INVALID_TIMES,
            f"late: sent at minute {now} for minute {msg.start} ({notice} min notice); at least {lo} min needed",
        )
    if notice > hi:
        raise Rejected(
            RejectReason.INVALID_TIMES,
            f"too early: sent at minute {now} for minute {msg.start} ({notice} min notice); at most {hi} min allowed",
        )


def draw_activation(
    market: Market, seller: str, first: int, quantities: tuple[float, ...]
) -> dict[tuple[str, str], list[float]]:
    """(seller, bid ID) -> kW drawn per activated interval; raise Rejected if the reserve is short."""
    awards = [a for a in market.awards if a.awarded and (not seller or a.recipient == seller)]
    if seller and not awards:
        raise Rejected(RejectReason.NOT_ELIGIBLE, f"{seller} holds no reservation in market {market.market_id}")
    arrival = market.arrival
    plan: dict[tuple[str, str], list[float]] = {}
    for j, want in enumerate(quantities):
        k = first + j
        left = want
        ranked = sorted(awards, key=lambda a: (a.prices[k], arrival.get(a.bid_id, 0), a.bid_id))
        free_total = 0.0
        for a in ranked:
            free = max(0.0, a.accepted_kw[k] - market.activated.get(a.bid_id, [0.0] * len(a.accepted_kw))[k])
            free_total += free
            take = min(free, left)
            if take > 0:
                plan.setdefault((a.recipient, a.bid_id), [0.0] * len(quantities))[j] = take
                left -= take
        if left > _ACT_TOL_KW:
            who = seller or "the market's sellers"
            raise Rejected(
                RejectReason.OUT_OF_RANGE,
                f"activation of {want:g} kW at minute {market.interval_start(k)} exceeds what {who} "
                f"still hold(s) in reserve ({free_total:g} kW)",
            )
    return plan
