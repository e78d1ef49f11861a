"""The clearing model as column-wise matrices handed straight to highspy.

Same model as pyomo_model, minus the modelling layer: at 10,000 bids x 96 intervals pyomo
spends ~25 s building and passing the model, while the matrices below are built with numpy
in tens of milliseconds and passed to HiGHS in one ``passModel`` call.

Column layout: [q_{b,t} for divisible bids with Q_{b,t} > 0 | y_b per block bid | u_t].
A block bid is a single binary column y_b with coefficient Q_{b,t} in each row t, which is
q_{b,t} = y_b Q_{b,t} with q substituted out. Rows: sum_b q_{b,t} + u_t >= need_t.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from flech_sim.clearing.problem import (
    ClearingStatus,
    ProblemArrays,
    RawSolution,
    SolverOptions,
    solver_costs,
)

__all__ = ["LpMatrices", "build_matrices", "make_highs", "solve", "status_from_highs"]

_MS = highspy.HighsModelStatus
# Stops on a limit: the incumbent, if any, is usable but not proven optimal.
_LIMIT_STATUSES = frozenset(
    {
        _MS.kTimeLimit,
        _MS.kIterationLimit,
        _MS.kSolutionLimit,
        _MS.kInterrupt,
        _MS.kObjectiveBound,
        _MS.kObjectiveTarget,
        _MS.kMemoryLimit,
        _MS.kUnknown,
    }
)
_FEASIBLE_POINT = 2  # HighsInfo.primal_solution_status: 0 none, 1 infeasible, 2 feasible


def status_from_highs(
    model_status: highspy.HighsModelStatus, has_solution: bool
) -> tuple[ClearingStatus, str]:
    """The one mapping from a HiGHS model status to a ClearingStatus (+ message)."""
    name = str(model_status).rsplit(".", 1)[-1]
    if model_status == _MS.kOptimal:
        return ClearingStatus.OPTIMAL, ""
    if model_status == _MS.kInfeasible:
        return ClearingStatus.INFEASIBLE, f"HiGHS: model infeasible ({name})"
    if model_status in _LIMIT_STATUSES:
        if has_solution:
            return ClearingStatus.FEASIBLE, f"HiGHS stopped on {name} with an incumbent"
        return ClearingStatus.ERROR, f"HiGHS stopped on {name} without a feasible solution"
    return ClearingStatus.ERROR, f"HiGHS failed: {name}"


@dataclass(frozen=True, eq=False)
class LpMatrices:
    """Column-wise (CSC) model plus the maps from columns back to bids."""

    cost: np.ndarray
    upper: np.ndarray
    row_lower: np.ndarray
    start: np.ndarray  # int32, len n_cols (HiGHS wants column starts, no end marker)
    index: np.ndarray  # int32 row of each nonzero
    value: np.ndarray
    integrality: np.ndarray  # int32, 1 for block columns
    div_bid: np.ndarray  # bid of each divisible column
    div_t: np.ndarray  # interval of each divisible column
    blk_bid: np.ndarray  # bid of each block column
    scale: float  # solver cost units per DKK/kWh (see solver_costs)

    @property
    def n_div(self) -> int:
        return int(self.div_bid.size)

    @property
    def n_blk(self) -> int:
        return int(self.blk_bid.size)

    @property
    def n_rows(self) -> int:
        return int(self.row_lower.size)

    @property
    def n_cols(self) -> int:
        return int(self.cost.size)


def build_matrices(arrays: ProblemArrays) -> LpMatrices:
    """Vectorised CSC build: no per-element Python loop."""
    q = arrays.quantity
    n_t = arrays.n_intervals
    bid_cost, unmet_cost, scale = solver_costs(arrays)
    div_bid, div_t = np.nonzero((q > 0) & (arrays.eligible & ~arrays.block)[:, None])
    blk_bid = np.flatnonzero(arrays.eligible & arrays.block & (q > 0).any(axis=1))
    q_blk = q[blk_bid]
    k_row, k_t = np.nonzero(q_blk > 0)  # row-major: grouped by block column
    n_div, n_blk = div_bid.size, blk_bid.size
    per_blk = np.bincount(k_row, minlength=n_blk)
    blk_start = np.cumsum(per_blk) - per_blk
    start = np.concatenate(
        (np.arange(n_div), n_div + blk_start, n_div + k_row.size + np.arange(n_t))
    ).astype(np.int32)
    index = np.concatenate((div_t, k_t, np.arange(n_t))).astype(np.int32)
    value = np.concatenate((np.ones(n_div), q_blk[k_row, k_t], np.ones(n_t)))
    cost = np.concatenate(
        (bid_cost[div_bid], bid_cost[blk_bid] * q_blk.sum(axis=1), np.full(n_t, unmet_cost))
    )
    upper = np.concatenate((q[div_bid, div_t], np.ones(n_blk), arrays.need))
    integrality = np.zeros(cost.size, dtype=np.int32)
    integrality[n_div : n_div + n_blk] = 1
    return LpMatrices(
        cost, upper, np.array(arrays.need), start, index, value, integrality,
        div_bid, div_t, blk_bid, scale,
    )  # fmt: skip


def make_highs(m: LpMatrices, options: SolverOptions) -> highspy.Highs:
    """A configured Highs instance holding the model, ready for ``run()``."""
    h = highspy.Highs()
    for name, val in (
        ("output_flag", False),
        ("threads", int(options.threads)),
        ("random_seed", int(options.seed)),
        ("time_limit", float(options.time_limit_s)),
        ("mip_rel_gap", float(options.mip_gap)),
        ("presolve", "on" if options.presolve else "off"),
    ):
        _check(h.setOptionValue(name, val), f"setOptionValue({name})")
    status = h.passModel(
        m.n_cols, m.n_rows, int(m.value.size),
        int(highspy.MatrixFormat.kColwise), int(highspy.ObjSense.kMinimize), 0.0,
        m.cost, np.zeros(m.n_cols), m.upper,
        m.row_lower, np.full(m.n_rows, highspy.kHighsInf),
        m.start, m.index, m.value, m.integrality,
    )  # fmt: skip
    _check(status, "passModel")
    return h


def solve(arrays: ProblemArrays, options: SolverOptions) -> RawSolution:
    """Solve the LP (or MILP, then the LP with blocks fixed, for duals)."""
    m = build_matrices(arrays)
    h = make_highs(m, options)
    run_s = _timed_run(h)
    info = h.getInfo()
    has_sol = info.primal_solution_status == _FEASIBLE_POINT
    status, message = status_from_highs(h.getModelStatus(), has_sol)
    if not has_sol or status in (ClearingStatus.ERROR, ClearingStatus.INFEASIBLE):
        return RawSolution(status, message=message, extra={"highs_run_s": run_s})
    x = np.asarray(h.getSolution().col_value)
    if m.n_blk == 0:
        dual = np.asarray(h.getSolution().row_dual) / m.scale
        acc = _accepted(arrays, m, x, None)
        return RawSolution(status, acc, dual, None, message, {"highs_run_s": run_s})
    gap = float(info.mip_gap)
    y = x[m.n_div : m.n_div + m.n_blk] > 0.5
    cols = np.arange(m.n_div, m.n_div + m.n_blk, dtype=np.int32)
    yv = y.astype(float)
    _check(h.changeColsIntegrality(m.n_blk, cols, np.zeros(m.n_blk, dtype=np.uint8)), "relax")
    _check(h.changeColsBounds(m.n_blk, cols, yv, yv), "fix blocks")
    run_s += _timed_run(h)  # the LP with the binaries fixed: its duals are the prices
    dual = None
    lp_status, lp_message = status_from_highs(h.getModelStatus(), True)
    if lp_status == ClearingStatus.OPTIMAL:
        x = np.asarray(h.getSolution().col_value)  # same blocks, LP-optimal divisible part
        dual = np.asarray(h.getSolution().row_dual) / m.scale
    else:
        message = "; ".join(filter(None, (message, f"no dual prices: {lp_message}")))
    acc = _accepted(arrays, m, x, y)
    return RawSolution(status, acc, dual, gap, message, {"highs_run_s": run_s})


def _accepted(arrays: ProblemArrays, m: LpMatrices, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    acc = np.zeros_like(arrays.quantity)
    acc[m.div_bid, m.div_t] = x[: m.n_div]
    if y is not None:
        acc[m.blk_bid] = arrays.quantity[m.blk_bid] * y[:, None]
    return acc


def _timed_run(h: highspy.Highs) -> float:
    t0 = time.perf_counter()
    h.run()  # a kError return still sets a model status, mapped by the caller
    return time.perf_counter() - t0


def _check(status: highspy.HighsStatus, what: str) -> None:
    if status == highspy.HighsStatus.kError:
        raise RuntimeError(f"HiGHS {what} returned kError")
