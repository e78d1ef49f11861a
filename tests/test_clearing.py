"""Clearing: golden hand-worked cases through every method, API contract, failure paths."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import highspy
import pytest
import yaml

from flech_sim.clearing import (
    BidOffer,
    ClearingMethod,
    ClearingOutcome,
    ClearingProblem,
    ClearingStatus,
    SolverOptions,
    clear,
    highs_direct,
    least_cost,
)

GOLDEN = sorted((Path(__file__).parent / "golden" / "clearing").glob("*.yaml"))
ALL_METHODS = list(ClearingMethod)


def load_golden(path: Path) -> tuple[ClearingProblem, dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    p = doc["problem"]
    bids = tuple(
        BidOffer(
            bid_id=b["bid_id"],
            seller=b["seller"],
            price=float(b["price"]),
            quantities=tuple(float(x) for x in b["quantities"]),
            block=bool(b.get("block", False)),
            submitted_at=int(b.get("submitted_at", 0)),
        )
        for b in p["bids"]
    )
    problem = ClearingProblem(
        market_id=p["market_id"],
        need=tuple(float(x) for x in p["need"]),
        price_cap=float(p["price_cap"]),
        interval_hours=float(p["interval_hours"]),
        bids=bids,
    )
    return problem, doc["expected"]


def test_golden_files_exist() -> None:
    assert len(GOLDEN) >= 6


@pytest.mark.parametrize("method", ALL_METHODS, ids=str)
@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden(path: Path, method: ClearingMethod) -> None:
    problem, exp = load_golden(path)
    out = clear(problem, SolverOptions(method=method))
    if method == ClearingMethod.MERIT and any(b.block for b in problem.bids):
        assert out.status == ClearingStatus.ERROR and "block" in out.message
        return
    assert out.status == ClearingStatus(exp["status"]), out.message
    got = out.accepted_by_bid()
    assert set(got) == set(exp["accepted"])
    for bid_id, want in exp["accepted"].items():
        assert got[bid_id] == pytest.approx(want, abs=1e-6), bid_id
    assert out.unmet == pytest.approx(exp["unmet"], abs=1e-6)
    assert out.objective == pytest.approx(exp["objective"], rel=1e-9, abs=1e-9)
    assert out.procurement_cost == pytest.approx(exp["procurement_cost"], rel=1e-9, abs=1e-9)
    assert _none_or_approx(out.marginal_price, exp["marginal_price"])
    for t, want in exp.get("dual_price", {}).items():
        assert out.dual_price[int(t)] == pytest.approx(want, abs=1e-9), f"dual t={t}"


def _none_or_approx(got: tuple[float | None, ...], want: list[float | None]) -> bool:
    return len(got) == len(want) and all(
        (g is None and w is None) or (g is not None and w is not None and math.isclose(g, w))
        for g, w in zip(got, want, strict=True)
    )


# --------------------------------------------------------------------------- contract


def _problem(need: tuple[float, ...] = (5.0,), **kw: Any) -> ClearingProblem:
    bids = kw.pop("bids", (BidOffer("a", "s", 1.0, (3.0,) * len(need)),
                           BidOffer("b", "s", 2.0, (4.0,) * len(need))))  # fmt: skip
    return ClearingProblem("m", need, kw.pop("cap", 3.0), kw.pop("hours", 1.0), bids)


def test_package_does_not_import_simpy_or_agents() -> None:
    code = (
        "import sys\n"
        "import flech_sim.clearing, flech_sim.clearing.least_cost, "
        "flech_sim.clearing.highs_direct, flech_sim.clearing.merit_order, "
        "flech_sim.clearing.pyomo_model, flech_sim.clearing.problem\n"
        "bad = [m for m in sys.modules if m == 'simpy' or m.startswith('simpy.') "
        "or m.startswith('flech_sim.agents')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_auto_picks_merit_without_blocks_and_highs_with() -> None:
    assert clear(_problem()).method == ClearingMethod.MERIT
    blk = _problem(bids=(BidOffer("k", "s", 1.0, (5.0,), block=True),))
    out = clear(blk)
    assert out.method == ClearingMethod.HIGHS and out.mip_gap is not None
    # a block priced above the cap can never matter: still the exact merit order
    dead = _problem(bids=(BidOffer("k", "s", 9.0, (5.0,), block=True),))
    assert clear(dead).method == ClearingMethod.MERIT


@pytest.mark.parametrize("method", ALL_METHODS, ids=str)
def test_empty_book_is_a_status(method: ClearingMethod) -> None:
    out = clear(_problem(need=(2.0, 1.0), bids=()), SolverOptions(method=method))
    assert out.status == ClearingStatus.EMPTY and out.is_ok
    assert out.accepted == () and out.unmet == (2.0, 1.0)
    assert out.objective == pytest.approx(3.0 * 3.0)


@pytest.mark.parametrize("method", ALL_METHODS, ids=str)
def test_zero_need_accepts_nothing(method: ClearingMethod) -> None:
    out = clear(_problem(need=(0.0, 0.0)), SolverOptions(method=method))
    assert out.status == ClearingStatus.OPTIMAL
    assert all(q == 0.0 for row in out.accepted for q in row)
    assert out.objective == 0.0 and out.marginal_price == (None, None)


@pytest.mark.parametrize(
    "bad",
    [
        _problem(bids=(BidOffer("a", "s", 1.0, (1.0, 2.0)),)),  # length mismatch
        _problem(bids=(BidOffer("a", "s", -1.0, (1.0,)),)),
        _problem(bids=(BidOffer("a", "s", 1.0, (-1.0,)),)),
        _problem(bids=(BidOffer("a", "s", 1.0, (1.0,)), BidOffer("a", "t", 2.0, (1.0,)))),
        _problem(need=(-1.0,)),
        _problem(need=(float("nan"),)),
        _problem(need=()),
        _problem(hours=0.0),
        _problem(cap=float("inf")),
    ],
)
def test_structurally_invalid_problem_raises_value_error(bad: ClearingProblem) -> None:
    with pytest.raises(ValueError):
        clear(bad)


def test_outcome_helpers_and_immutability() -> None:
    problem = _problem()
    before = dataclasses.replace(problem)
    out = clear(problem)
    assert out.accepted_by_bid() == {"a": (3.0,), "b": (2.0,)}
    assert out.bid_ids == ("a", "b") and out.is_ok and out.mip_gap is None
    assert problem == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.status = ClearingStatus.ERROR  # type: ignore[misc]
    again = clear(problem)
    assert dataclasses.replace(again, solve_time_s=0.0) == dataclasses.replace(out, solve_time_s=0.0)


def test_lists_are_stored_as_tuples() -> None:
    bid = BidOffer("a", "s", 1.0, [1.0, 2.0])  # type: ignore[arg-type]
    problem = ClearingProblem("m", [1.0, 1.0], 2.0, 1.0, [bid])  # type: ignore[arg-type]
    assert isinstance(bid.quantities, tuple) and isinstance(problem.bids, tuple)
    assert hash(problem)


def test_default_options_have_a_gap_a_limit_and_presolve_off() -> None:
    o = SolverOptions()
    assert o.time_limit_s > 0 and o.mip_gap > 0 and o.threads == 1 and o.presolve is False


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("method", [ClearingMethod.HIGHS, ClearingMethod.PYOMO], ids=str)
def test_solver_exception_becomes_error_outcome(monkeypatch: pytest.MonkeyPatch, method: ClearingMethod) -> None:
    def boom(self: highspy.Highs) -> None:
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(highspy.Highs, "run", boom)
    out = clear(_problem(), SolverOptions(method=method))
    assert out.status == ClearingStatus.ERROR and not out.is_ok
    assert "solver exploded" in out.message
    assert out.unmet == (5.0,) and out.dual_price == (None,)


def test_garbage_solution_becomes_error_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from flech_sim.clearing.problem import RawSolution

    def nan_solver(arrays: Any, options: Any) -> RawSolution:
        return RawSolution(ClearingStatus.OPTIMAL, np.full(arrays.quantity.shape, np.nan))

    monkeypatch.setattr(highs_direct, "solve", nan_solver)
    out = clear(_problem(), SolverOptions(method=ClearingMethod.HIGHS))
    assert out.status == ClearingStatus.ERROR and "non-finite" in out.message


@pytest.mark.parametrize("status", [highspy.HighsModelStatus.kSolveError,
                                    highspy.HighsModelStatus.kInfeasible])  # fmt: skip
def test_bad_highs_status_is_mapped(monkeypatch: pytest.MonkeyPatch, status: Any) -> None:
    monkeypatch.setattr(highspy.Highs, "getModelStatus", lambda self: status)
    out = clear(_problem(), SolverOptions(method=ClearingMethod.HIGHS))
    assert out.status in (ClearingStatus.ERROR, ClearingStatus.INFEASIBLE)
    assert out.message


def test_status_mapping_covers_limits() -> None:
    ms = highspy.HighsModelStatus
    assert highs_direct.status_from_highs(ms.kOptimal, True)[0] == ClearingStatus.OPTIMAL
    assert highs_direct.status_from_highs(ms.kTimeLimit, True)[0] == ClearingStatus.FEASIBLE
    st, msg = highs_direct.status_from_highs(ms.kTimeLimit, False)
    assert st == ClearingStatus.ERROR and "without" in msg
    assert highs_direct.status_from_highs(ms.kInfeasible, False)[0] == ClearingStatus.INFEASIBLE
    assert highs_direct.status_from_highs(ms.kUnbounded, False)[0] == ClearingStatus.ERROR


def _hard_milp(n: int = 200, t: int = 24) -> ClearingProblem:
    import numpy as np

    rng = np.random.default_rng(7)
    bids = tuple(
        BidOffer(f"b{i}", "s", float(rng.uniform(0.5, 2.0)),
                 tuple(rng.uniform(0, 20, t).round(2).tolist()), block=True)
        for i in range(n)
    )  # fmt: skip
    return ClearingProblem("hard", tuple([400.0] * t), 3.0, 1.0, bids)


@pytest.mark.parametrize("method", [ClearingMethod.HIGHS, ClearingMethod.PYOMO], ids=str)
def test_tiny_time_limit_gives_feasible_or_error_not_exception(method: ClearingMethod) -> None:
    out = clear(_hard_milp(), SolverOptions(method=method, time_limit_s=1e-9))
    assert out.status in (ClearingStatus.FEASIBLE, ClearingStatus.ERROR), out.status
    assert out.message


def test_merit_refuses_live_blocks_with_a_message() -> None:
    out = clear(_hard_milp(5, 2), SolverOptions(method=ClearingMethod.MERIT))
    assert out.status == ClearingStatus.ERROR and "block" in out.message


def test_unknown_method_string_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        least_cost.resolve_method("simplex", None)  # type: ignore[arg-type]


def test_outcome_type() -> None:
    assert isinstance(clear(_problem()), ClearingOutcome)


def test_changing_thread_count_between_clearings_works() -> None:
    blk = _problem(bids=(BidOffer("k", "s", 1.0, (5.0,), block=True),))
    for threads in (1, 2, 1):
        out = clear(blk, SolverOptions(threads=threads))
        assert out.status == ClearingStatus.OPTIMAL, out.message


def test_tie_rule_holds_in_highs_on_a_large_tied_book() -> None:
    """3,000 bids on 4 price levels: HiGHS must follow the merit order's tie rule exactly."""
    import numpy as np

    rng = np.random.default_rng(3)
    n, t = 3000, 3
    bids = tuple(
        BidOffer(f"b{rng.integers(10**6):06d}-{i}", "s", float(rng.choice([0.5, 1.0, 1.5, 2.0])),
                 tuple(rng.integers(0, 10, t).astype(float).tolist()),
                 submitted_at=int(rng.integers(0, 5)))
        for i in range(n)
    )  # fmt: skip
    problem = ClearingProblem("ties", (9000.0, 13000.0, 20000.0), 2.0, 0.25, bids)
    merit = clear(problem, SolverOptions(method=ClearingMethod.MERIT))
    highs = clear(problem, SolverOptions(method=ClearingMethod.HIGHS))
    np.testing.assert_allclose(highs.accepted, merit.accepted, atol=1e-6)
    assert any(0 < q < 9 for row in merit.accepted for q in row)  # partial fills exist
    assert highs.dual_price == merit.dual_price


def test_time_limit_with_incumbent_is_feasible_with_gap_and_duals() -> None:
    opts = SolverOptions(method=ClearingMethod.HIGHS, time_limit_s=1.0, mip_gap=1e-3)
    out = clear(_hard_milp(), opts)  # needs ~16 s to prove a 1e-3 gap on this machine
    assert out.status == ClearingStatus.FEASIBLE and out.is_ok
    assert out.mip_gap is not None and out.mip_gap > opts.mip_gap
    assert "kTimeLimit" in out.message
    assert all(d is not None for d in out.dual_price)  # LP with blocks fixed still solved


def test_milp_column_reduction_matches_the_full_pyomo_model() -> None:
    """highs_direct drops/fixes divisible cells that cannot matter; pyomo keeps them all."""
    import numpy as np

    from flech_sim.clearing.problem import ProblemArrays

    rng = np.random.default_rng(11)
    n, t = 120, 6
    bids = tuple(
        BidOffer(f"b{i:03d}", "s", float(rng.choice([0.4, 0.8, 1.2, 1.6, 2.0])),
                 tuple(rng.integers(0, 20, t).astype(float).tolist()),
                 block=bool(rng.random() < 0.1), submitted_at=int(rng.integers(0, 3)))
        for i in range(n)
    )  # fmt: skip
    need = tuple((np.array([b.quantities for b in bids]).sum(axis=0) * 0.5).round().tolist())
    problem = ClearingProblem("reduce", need, 2.5, 0.25, bids)
    m = highs_direct.build_matrices(ProblemArrays.from_problem(problem))
    assert m.fixed.any() and m.n_div < sum(q > 0 for b in bids if not b.block for q in b.quantities)
    exact = {"mip_gap": 0.0}
    hi = clear(problem, SolverOptions(method=ClearingMethod.HIGHS, **exact))
    py = clear(problem, SolverOptions(method=ClearingMethod.PYOMO, **exact))
    assert hi.status == py.status == ClearingStatus.OPTIMAL
    np.testing.assert_allclose(hi.accepted, py.accepted, atol=1e-6)
    assert hi.objective == pytest.approx(py.objective, abs=1e-9)
    assert hi.dual_price == py.dual_price
