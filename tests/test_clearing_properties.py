"""Property tests: invariants of every clearing method, and agreement between methods.

Prices are drawn on a 0.01 DKK/kWh grid so ties are frequent (the tie rule is exercised)
while distinct prices stay far above the solvers' tolerances.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flech_sim.clearing import (
    BidOffer,
    ClearingMethod,
    ClearingOutcome,
    ClearingProblem,
    ClearingStatus,
    SolverOptions,
    clear,
)
from flech_sim.clearing.merit_order import allocate
from flech_sim.clearing.problem import TIE_EPS, ProblemArrays

EXAMPLES = int(os.environ.get("CLEARING_EXAMPLES", "40"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LP_METHODS = (ClearingMethod.MERIT, ClearingMethod.HIGHS, ClearingMethod.PYOMO)
EXACT_MIP = {"mip_gap": 0.0}  # ties between block combinations only resolve at gap 0

prices = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]),  # frequent exact ties
    st.integers(0, 300).map(lambda c: c / 100),
)
kw = st.one_of(
    st.sampled_from([0.0, 0.0, 1.0, 2.0, 5.0]),
    st.floats(0.0, 50.0, allow_nan=False).map(lambda x: round(x, 3)),
)
# Whole kW for block books: true-cost differences between block combinations then stay
# >= 0.0025 DKK, far above what a MILP resolves, so "the optimum" is well defined.
whole_kw = st.integers(0, 12).map(float)


@st.composite
def problems(draw: st.DrawFn, blocks: bool = False, max_bids: int = 8) -> ClearingProblem:
    qty = whole_kw if blocks else kw
    n_t = draw(st.integers(1, 4))
    n = draw(st.integers(0, max_bids))
    ids = draw(st.lists(st.text("abxyz", min_size=1, max_size=3), min_size=n, max_size=n,
                        unique=True))  # fmt: skip
    bids = tuple(
        BidOffer(
            bid_id=ids[i],
            seller=f"s{i}",
            price=draw(prices),
            quantities=tuple(draw(st.lists(qty, min_size=n_t, max_size=n_t))),
            block=blocks and draw(st.booleans()),
            submitted_at=draw(st.integers(0, 2)),
        )
        for i in range(n)
    )
    need = tuple(draw(st.lists(st.one_of(st.just(0.0), qty), min_size=n_t, max_size=n_t)))
    cap = draw(st.sampled_from([0.0, 1.0, 1.5, 2.0, 5.0]))
    return ClearingProblem("p", need, cap, draw(st.sampled_from([0.25, 1.0])), bids)


def _run(problem: ClearingProblem, method: ClearingMethod, **kw: float) -> ClearingOutcome:
    out = clear(problem, SolverOptions(method=method, **kw))  # type: ignore[arg-type]
    assert out.is_ok, (method, out.status, out.message)
    return out


def _check_invariants(problem: ClearingProblem, out: ClearingOutcome, divisible: bool) -> None:
    need = np.array(problem.need)
    acc = np.array(out.accepted, dtype=float).reshape(len(problem.bids), len(need))
    offered = np.array([b.quantities for b in problem.bids], dtype=float).reshape(acc.shape)
    unmet = np.array(out.unmet)
    assert (acc >= 0).all() and (acc <= offered + 1e-9).all()
    assert (unmet >= 0).all()
    covered = acc.sum(axis=0) + unmet
    assert (covered >= need - 1e-6).all()
    if divisible:  # never buys more than the need
        np.testing.assert_allclose(covered, need, atol=1e-6)
    for i, b in enumerate(problem.bids):
        if b.price > problem.price_cap:
            assert not acc[i].any(), "bid above the cap accepted"
        if b.block:  # all or nothing
            assert np.allclose(acc[i], 0) or np.allclose(acc[i], offered[i])
    for t, mp in enumerate(out.marginal_price):
        accepted_prices = [b.price for i, b in enumerate(problem.bids) if acc[i, t] > 1e-9]
        assert (mp is None) == (not accepted_prices)
        assert all(mp >= p for p in accepted_prices)  # type: ignore[operator]
    h = problem.interval_hours
    cost = sum(b.price * acc[i].sum() for i, b in enumerate(problem.bids)) * h
    assert out.procurement_cost == pytest.approx(cost, abs=1e-9)
    assert out.objective == pytest.approx(cost + problem.price_cap * unmet.sum() * h, abs=1e-9)


@SETTINGS
@given(problems())
def test_divisible_invariants_and_methods_agree(problem: ClearingProblem) -> None:
    outs = {m: _run(problem, m) for m in LP_METHODS}
    for out in outs.values():
        _check_invariants(problem, out, divisible=True)
    ref = outs[ClearingMethod.MERIT]
    for m, out in outs.items():
        assert out.status == ref.status
        np.testing.assert_allclose(out.accepted, ref.accepted, atol=1e-6, err_msg=str(m))
        np.testing.assert_allclose(out.unmet, ref.unmet, atol=1e-6, err_msg=str(m))
        assert out.objective == pytest.approx(ref.objective, rel=1e-9, abs=1e-6)
        assert out.marginal_price == ref.marginal_price


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_bid_order_in_tuple_does_not_matter(problem: ClearingProblem, rnd: object) -> None:
    shuffled = list(problem.bids)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    other = ClearingProblem(problem.market_id, problem.need, problem.price_cap,
                            problem.interval_hours, tuple(shuffled))  # fmt: skip
    for m in (ClearingMethod.MERIT, ClearingMethod.HIGHS):
        a, b = _run(problem, m).accepted_by_bid(), _run(other, m).accepted_by_bid()
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=f"{m} {k}")


def _brute_force(problem: ClearingProblem) -> tuple[float, int]:
    """Try every subset of block bids; the divisible rest is an exact merit order.

    Returns the optimal true cost and how many block subsets reach it.
    """
    arrays = ProblemArrays.from_problem(problem)
    live = [i for i, b in enumerate(problem.bids) if b.block and arrays.eligible[i]]
    h, costs = problem.interval_hours, []
    for r in range(len(live) + 1):
        for subset in itertools.combinations(live, r):
            covered = arrays.quantity[list(subset)].sum(axis=0)
            rest = ClearingProblem(
                "rest", tuple(np.maximum(arrays.need - covered, 0.0).tolist()),
                problem.price_cap, h,
                tuple(b for b in problem.bids if not b.block),
            )  # fmt: skip
            rest_arrays = ProblemArrays.from_problem(rest)
            acc = allocate(rest_arrays)
            unmet = np.maximum(rest_arrays.need - acc.sum(axis=0), 0.0)
            cost = h * (
                sum(problem.bids[k].price * arrays.quantity[k].sum() for k in subset)
                + rest_arrays.price @ acc.sum(axis=1)
                + problem.price_cap * unmet.sum()
            )
            costs.append(float(cost))
    best = min(costs)
    return best, sum(c <= best + 1e-9 for c in costs)


@SETTINGS
@given(problems(blocks=True, max_bids=6))
def test_blocks_pyomo_equals_highs_and_brute_force(problem: ClearingProblem) -> None:
    hi = _run(problem, ClearingMethod.HIGHS, **EXACT_MIP)
    py = _run(problem, ClearingMethod.PYOMO, **EXACT_MIP)
    for out in (hi, py):
        _check_invariants(problem, out, divisible=not any(b.block for b in problem.bids))
    best, n_optimal = _brute_force(problem)
    # the perturbation may trade at most TIE_EPS per kWh of true cost for the tie rule
    energy = problem.interval_hours * (sum(map(sum, (b.quantities for b in problem.bids)))
                                       + sum(problem.need))  # fmt: skip
    assert hi.objective == pytest.approx(best, abs=TIE_EPS * energy + 1e-9)
    assert py.objective == pytest.approx(hi.objective, abs=1e-9)
    if n_optimal == 1:  # tied block combinations are resolved best effort only
        np.testing.assert_allclose(py.accepted, hi.accepted, atol=1e-6)


@SETTINGS
@given(problems(blocks=True, max_bids=6), st.randoms(use_true_random=False))
def test_blocks_bid_order_does_not_matter(problem: ClearingProblem, rnd: object) -> None:
    shuffled = list(problem.bids)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    other = ClearingProblem(problem.market_id, problem.need, problem.price_cap,
                            problem.interval_hours, tuple(shuffled))  # fmt: skip
    a = _run(problem, ClearingMethod.AUTO, **EXACT_MIP).accepted_by_bid()
    b = _run(other, ClearingMethod.AUTO, **EXACT_MIP).accepted_by_bid()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)


@SETTINGS
@given(problems(blocks=True), st.sampled_from(list(ClearingMethod)))
def test_empty_and_zero_need_books_give_a_status(problem: ClearingProblem,
                                                 method: ClearingMethod) -> None:  # fmt: skip
    for p in (
        ClearingProblem("e", problem.need, problem.price_cap, problem.interval_hours, ()),
        ClearingProblem("z", (0.0,) * len(problem.need), problem.price_cap, problem.interval_hours, problem.bids),
    ):
        out = clear(p, SolverOptions(method=method))
        if not p.bids:
            assert out.status == ClearingStatus.EMPTY
            assert out.unmet == p.need
        else:
            assert out.status == ClearingStatus.OPTIMAL
            assert not any(map(any, out.accepted))
