"""Property tests of the pure pricing and option-clearing functions (hypothesis).

Books use whole kW and prices on a 0.05 DKK/kWh grid, so ties are frequent (the tie
rule is exercised) and true cost differences between block combinations stay far above
what a MILP resolves. Sellers come from a small set, so a seller often has several bids.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flech_sim.clearing import BidOffer, ClearingProblem, ClearingStatus, SolverOptions, clear
from flech_sim.clearing.options import OptionOffer, availability_payments, expected_price, option_problem
from flech_sim.clearing.pricing import (
    ACCEPTED_KW,
    clear_vcg,
    clearing_prices,
    pay_as_bid,
    pay_as_clear,
    uniform_prices,
    vcg,
)

EXAMPLES = int(os.environ.get("PRICING_EXAMPLES", "30"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-6

price = st.integers(0, 60).map(lambda c: c / 20)  # 0.00 .. 3.00 in steps of 0.05
kw = st.integers(0, 12).map(float)


@st.composite
def problems(draw: st.DrawFn, blocks: bool = True, max_bids: int = 6) -> ClearingProblem:
    n_t = draw(st.integers(1, 3))
    n = draw(st.integers(0, max_bids))
    bids = tuple(
        BidOffer(
            bid_id=f"b{i}",
            seller=draw(st.sampled_from(["s1", "s2", "s3"])),
            price=draw(price),
            quantities=tuple(draw(st.lists(kw, min_size=n_t, max_size=n_t))),
            block=blocks and draw(st.booleans()),
            submitted_at=draw(st.integers(0, 2)),
        )
        for i in range(n)
    )
    need = tuple(draw(st.lists(kw, min_size=n_t, max_size=n_t)))
    cap = draw(st.sampled_from([1.0, 2.0, 3.0]))
    return ClearingProblem("p", need, cap, draw(st.sampled_from([0.25, 1.0])), bids)


EXACT = SolverOptions(mip_gap=0.0)


def _accepted(problem, outcome):  # type: ignore[no-untyped-def]
    by_id = outcome.accepted_by_bid()
    return [by_id[b.bid_id] for b in problem.bids]


@SETTINGS
@given(problems())
def test_pay_as_clear_price_covers_every_accepted_bid_and_stays_under_the_cap(problem: ClearingProblem) -> None:
    out = clear(problem, EXACT)
    assert out.is_ok
    pricing = pay_as_clear(problem, out)
    cp = clearing_prices(problem, out)
    up = uniform_prices(problem, out)
    for b, acc, prices in zip(problem.bids, _accepted(problem, out), pricing.prices, strict=True):
        for t, q in enumerate(acc):
            if q > ACCEPTED_KW:
                assert cp[t] is not None and up[t] is not None and up[t] <= cp[t]
                assert b.price <= prices[t] <= problem.price_cap
                # the uniform price, except a block above it, which is paid its own (make-whole)
                assert prices[t] == (b.price if b.block and b.price > up[t] else up[t])
                if not b.block and b.quantities[t] - q > ACCEPTED_KW:
                    assert b.price >= up[t]
            elif up[t] is not None and not b.block:
                # no paradoxically rejected divisible bid: none priced below the uniform price is left out
                assert b.price >= up[t] or b.quantities[t] - q <= ACCEPTED_KW
    for b, acc, prices in zip(problem.bids, _accepted(problem, out), pay_as_bid(problem, out).prices, strict=True):
        if any(q > ACCEPTED_KW for q in acc):
            assert max(prices) == b.price <= problem.price_cap


@SETTINGS
@given(problems())
def test_vcg_is_individually_rational_and_capped(problem: ClearingProblem) -> None:
    out, pricing = clear_vcg(problem, EXACT)
    assert out.is_ok
    h = problem.interval_hours
    acc = _accepted(problem, out)
    assert pricing.message == ""  # no externality needed clamping: exact optima
    for seller, paid in pricing.seller_payments.items():
        mine = [(b, a) for b, a in zip(problem.bids, acc, strict=True) if b.seller == seller]
        cost = sum(b.price * sum(a) * h for b, a in mine)
        energy = sum(sum(a) * h for _, a in mine)
        assert paid >= cost - TOL
        assert paid <= problem.price_cap * energy + TOL
    for b, a, prices, pay in zip(problem.bids, acc, pricing.prices, pricing.payments, strict=True):
        if sum(a) > ACCEPTED_KW:
            assert pay >= b.price * sum(a) * h - TOL  # every accepted bid at least its bid ...
            assert max(prices) <= problem.price_cap + TOL  # ... and never above the buyer's cap
        else:
            assert pay == 0.0


@SETTINGS
@given(problems(), st.randoms(use_true_random=False))
def test_reordering_bids_changes_nothing(problem: ClearingProblem, rnd) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(problem.bids)
    rnd.shuffle(shuffled)
    other = ClearingProblem(problem.market_id, problem.need, problem.price_cap, problem.interval_hours, tuple(shuffled))
    out1, vcg1 = clear_vcg(problem, EXACT)
    out2, vcg2 = clear_vcg(other, EXACT)
    acc1, acc2 = out1.accepted_by_bid(), out2.accepted_by_bid()
    assert acc1.keys() == acc2.keys()
    for k in acc1:
        assert acc1[k] == pytest.approx(acc2[k], abs=1e-7)
    pac1, pac2 = pay_as_clear(problem, out1).by_bid(), pay_as_clear(other, out2).by_bid()
    v1, v2 = vcg1.by_bid(), vcg2.by_bid()
    for k in acc1:
        assert pac1[k][1] == pytest.approx(pac2[k][1], abs=1e-7)
        assert v1[k][1] == pytest.approx(v2[k][1], abs=1e-5)
    assert vcg1.seller_payments == pytest.approx(vcg2.seller_payments, abs=1e-5)


@SETTINGS
@given(problems())
def test_never_buys_more_than_the_need_unless_a_block_forces_it(problem: ClearingProblem) -> None:
    out = clear(problem, EXACT)
    acc = _accepted(problem, out)
    for t, need in enumerate(problem.need):
        total = sum(a[t] for a in acc)
        if total > need + 1e-7:
            divisible = sum(a[t] for b, a in zip(problem.bids, acc, strict=True) if not b.block)
            blocks = sum(a[t] for b, a in zip(problem.bids, acc, strict=True) if b.block)
            assert divisible <= 1e-7 and blocks > need


@pytest.mark.parametrize("rule", ["pay_as_bid", "pay_as_clear", "vcg"])
def test_empty_and_one_sided_books_give_a_status(rule: str) -> None:
    def price(problem: ClearingProblem):  # type: ignore[no-untyped-def]
        out = clear(problem, EXACT)
        if rule == "vcg":
            return out, vcg(problem, out, EXACT)
        return out, (pay_as_bid if rule == "pay_as_bid" else pay_as_clear)(problem, out)

    empty = ClearingProblem("e", (10.0, 5.0), 2.0, 1.0, ())
    out, pricing = price(empty)
    assert out.status == ClearingStatus.EMPTY and pricing.payments == () and pricing.total == 0.0
    no_need = ClearingProblem("n", (0.0,), 2.0, 1.0, (BidOffer("a", "s1", 1.0, (5.0,)),))
    out, pricing = price(no_need)
    assert out.is_ok and pricing.payments == (0.0,) and clearing_prices(no_need, out) == (None,)
    too_dear = ClearingProblem("d", (5.0,), 1.0, 1.0, (BidOffer("a", "s1", 1.5, (5.0,)),))
    out, pricing = price(too_dear)
    assert out.is_ok and out.unmet == (5.0,) and pricing.payments == (0.0,)


# == options (CRP): least expected cost ========================================================


@st.composite
def option_books(draw: st.DrawFn) -> tuple[list[OptionOffer], tuple[float, ...], float]:
    n_t = draw(st.integers(1, 3))
    offers = [
        OptionOffer(
            f"o{i}",
            draw(st.sampled_from(["s1", "s2"])),
            draw(price),
            draw(price),
            tuple(draw(st.lists(kw, min_size=n_t, max_size=n_t))),
            draw(st.booleans()),
            draw(st.integers(0, 2)),
        )
        for i in range(draw(st.integers(0, 5)))
    ]
    need = tuple(draw(st.lists(kw, min_size=n_t, max_size=n_t)))
    return offers, need, draw(st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]))


@SETTINGS
@given(option_books(), st.randoms(use_true_random=False))
def test_options_clear_at_least_expected_cost_whatever_the_order(book, rnd) -> None:  # type: ignore[no-untyped-def]
    offers, need, share = book
    kw_args = dict(
        activation_price_cap=3.0, availability_price_cap=3.0 * len(need), activation_share=share, interval_hours=1.0
    )
    problem = option_problem("o", need, offers=offers, **kw_args)
    out = clear(problem, EXACT)
    assert out.is_ok  # an empty book is a status (EMPTY), not an exception
    shuffled = list(offers)
    rnd.shuffle(shuffled)
    out2 = clear(option_problem("o", need, offers=shuffled, **kw_args), EXACT)
    a1, a2 = out.accepted_by_bid(), out2.accepted_by_bid()
    for k in a1:
        assert a1[k] == pytest.approx(a2[k], abs=1e-7)
    # the objective is the expected cost: availability + share x activation cost of what is reserved
    n = len(need)
    expected = 0.0
    for o in offers:
        q = a1[o.bid_id]
        expected += sum(availability_payments(o.availability_price, q)) + share * o.activation_price * sum(q)
        assert expected_price(o.availability_price, o.activation_price, share, n, 1.0) <= problem.price_cap + 1e-9
    assert out.procurement_cost == pytest.approx(expected, abs=1e-6)


def test_expected_price_ties_are_exact() -> None:
    # 0.3/3 + 0.1 x 1.0 and 0.6/3 + 0.1 x 0 are both 0.2, but not in raw floating point
    assert 0.3 / 3 + 0.1 * 1.0 != 0.6 / 3 + 0.1 * 0.0
    assert expected_price(0.3, 1.0, 0.1, 3, 1.0) == expected_price(0.6, 0.0, 0.1, 3, 1.0) == 0.2


def test_pricing_options_and_baselines_are_pure() -> None:
    """No simulation machinery in the pure modules (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        "import sys, flech_sim.clearing.pricing, flech_sim.clearing.options, flech_sim.baselines; "
        "bad = [m for m in ('simpy', 'flech_sim.agents', 'flech_sim.products') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
