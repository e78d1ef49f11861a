"""Exact merit order for divisible-only books, vectorised with numpy.

Without block bids the least-cost problem separates by interval and is solved exactly by
filling the need from the cheapest bid upwards. Ties follow the declared rule exactly
(price, then submitted_at, then bid_id), and unmet need comes after every bid priced at or
below the cap. No tolerance, no perturbation: this is the yardstick for the LP paths.
"""

from __future__ import annotations

import numpy as np

from flech_sim.clearing.problem import ClearingStatus, ProblemArrays, RawSolution

__all__ = ["allocate", "marginal_values", "solve"]


def allocate(arrays: ProblemArrays, allowed: np.ndarray | None = None) -> np.ndarray:
    """Accepted kW (B, T): each interval filled along the merit order up to its need.

    ``allowed`` (B,) bool restricts the bids used, e.g. to the divisible ones to build a
    feasible MILP start with every block rejected.
    """
    order = arrays.merit_order
    if allowed is not None:
        order = order[allowed[order]]
    offered = arrays.quantity[order]  # (N, T) in merit order
    filled_before = np.cumsum(offered, axis=0) - offered
    accepted = np.zeros_like(arrays.quantity)
    accepted[order] = np.clip(arrays.need - filled_before, 0.0, offered)
    return accepted


def marginal_values(arrays: ProblemArrays, accepted: np.ndarray) -> np.ndarray:
    """DKK/kWh cost of one more kW of need per interval (the LP dual's right derivative).

    That is the price of the first bid in merit order with spare capacity (the partially
    accepted bid when there is one), or the cap when every eligible bid is exhausted (so
    also whenever need is unmet). In a degenerate interval, where need is met exactly at a
    bid boundary, the LP dual may be anything between the last accepted price and this
    value; the merit order reports the upper end because it is what an extra kW costs.
    """
    order = arrays.merit_order
    spare = (arrays.quantity[order] - accepted[order]) > 0  # (N, T)
    has_spare = spare.any(axis=0)
    first = np.argmax(spare, axis=0) if order.size else np.zeros(arrays.n_intervals, int)
    prices = arrays.price[order] if order.size else np.zeros(1)
    return np.where(has_spare, prices[first], arrays.cap)


def solve(arrays: ProblemArrays) -> RawSolution:
    """Clear a divisible-only book; refuses books with live block bids."""
    if arrays.has_blocks:
        return RawSolution(
            ClearingStatus.ERROR,
            message="merit order cannot clear block bids; use method 'highs' or 'auto'",
        )
    accepted = allocate(arrays)
    return RawSolution(ClearingStatus.OPTIMAL, accepted=accepted, dual=marginal_values(arrays, accepted))
