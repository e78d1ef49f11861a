"""Reference formulation in pyomo, solved by HiGHS through pyomo's HiGHS interface.

Written to be read against the domain brief, not to be fast (about 25 s at 10,000 bids x
96 intervals; highs_direct is the fast path for the same model):

    min  sum_{b,t} c_b q[b,t] + sum_k c_k (sum_t Q[k,t]) y[k] + sum_t c_u u[t]
    s.t. sum_b q[b,t] + sum_k Q[k,t] y[k] + u[t] >= need[t]    every t     (balance)
         0 <= q[b,t] <= Q[b,t]                                 divisible bids b
         y[k] in {0, 1}                                        block bids k
         0 <= u[t] <= need[t]
    with c = scale * (price + tie) (see problem.solver_costs).

A block's accepted quantity is Q[k,t] y[k]: the brief's q[k,t] = y[k] Q[k,t] with q
substituted out. Keeping q[k,t] and a linking equality per interval gives the same optimum
but, with presolve off, HiGHS carries the extra rows into branch and bound: measured on
200 blocks x 24 intervals, 60 s without closing the 1e-3 gap versus 16 s substituted.
Bids priced above the cap have no variables at all: they are never accepted.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.solver.common.factory import SolverFactory
from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition

from flech_sim.clearing.highs_direct import use_threads
from flech_sim.clearing.problem import (
    ClearingStatus,
    ProblemArrays,
    RawSolution,
    SolverOptions,
    solver_costs,
)

__all__ = ["build_model", "solve"]


def build_model(arrays: ProblemArrays) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel(name="flech_clearing")
    _add_sets(m, arrays)
    _add_variables(m, arrays)
    _add_constraints(m, arrays)
    _add_objective(m, arrays)
    return m


def _add_sets(m: pyo.ConcreteModel, arrays: ProblemArrays) -> None:
    live = (arrays.quantity > 0) & arrays.eligible[:, None]
    divisible = live & ~arrays.block[:, None]
    m.T = pyo.Set(initialize=range(arrays.n_intervals), ordered=True)
    pairs = [tuple(bt) for bt in np.argwhere(divisible).tolist()]  # (bid, interval), Q > 0
    m.BT = pyo.Set(dimen=2, ordered=True, initialize=pairs)
    m.K = pyo.Set(initialize=np.flatnonzero(arrays.block & live.any(axis=1)).tolist())


def _add_variables(m: pyo.ConcreteModel, arrays: ProblemArrays) -> None:
    q, need = arrays.quantity, arrays.need
    m.q = pyo.Var(m.BT, bounds=lambda _, b, t: (0.0, float(q[b, t])))
    m.y = pyo.Var(m.K, domain=pyo.Binary)
    m.u = pyo.Var(m.T, bounds=lambda _, t: (0.0, float(need[t])))


def _add_constraints(m: pyo.ConcreteModel, arrays: ProblemArrays) -> None:
    q = arrays.quantity
    by_t: dict[int, list[int]] = {t: [] for t in m.T}
    for b, t in m.BT:
        by_t[t].append(b)

    def balance(m: pyo.ConcreteModel, t: int) -> object:
        divisible = sum(m.q[b, t] for b in by_t[t])
        blocks = sum(float(q[k, t]) * m.y[k] for k in m.K if q[k, t] > 0)
        return divisible + blocks + m.u[t] >= float(arrays.need[t])

    m.balance = pyo.Constraint(m.T, rule=balance)


def _add_objective(m: pyo.ConcreteModel, arrays: ProblemArrays) -> None:
    bid_cost, unmet_cost, scale = solver_costs(arrays)
    m.scale = scale  # plain attribute: duals are divided by it to get DKK/kWh
    m.cost = pyo.Objective(
        expr=sum(float(bid_cost[b]) * m.q[b, t] for b, t in m.BT)
        + sum(float(bid_cost[k] * arrays.quantity[k].sum()) * m.y[k] for k in m.K)
        + sum(unmet_cost * m.u[t] for t in m.T),
        sense=pyo.minimize,
    )


def _status(results: object) -> tuple[ClearingStatus, str]:
    """pyomo's termination condition -> ClearingStatus (pyomo already mapped HiGHS's)."""
    tc = results.termination_condition  # type: ignore[attr-defined]
    has_sol = results.solution_status in (  # type: ignore[attr-defined]
        SolutionStatus.feasible,
        SolutionStatus.optimal,
    )
    if tc == TerminationCondition.convergenceCriteriaSatisfied:
        return ClearingStatus.OPTIMAL, ""
    if tc == TerminationCondition.provenInfeasible:
        return ClearingStatus.INFEASIBLE, "pyomo/HiGHS: model infeasible"
    if tc in (
        TerminationCondition.maxTimeLimit,
        TerminationCondition.iterationLimit,
        TerminationCondition.objectiveLimit,
        TerminationCondition.interrupted,
        TerminationCondition.unknown,
    ):
        if has_sol:
            return ClearingStatus.FEASIBLE, f"pyomo/HiGHS stopped on {tc.name} with an incumbent"
        return ClearingStatus.ERROR, f"pyomo/HiGHS stopped on {tc.name} without a solution"
    return ClearingStatus.ERROR, f"pyomo/HiGHS failed: {tc.name}"


def _run(m: pyo.ConcreteModel, options: SolverOptions) -> object:
    use_threads(int(options.threads))
    solver = SolverFactory("highs")
    return solver.solve(
        m,
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
        time_limit=float(options.time_limit_s),
        threads=int(options.threads),
        rel_gap=float(options.mip_gap),
        solver_options={
            "output_flag": False,
            "random_seed": int(options.seed),
            "presolve": "on" if options.presolve else "off",
        },
    )


def solve(arrays: ProblemArrays, options: SolverOptions) -> RawSolution:
    m = build_model(arrays)
    res = _run(m, options)
    status, message = _status(res)
    if status not in (ClearingStatus.OPTIMAL, ClearingStatus.FEASIBLE):
        return RawSolution(status, message=message)
    res.solution_loader.load_vars()  # type: ignore[attr-defined]
    gap = None
    if len(m.K):
        gap = _gap(res)
        for y in m.y.values():  # fix the blocks, relax integrality, re-solve for duals
            y.domain = pyo.UnitInterval
            y.fix(1.0 if y.value > 0.5 else 0.0)
        res = _run(m, options)
        lp_status, lp_message = _status(res)
        if lp_status != ClearingStatus.OPTIMAL:
            message = "; ".join(filter(None, (message, f"no dual prices: {lp_message}")))
            return RawSolution(status, _accepted(m, arrays), None, gap, message)
        res.solution_loader.load_vars()  # type: ignore[attr-defined]
    duals = res.solution_loader.get_duals([m.balance[t] for t in m.T])  # type: ignore[attr-defined]
    dual = np.array([duals[m.balance[t]] for t in m.T]) / m.scale
    return RawSolution(status, _accepted(m, arrays), dual, gap, message)


def _accepted(m: pyo.ConcreteModel, arrays: ProblemArrays) -> np.ndarray:
    acc = np.zeros_like(arrays.quantity)
    for (b, t), v in m.q.items():
        acc[b, t] = v.value if v.value is not None else 0.0
    for k in m.K:
        acc[k] = arrays.quantity[k] * (1.0 if m.y[k].value > 0.5 else 0.0)
    return acc


def _gap(res: object) -> float | None:
    inc = res.incumbent_objective  # type: ignore[attr-defined]
    bound = res.objective_bound  # type: ignore[attr-defined]
    if inc is None or bound is None:
        return None
    return abs(inc - bound) / max(abs(inc), 1e-12) if inc != bound else 0.0
