"""Data model of one clearing: what goes in, what comes out, and shared numeric views.

Everything here is frozen so a problem can be shared between processes, logged and
re-cleared without anyone mutating it. ``ProblemArrays`` is the single place where the
tuples are turned into numpy arrays, validated, and ranked by the declared tie rule, so
every method (merit order, HiGHS, pyomo) sees the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from ..constants import SOLVER_TIME_LIMIT_S

__all__ = [
    "TIE_EPS",
    "BidOffer",
    "ClearingMethod",
    "ClearingOutcome",
    "ClearingProblem",
    "ClearingStatus",
    "ProblemArrays",
    "RawSolution",
    "SolverOptions",
    "solver_costs",
]


class ClearingStatus(StrEnum):
    OPTIMAL = "optimal"
    FEASIBLE = "feasible"  # time limit / gap stop with an incumbent
    EMPTY = "empty"  # no bids: all need unmet, not an error
    INFEASIBLE = "infeasible"
    ERROR = "error"


class ClearingMethod(StrEnum):
    AUTO = "auto"
    PYOMO = "pyomo"
    HIGHS = "highs"
    MERIT = "merit"


@dataclass(frozen=True)
class BidOffer:
    bid_id: str
    seller: str
    price: float  # DKK/kWh, >= 0
    quantities: tuple[float, ...]  # kW per interval, >= 0, len == len(problem.need)
    block: bool = False  # all-or-nothing over all its intervals
    submitted_at: int = 0  # simulated minute of arrival; second tie-break key

    def __post_init__(self) -> None:
        if not isinstance(self.quantities, tuple):  # accept lists, store a tuple
            object.__setattr__(self, "quantities", tuple(self.quantities))


@dataclass(frozen=True)
class ClearingProblem:
    market_id: str
    need: tuple[float, ...]  # kW wanted per interval, >= 0
    price_cap: float  # DKK/kWh; unmet need is priced here so a thin market clears
    interval_hours: float  # hours per interval (energy = kW * hours)
    bids: tuple[BidOffer, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.need, tuple):
            object.__setattr__(self, "need", tuple(self.need))
        if not isinstance(self.bids, tuple):
            object.__setattr__(self, "bids", tuple(self.bids))


@dataclass(frozen=True)
class SolverOptions:
    method: ClearingMethod = ClearingMethod.AUTO
    time_limit_s: float = SOLVER_TIME_LIMIT_S
    mip_gap: float = 1e-3  # relative
    threads: int = 1
    seed: int = 0
    # Presolve OFF. Measured here (HiGHS 1.16, 2 cores, raw Highs.run(), bench generator,
    # `bench_clearing.py --presolve-study`), seconds off vs on:
    #   LP      1,000x24 0.016 vs 0.017 | 1,000x96 0.056 vs 0.067 | 10,000x24 0.81 vs 30.4
    #           10,000x96 5.5 vs 343 (and 343 s despite a 120 s time limit: HiGHS presolve
    #           does not honour the limit on this shape)
    #   MILP, 50% blocks: 1,000x24 0.22 vs 0.48 | 1,000x96 1.2 vs 2.2 | 10,000x24 8.3 vs 16.9
    #   MILP, all blocks, tight cover (tests' _hard_milp 200-300 x 24): off ~1.0-2x slower
    # Off never loses badly; on can lose by 40-60x and overrun the time limit.
    presolve: bool = False


@dataclass(frozen=True)
class ClearingOutcome:
    market_id: str
    status: ClearingStatus
    method: ClearingMethod  # the method actually used
    objective: float  # DKK at true prices: sum price*q*h + cap*unmet*h
    procurement_cost: float  # DKK, pay-as-bid cost of the accepted bids
    mip_gap: float | None  # achieved relative gap; None for LP / merit
    solve_time_s: float  # wall clock, not deterministic
    accepted: tuple[tuple[float, ...], ...]  # per bid (problem order), kW per interval
    unmet: tuple[float, ...]  # kW per interval
    marginal_price: tuple[float | None, ...]  # highest accepted price per interval
    dual_price: tuple[float | None, ...]  # DKK/kWh value of one more kW of need
    message: str = ""
    bid_ids: tuple[str, ...] = ()  # problem.bids order, so accepted can be keyed

    @property
    def is_ok(self) -> bool:
        return self.status in (
            ClearingStatus.OPTIMAL,
            ClearingStatus.FEASIBLE,
            ClearingStatus.EMPTY,
        )

    def accepted_by_bid(self) -> dict[str, tuple[float, ...]]:
        return dict(zip(self.bid_ids, self.accepted, strict=True))


# --------------------------------------------------------------------------- numeric view

# Tie perturbation budget in DKK/kWh. The N eligible bids are ranked by (price,
# submitted_at, bid_id); bid b costs price_b + TIE_EPS * w(rank_b) / (N + 2) with
# w(r) = r + 1 + frac((r + 1) * phi) / 2, and unmet need costs cap + TIE_EPS * w(N) / (N + 2).
# w is strictly increasing (steps between 0.5 and 1.5), so the perturbation never reorders
# two bids whatever their price difference, and unmet always comes after every bid priced
# <= cap. Every term is below TIE_EPS, so it moves a solution's cost by less than 1e-6 DKK
# per kWh bought: in a MILP it cannot flip a choice between combinations whose average
# prices differ by more than 1e-6 DKK/kWh. The golden-ratio jitter only makes exact
# perturbed-cost coincidences between block combinations (integer rank x whole kW) unlikely.
TIE_EPS = 1e-6
# HiGHS's dual feasibility tolerance is 1e-7 (absolute), far above a rank step of about
# TIE_EPS/(2N); costs are therefore scaled so the smallest step is >= 100x the tolerance.
# Measured: unscaled, HiGHS ignored the tie order on 190/200 random tied books; scaled, on
# none (also none on 30 tied books of 1,000-10,000 bids).
_MIN_SCALED_STEP = 1e-5
_PHI = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True, eq=False)
class ProblemArrays:
    """Validated numpy view of a ClearingProblem (arrays are read-only)."""

    need: np.ndarray  # (T,) kW
    quantity: np.ndarray  # (B, T) kW offered
    price: np.ndarray  # (B,) DKK/kWh
    block: np.ndarray  # (B,) bool
    eligible: np.ndarray  # (B,) bool: price <= cap (others are never accepted)
    rank: np.ndarray  # (B,) int position in tie order among eligible bids, -1 if not
    cap: float
    hours: float

    @property
    def n_bids(self) -> int:
        return int(self.price.shape[0])

    @property
    def n_intervals(self) -> int:
        return int(self.need.shape[0])

    @property
    def n_eligible(self) -> int:
        return int(self.eligible.sum())

    @property
    def merit_order(self) -> np.ndarray:
        """Indices of eligible bids, best first (price, submitted_at, bid_id)."""
        order = np.full(self.n_eligible, -1, dtype=np.int64)
        idx = np.flatnonzero(self.eligible)
        order[self.rank[idx]] = idx
        return order

    @property
    def has_blocks(self) -> bool:
        """True if a block bid could matter (eligible and offering something)."""
        live = self.block & self.eligible & (self.quantity.sum(axis=1) > 0)
        return bool(live.any())

    @classmethod
    def from_problem(cls, problem: ClearingProblem) -> ProblemArrays:
        """Validate and convert; raises ValueError on a structurally invalid problem."""
        n_t = len(problem.need)
        if n_t == 0:
            raise ValueError(f"{problem.market_id}: need has no intervals")
        need = _finite_nonneg(np.asarray(problem.need, dtype=float), "need", problem)
        cap = float(problem.price_cap)
        hours = float(problem.interval_hours)
        if not (math.isfinite(cap) and cap >= 0):
            raise ValueError(f"{problem.market_id}: price_cap must be finite >= 0")
        if not (math.isfinite(hours) and hours > 0):
            raise ValueError(f"{problem.market_id}: interval_hours must be finite > 0")
        bids = problem.bids
        for b in bids:
            if not isinstance(b.bid_id, str):
                raise ValueError(f"{problem.market_id}: bid_id {b.bid_id!r} is not a str")
            if len(b.quantities) != n_t:
                raise ValueError(
                    f"{problem.market_id}: bid {b.bid_id!r} has {len(b.quantities)} quantities, need has {n_t}"
                )
        ids = [b.bid_id for b in bids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{problem.market_id}: duplicate bid_id")
        quantity = np.array([b.quantities for b in bids], dtype=float).reshape(len(bids), n_t)
        price = np.array([b.price for b in bids], dtype=float)
        _finite_nonneg(quantity, "bid quantities", problem)
        _finite_nonneg(price, "bid prices", problem)
        block = np.array([bool(b.block) for b in bids], dtype=bool)
        eligible = price <= cap
        order = sorted(
            (i for i in range(len(bids)) if eligible[i]),
            key=lambda i: (bids[i].price, bids[i].submitted_at, bids[i].bid_id),
        )
        rank = np.full(len(bids), -1, dtype=np.int64)
        rank[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
        for arr in (need, quantity, price, block, eligible, rank):
            arr.setflags(write=False)
        return cls(need, quantity, price, block, eligible, rank, cap, hours)


def _finite_nonneg(arr: np.ndarray, what: str, problem: ClearingProblem) -> np.ndarray:
    if arr.size and not (np.isfinite(arr).all() and (arr >= 0).all()):
        raise ValueError(f"{problem.market_id}: {what} must be finite and >= 0")
    return arr


def solver_costs(arrays: ProblemArrays) -> tuple[np.ndarray, float, float]:
    """Perturbed, scaled objective coefficients per kW for the LP/MILP (see TIE_EPS).

    Returns (bid_cost (B,), unmet_cost, scale) with cost = scale * (price + tie). The
    interval length is left out: it multiplies every term alike. A row dual divided by
    ``scale`` is in DKK/kWh. Ineligible bids get +inf (they are never put in a model).
    """
    n = arrays.n_eligible
    unit = TIE_EPS / (n + 2)
    scale = max(1.0, _MIN_SCALED_STEP / (0.5 * unit))
    bid_cost = np.where(arrays.eligible, scale * (arrays.price + unit * _w(arrays.rank)), np.inf)
    unmet_cost = scale * (arrays.cap + unit * float(_w(np.array([n]))[0]))
    return bid_cost, float(unmet_cost), float(scale)


def _w(rank: np.ndarray) -> np.ndarray:
    r = rank.astype(float) + 1.0
    return r + 0.5 * np.mod(r * _PHI, 1.0)


@dataclass(frozen=True, eq=False)
class RawSolution:
    """What a method returns before least_cost turns it into a ClearingOutcome."""

    status: ClearingStatus
    accepted: np.ndarray | None = None  # (B, T) kW, None when there is no solution
    dual: np.ndarray | None = None  # (T,) DKK/kWh, perturbation still in; None if n/a
    mip_gap: float | None = None
    message: str = ""
