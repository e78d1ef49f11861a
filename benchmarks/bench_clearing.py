"""Clearing solve time vs book size, per method.

Columns: pyomo, highs (highs_direct) and merit are wall times of ``clear()`` end to end
(tuple -> numpy, model build, solve, outcome); "raw run" is ``Highs.run()`` alone on the
very matrices highs_direct builds, so highs/raw shows the overhead of everything else.

    python benchmarks/bench_clearing.py                       # default, a few minutes
    python benchmarks/bench_clearing.py --bids 10 1000 --intervals 24 --pyomo-max-cells 0
    python benchmarks/bench_clearing.py --presolve-study      # HiGHS presolve on vs off
    python benchmarks/bench_clearing.py --block-share 0.1     # MILP (merit skipped)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from flech_sim.clearing import (
    BidOffer,
    ClearingMethod,
    ClearingOutcome,
    ClearingProblem,
    SolverOptions,
    clear,
    highs_direct,
)
from flech_sim.clearing.problem import ProblemArrays


def random_problem(n_bids: int, n_intervals: int, block_share: float, seed: int) -> ClearingProblem:
    """A book that covers roughly twice the need, prices on a 0.1 øre grid (ties occur)."""
    rng = np.random.default_rng(seed)
    prices = np.round(rng.uniform(0.1, 3.0, n_bids), 3)
    qty = np.round(rng.uniform(0.0, 50.0, (n_bids, n_intervals)), 2)
    blocks = rng.random(n_bids) < block_share
    need = np.round(qty.sum(axis=0) * rng.uniform(0.3, 0.7, n_intervals), 2)
    bids = tuple(
        BidOffer(f"b{i:06d}", f"s{i % 97}", float(prices[i]), tuple(qty[i].tolist()),
                 bool(blocks[i]), int(rng.integers(0, 60)))
        for i in range(n_bids)
    )  # fmt: skip
    return ClearingProblem("bench", tuple(need.tolist()), 2.5, 0.25, bids)


def raw_run_seconds(problem: ClearingProblem, options: SolverOptions) -> tuple[float, str]:
    h = highs_direct.make_highs(highs_direct.build_matrices(ProblemArrays.from_problem(problem)), options)
    t0 = time.perf_counter()
    h.run()
    return time.perf_counter() - t0, str(h.getModelStatus()).rsplit(".", 1)[-1]


def _median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _timed_clear(problem: ClearingProblem, options: SolverOptions) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        out: ClearingOutcome = clear(problem, options)
        if not out.is_ok:
            raise SystemExit(f"{options.method} failed: {out.status} {out.message}")
        return time.perf_counter() - t0

    return run


def bench(args: argparse.Namespace) -> None:
    warm = random_problem(5, 2, args.block_share, seed=0)
    for m in (ClearingMethod.PYOMO, ClearingMethod.HIGHS):  # imports, HiGHS banner, pools
        clear(warm, SolverOptions(method=m))
    print(f"{'bids':>7} {'T':>4} {'pyomo s':>9} {'highs s':>9} {'merit s':>9} "
          f"{'raw run s':>10} {'highs/raw':>9}")  # fmt: skip
    for t in args.intervals:
        for n in args.bids:
            problem = random_problem(n, t, args.block_share, seed=n * 1000 + t)
            base = SolverOptions(time_limit_s=args.time_limit, presolve=args.presolve)
            opts = {m: SolverOptions(**{**base.__dict__, "method": m}) for m in ClearingMethod}
            row: dict[str, float | None] = {}
            row["pyomo"] = (
                _median(_timed_clear(problem, opts[ClearingMethod.PYOMO]), args.repeat)
                if n * t <= args.pyomo_max_cells else None
            )  # fmt: skip
            row["highs"] = _median(_timed_clear(problem, opts[ClearingMethod.HIGHS]), args.repeat)
            row["merit"] = (
                _median(_timed_clear(problem, opts[ClearingMethod.MERIT]), args.repeat)
                if args.block_share == 0 else None
            )  # fmt: skip
            row["raw"] = _median(lambda p=problem, b=base: raw_run_seconds(p, b)[0], args.repeat)
            cells = " ".join(
                f"{row[k]:>9.4f}" if row[k] is not None else f"{'-':>9}" for k in ("pyomo", "highs", "merit")
            )
            print(f"{n:>7} {t:>4} {cells} {row['raw']:>10.4f} "
                  f"{row['highs'] / row['raw']:>9.2f}", flush=True)  # fmt: skip


def presolve_study(args: argparse.Namespace) -> None:
    print(f"{'bids':>7} {'T':>4} {'presolve off s':>15} {'presolve on s':>14}  status off/on")
    for t in args.intervals:
        for n in args.bids:
            problem = random_problem(n, t, args.block_share, seed=n * 1000 + t)
            off, status_off = raw_run_seconds(problem, SolverOptions(presolve=False, time_limit_s=args.time_limit))
            on, status = raw_run_seconds(problem, SolverOptions(presolve=True, time_limit_s=args.time_limit))
            print(f"{n:>7} {t:>4} {off:>15.3f} {on:>14.3f}  {status_off}/{status}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bids", type=int, nargs="+", default=[10, 100, 1000, 10000])
    p.add_argument("--intervals", type=int, nargs="+", default=[24, 96])
    p.add_argument(
        "--pyomo-max-cells",
        type=int,
        default=250_000,
        help="skip pyomo when bids*intervals exceeds this (10,000x96 takes ~25 s)",
    )
    p.add_argument("--repeat", type=int, default=1, help="median of this many runs")
    p.add_argument("--block-share", type=float, default=0.0, help="share of block bids")
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--presolve", action="store_true", help="HiGHS presolve on")
    p.add_argument("--presolve-study", action="store_true", help="time raw HiGHS with presolve off and on instead")
    args = p.parse_args()
    presolve_study(args) if args.presolve_study else bench(args)


if __name__ == "__main__":
    main()
