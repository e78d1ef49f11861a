"""Least expected cost of options (CRP): availability + expected activation, as a least-cost problem.

An option bid offers to hold ``Q_t`` kW ready in each interval t of a window of n
intervals of h hours, for an availability price ``a`` (DKK per kW for the whole
window) and an activation price ``p`` (DKK per kWh actually called). Reserving
``q_t`` of it costs, in expectation,

    availability   a x (sum_t q_t) / n          (a flat q over the window pays a x q)
    activation     s x p x (sum_t q_t) x h      (s = expected share of reserved energy called)

so the expected cost is linear in q with the per-kWh *expected price*

    e = a / (n h) + s p.

Clearing the options is therefore the least-cost problem of
:mod:`flech_sim.clearing` with price e per bid, and unmet need priced at
``e_cap = a_cap / (n h) + s p_cap``; block options stay blocks (MILP, prices from
the re-solve with binaries fixed). Expected prices are rounded to 1e-9 DKK/kWh
so that bids whose expected prices are equal in exact arithmetic tie, and the
declared tie rule (earlier bid, then bid ID) decides, not floating-point noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flech_sim.clearing.problem import BidOffer, ClearingProblem

__all__ = ["OptionOffer", "availability_payments", "expected_price", "option_problem"]

PRICE_DECIMALS = 9


@dataclass(frozen=True)
class OptionOffer:
    bid_id: str
    seller: str
    availability_price: float  # DKK/kW for the whole window, >= 0
    activation_price: float  # DKK/kWh, >= 0
    quantities: tuple[float, ...]  # kW that can be reserved per interval
    block: bool = False
    submitted_at: int = 0


def expected_price(
    availability_price: float, activation_price: float, activation_share: float, n_intervals: int, interval_hours: float
) -> float:
    """DKK per kWh reserved: a / (n h) + s p (rounded to 1e-9)."""
    window_h = n_intervals * interval_hours
    return round(availability_price / window_h + activation_share * activation_price, PRICE_DECIMALS)


def option_problem(
    market_id: str,
    need: Sequence[float],
    *,
    activation_price_cap: float,
    availability_price_cap: float,
    activation_share: float,
    interval_hours: float,
    offers: Sequence[OptionOffer],
) -> ClearingProblem:
    """The equivalent least-cost problem (prices are expected prices; see the module text)."""
    n = len(need)

    def e(a: float, p: float) -> float:
        return expected_price(a, p, activation_share, n, interval_hours)

    return ClearingProblem(
        market_id=market_id,
        need=tuple(need),
        price_cap=e(availability_price_cap, activation_price_cap),
        interval_hours=interval_hours,
        bids=tuple(
            BidOffer(
                o.bid_id,
                o.seller,
                e(o.availability_price, o.activation_price),
                tuple(o.quantities),
                o.block,
                o.submitted_at,
            )
            for o in offers
        ),
    )


def availability_payments(availability_price: float, reserved_kw: Sequence[float]) -> tuple[float, ...]:
    """DKK per interval for holding ``reserved_kw`` ready: a x q_t / n (their sum is a x mean q)."""
    n = len(reserved_kw)
    return tuple(availability_price * q / n for q in reserved_kw)
