"""The clearing model as column-wise matrices handed straight to highspy.

Same model as pyomo_model, minus the modelling layer: at 10,000 bids x 96 intervals pyomo
spends ~25 s building and passing the model, while the matrices below are built with numpy
in tens of milliseconds and passed to HiGHS in one ``passModel`` call.

Column layout: [q_{b,t} for divisible bids with Q_{b,t} > 0 | y_b per block bid | u_t].
A block bid is a single binary column y_b with coefficient Q_{b,t} in each row t, which is
q_{b,t} = y_b Q_{b,t} with q substituted out. Rows: sum_b q_{b,t} + u_t >= need_t.

With block bids (MILP) the divisible cells that cannot matter are taken out first, exactly:
whatever blocks are chosen, interval t's divisible bids fill the residual need
r_t in [need_t - sum_k Q_{k,t}, need_t] along the merit order, so cells filled entirely
below the lower end are always fully accepted (fixed: moved to the right-hand side and the
objective offset) and cells starting at or above need_t are never accepted (dropped). One
cell either side of the band stays in, so the row duals keep both merit-order neighbours.
Measured at 10,000 bids (10% blocks) x 96: the full MILP (711k columns) spent 20-30 s in
HiGHS's MIP setup and its root LP then ran past the time limit (65 s for a 60 s limit, 321 s
for 20 s); reduced (85k columns) it solves to optimality in about 3-4 s.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import highspy
import numpy as np

from flech_sim.clearing import merit_order
from flech_sim.clearing.problem import (
    ClearingStatus,
    ProblemArrays,
    RawSolution,
    SolverOptions,
    solver_costs,
)

__all__ = [
    "LpMatrices",
    "build_matrices",
    "make_highs",
    "solve",
    "status_from_highs",
    "use_threads",
]

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
_threads_in_use: int | None = None


def use_threads(threads: int) -> None:
    """HiGHS keeps one global thread pool per process, sized by the first run; a later run
    asking for another size fails with kNotset. Reset the pool when the size changes.
    (Not safe while another HiGHS solve runs in a different Python thread.)"""
    global _threads_in_use
    if _threads_in_use is not None and threads != _threads_in_use:
        highspy.Highs.resetGlobalScheduler(True)
    _threads_in_use = threads


def status_from_highs(model_status: highspy.HighsModelStatus, has_solution: bool) -> tuple[ClearingStatus, str]:
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
    offset: float  # cost of the fixed cells (solver units), so HiGHS's gap is on the total
    upper: np.ndarray
    row_lower: np.ndarray
    start: np.ndarray  # int32, len n_cols (HiGHS wants column starts, no end marker)
    index: np.ndarray  # int32 row of each nonzero
    value: np.ndarray
    integrality: np.ndarray  # int32, 1 for block columns
    div_bid: np.ndarray  # bid of each divisible column
    div_t: np.ndarray  # interval of each divisible column
    blk_bid: np.ndarray  # bid of each block column
    fixed: np.ndarray  # (B, T) bool: cells fixed at their full quantity outside the model
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
    blk_bid = np.flatnonzero(arrays.eligible & arrays.block & (q > 0).any(axis=1))
    free, fixed = _divisible_cells(arrays, blk_bid)
    div_bid, div_t = np.nonzero(free)
    residual = np.maximum(arrays.need - (q * fixed).sum(axis=0), 0.0)  # >= 0 up to rounding
    q_blk = q[blk_bid]
    k_row, k_t = np.nonzero(q_blk > 0)  # row-major: grouped by block column
    n_div, n_blk = div_bid.size, blk_bid.size
    per_blk = np.bincount(k_row, minlength=n_blk)
    blk_start = np.cumsum(per_blk) - per_blk
    start = np.concatenate((np.arange(n_div), n_div + blk_start, n_div + k_row.size + np.arange(n_t))).astype(np.int32)
    index = np.concatenate((div_t, k_t, np.arange(n_t))).astype(np.int32)
    value = np.concatenate((np.ones(n_div), q_blk[k_row, k_t], np.ones(n_t)))
    cost = np.concatenate((bid_cost[div_bid], bid_cost[blk_bid] * q_blk.sum(axis=1), np.full(n_t, unmet_cost)))
    upper = np.concatenate((q[div_bid, div_t], np.ones(n_blk), residual))
    integrality = np.zeros(cost.size, dtype=np.int32)
    integrality[n_div : n_div + n_blk] = 1
    fixed_bid, fixed_t = np.nonzero(fixed)
    offset = float(bid_cost[fixed_bid] @ q[fixed_bid, fixed_t])
    return LpMatrices(
        cost, offset, upper, residual, start, index, value, integrality,
        div_bid, div_t, blk_bid, fixed, scale,
    )  # fmt: skip


def _divisible_cells(arrays: ProblemArrays, blk_bid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(free, fixed) (B, T) masks of divisible cells with Q > 0 (see module docstring)."""
    q = arrays.quantity
    cells = (q > 0) & (arrays.eligible & ~arrays.block)[:, None]
    if blk_bid.size == 0:  # LP: keep every cell, the LP is the cross-check of the merit order
        return cells, np.zeros_like(cells)
    order = arrays.merit_order
    order = order[~arrays.block[order]]
    if order.size == 0:
        return cells, np.zeros_like(cells)
    offered = q[order]
    through = np.cumsum(offered, axis=0)
    low = np.maximum(arrays.need - q[blk_bid].sum(axis=0), 0.0)
    pos = offered > 0
    fixed_s = pos & (through <= low)
    dropped_s = pos & (through - offered >= arrays.need)
    cols = np.arange(arrays.n_intervals)
    last = len(order) - 1 - np.argmax(fixed_s[::-1], axis=0)  # last fixed cell per interval
    keep = fixed_s.any(axis=0)
    fixed_s[last[keep], cols[keep]] = False
    first = np.argmax(dropped_s, axis=0)  # first dropped cell per interval
    keep = dropped_s.any(axis=0)
    dropped_s[first[keep], cols[keep]] = False
    free, fixed = np.zeros_like(cells), np.zeros_like(cells)
    free[order] = pos & ~fixed_s & ~dropped_s
    fixed[order] = fixed_s
    return free, fixed


_banner_suppressed = False


def new_highs() -> highspy.Highs:
    """A Highs instance. The first one in a process prints a copyright banner straight to
    file descriptor 1, before any option can be set; it would land in the middle of the
    CLI's output, so it goes to /dev/null (once: later instances print nothing)."""
    global _banner_suppressed
    if _banner_suppressed:
        return highspy.Highs()
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
        _banner_suppressed = True
    return h


def make_highs(m: LpMatrices, options: SolverOptions) -> highspy.Highs:
    """A configured Highs instance holding the model, ready for ``run()``."""
    use_threads(int(options.threads))
    h = new_highs()
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
        int(highspy.MatrixFormat.kColwise), int(highspy.ObjSense.kMinimize), m.offset,
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
    if m.n_blk:
        _set_start(h, arrays, m)
    h.run()  # a kError return still sets a model status, mapped below
    info = h.getInfo()
    has_sol = info.primal_solution_status == _FEASIBLE_POINT
    status, message = status_from_highs(h.getModelStatus(), has_sol)
    if not has_sol or status in (ClearingStatus.ERROR, ClearingStatus.INFEASIBLE):
        return RawSolution(status, message=message)
    dual: np.ndarray | None
    x, dual = _primal_dual(h, m)
    if m.n_blk == 0:
        return RawSolution(status, _accepted(arrays, m, x, None), dual, None, message)
    gap = float(info.mip_gap)
    y = x[m.n_div : m.n_div + m.n_blk] > 0.5
    cols = np.arange(m.n_div, m.n_div + m.n_blk, dtype=np.int32)
    yv = y.astype(float)
    _check(h.changeColsIntegrality(m.n_blk, cols, np.zeros(m.n_blk, dtype=np.uint8)), "relax")
    _check(h.changeColsBounds(m.n_blk, cols, yv, yv), "fix blocks")
    h.run()  # the LP with the binaries fixed (own time limit): its duals are the prices
    dual = None
    lp_status, lp_message = status_from_highs(h.getModelStatus(), True)
    if lp_status == ClearingStatus.OPTIMAL:
        x, dual = _primal_dual(h, m)  # same blocks, LP-optimal divisible part
    else:
        message = "; ".join(filter(None, (message, f"no dual prices: {lp_message}")))
    acc = _accepted(arrays, m, x, y)
    return RawSolution(status, acc, dual, gap, message)


def _set_start(h: highspy.Highs, arrays: ProblemArrays, m: LpMatrices) -> None:
    """Give the MILP an incumbent: every block rejected, the rest by merit order.

    Always feasible (unmet need closes any gap), so a time limit yields FEASIBLE rather
    than ERROR. Measured at 10,000 bids (10% blocks) x 96: without it HiGHS found no
    incumbent in 60 s.
    """
    acc = merit_order.allocate(arrays, allowed=~arrays.block)  # fills the fixed cells too
    unmet = np.maximum(arrays.need - acc.sum(axis=0), 0.0)
    x0 = np.concatenate((acc[m.div_bid, m.div_t], np.zeros(m.n_blk), unmet))
    sol = highspy.HighsSolution()
    sol.col_value = x0
    sol.value_valid = True
    _check(h.setSolution(sol), "setSolution")


def _primal_dual(h: highspy.Highs, m: LpMatrices) -> tuple[np.ndarray, np.ndarray]:
    sol = h.getSolution()  # converts the whole solution: fetch once
    return np.asarray(sol.col_value), np.asarray(sol.row_dual) / m.scale


def _accepted(arrays: ProblemArrays, m: LpMatrices, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    acc = np.where(m.fixed, arrays.quantity, 0.0)
    acc[m.div_bid, m.div_t] = x[: m.n_div]
    if y is not None:
        acc[m.blk_bid] = arrays.quantity[m.blk_bid] * y[:, None]
    return acc


def _check(status: highspy.HighsStatus, what: str) -> None:
    if status == highspy.HighsStatus.kError:
        raise RuntimeError(f"HiGHS {what} returned kError")
