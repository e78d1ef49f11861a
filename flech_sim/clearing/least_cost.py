"""Entry point: ``clear(problem, options) -> ClearingOutcome``.

Picks the method, runs it, and turns whatever came back, including any exception raised
by a solver, into a ClearingOutcome: a market must always get a result it can report.
Only a structurally invalid problem (wrong vector lengths, negative prices, ...) raises
ValueError, because that is a bug in the caller, not solver behaviour.

All reported money is recomputed here from the accepted quantities at true prices, so
no method's tie perturbation or cost scaling leaks into the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from flech_sim.clearing import highs_direct, merit_order
from flech_sim.clearing.problem import (
    TIE_EPS,
    ClearingMethod,
    ClearingOutcome,
    ClearingProblem,
    ClearingStatus,
    ProblemArrays,
    RawSolution,
    SolverOptions,
)

__all__ = ["clear", "resolve_method"]

_SNAP_KW = 1e-9  # solver noise below this (kW) is rounded to the nearest bound
_ACCEPTED_KW = 1e-9  # a bid counts as accepted in an interval above this


def resolve_method(method: ClearingMethod, arrays: ProblemArrays) -> ClearingMethod:
    """AUTO -> exact merit order when no live block bid exists, else HiGHS (MILP)."""
    if method != ClearingMethod.AUTO:
        return ClearingMethod(method)
    return ClearingMethod.HIGHS if arrays.has_blocks else ClearingMethod.MERIT


def clear(problem: ClearingProblem, options: SolverOptions | None = None) -> ClearingOutcome:
    options = options or SolverOptions()
    t0 = time.perf_counter()
    arrays = ProblemArrays.from_problem(problem)  # ValueError: caller's bug, let it out
    method = resolve_method(options.method, arrays)
    if not problem.bids:
        raw = RawSolution(
            ClearingStatus.EMPTY,
            np.zeros((0, arrays.n_intervals)),
            np.full(arrays.n_intervals, arrays.cap),  # one more kW would cost the cap
            message="no bids: all need unmet",
        )
    elif not (arrays.need > 0).any():
        zero = np.zeros_like(arrays.quantity)
        raw = RawSolution(
            ClearingStatus.OPTIMAL, zero, merit_order.marginal_values(arrays, zero),
            message="no need: nothing to procure",
        )  # fmt: skip
    else:
        raw = _run(method, arrays, options)
    try:
        return _outcome(problem, arrays, method, raw, time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - e.g. NaN from a solver: still an outcome
        raw = RawSolution(ClearingStatus.ERROR, message=_describe(method, exc))
        return _outcome(problem, arrays, method, raw, time.perf_counter() - t0)


def _solver(method: ClearingMethod) -> Callable[[ProblemArrays, SolverOptions], RawSolution]:
    if method == ClearingMethod.MERIT:
        return lambda arrays, _options: merit_order.solve(arrays)
    if method == ClearingMethod.HIGHS:
        return highs_direct.solve
    if method == ClearingMethod.PYOMO:
        from flech_sim.clearing import pyomo_model  # pyomo import costs ~0.3 s: lazy

        return pyomo_model.solve
    raise ValueError(f"unknown clearing method {method!r}")


def _run(method: ClearingMethod, arrays: ProblemArrays, options: SolverOptions) -> RawSolution:
    try:
        return _solver(method)(arrays, options)
    except Exception as exc:  # noqa: BLE001 - never raise for bad solver behaviour
        return RawSolution(ClearingStatus.ERROR, message=_describe(method, exc))


def _describe(method: ClearingMethod, exc: Exception) -> str:
    return f"{method.value} clearing raised {type(exc).__name__}: {exc}"


def _outcome(
    problem: ClearingProblem,
    arrays: ProblemArrays,
    method: ClearingMethod,
    raw: RawSolution,
    elapsed: float,
) -> ClearingOutcome:
    """Clean the raw solution and price it at true prices.

    Without a solution (ERROR / INFEASIBLE) nothing is accepted and all need is reported
    unmet, priced at the cap: that is what the market delivers when clearing fails.
    """
    accepted = np.zeros_like(arrays.quantity) if raw.accepted is None else _clean_accepted(arrays, raw.accepted)
    unmet = arrays.need - accepted.sum(axis=0)
    unmet[unmet <= _SNAP_KW * np.maximum(1.0, arrays.need)] = 0.0
    h = arrays.hours
    procurement = float(arrays.price @ accepted.sum(axis=1)) * h if accepted.size else 0.0
    objective = procurement + arrays.cap * float(unmet.sum()) * h
    has_solution = raw.accepted is not None
    return ClearingOutcome(
        market_id=problem.market_id,
        status=raw.status,
        method=method,
        objective=objective,
        procurement_cost=procurement,
        mip_gap=raw.mip_gap,
        solve_time_s=elapsed,
        accepted=tuple(map(tuple, accepted.tolist())),
        unmet=tuple(unmet.tolist()),
        marginal_price=_marginal_prices(arrays, accepted),
        dual_price=_clean_duals(arrays, raw.dual if has_solution else None),
        message=raw.message,
        bid_ids=tuple(b.bid_id for b in problem.bids),
    )


def _clean_accepted(arrays: ProblemArrays, raw: np.ndarray) -> np.ndarray:
    if raw.shape != arrays.quantity.shape or not np.isfinite(raw).all():
        raise ValueError("solver returned a malformed or non-finite solution")
    q = arrays.quantity
    acc = np.clip(raw, 0.0, q)
    acc[acc <= _SNAP_KW] = 0.0
    near_full = (q - acc) <= _SNAP_KW
    acc[near_full] = q[near_full]
    acc[~arrays.eligible] = 0.0
    return acc


def _marginal_prices(arrays: ProblemArrays, accepted: np.ndarray) -> tuple[float | None, ...]:
    if not accepted.size:
        return (None,) * arrays.n_intervals
    top = np.where(accepted > _ACCEPTED_KW, arrays.price[:, None], -np.inf).max(axis=0)
    return tuple(float(p) if np.isfinite(p) else None for p in top)


def _clean_duals(arrays: ProblemArrays, dual: np.ndarray | None) -> tuple[float | None, ...]:
    """Remove the tie perturbation: snap each dual down to the real price it came from.

    An LP dual here is the perturbed cost of the marginal column (a bid, or unmet at the
    cap) or 0 (need over-covered by a block), so it lies in [p, p + TIE_EPS) for a real
    price p. Anything not within that band of a real price is returned as is.
    """
    if dual is None:
        return (None,) * arrays.n_intervals
    d = np.maximum(np.asarray(dual, dtype=float), 0.0)  # -0.0 and noise
    cands = np.unique(np.concatenate((arrays.price[arrays.eligible], [arrays.cap, 0.0])))
    idx = np.searchsorted(cands, d + 1e-9, side="right") - 1
    base = cands[np.maximum(idx, 0)]
    snapped = np.where((idx >= 0) & (d - base <= TIE_EPS + 1e-9), base, d)
    return tuple(float(x) if np.isfinite(x) else None for x in snapped)
