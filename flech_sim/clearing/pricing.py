"""Pricing rules on top of a least-cost clearing: pay-as-bid, pay-as-clear and VCG.

Pure functions of a :class:`ClearingProblem` and its :class:`ClearingOutcome` (no
simulation machinery): they decide what each accepted bid is paid, never what is
accepted. Every rule returns a :class:`Pricing` keyed like the problem's bids.

* **pay-as-bid**: each bid is paid its own price for what was accepted of it.
* **pay-as-clear** (uniform price): in each interval every accepted bid is paid the
  interval's clearing price = the highest price among the bids accepted in it. With
  block bids the accepted set comes from the MILP and the divisible part from the LP
  re-solved with the binaries fixed (see :mod:`highs_direct`); the clearing price is
  then still the highest accepted price, so no accepted bid is paid below its own
  price (the LP dual alone can be 0 when a block over-covers the need).
* **VCG** (:func:`vcg`, :func:`clear_vcg`): each winning *seller* i is paid its
  externality, ``P_i = C*(N without i) - (C*(N) - c_i)``: the optimal cost of the others
  without i minus the cost of the others with i. Costs are the clearing objective (bids
  at their prices, unmet need at the buyer's cap), solved exactly (MIP gap 0). Then
  ``c_i <= P_i <= cap x E_i`` (E_i = i's accepted energy): removing i can only raise the
  optimum, and giving i's accepted quantities to "unmet" is feasible without i. Any
  numerical excursion outside that range is clamped and reported in ``message``.
  A seller's payment is split over its accepted bids as bid cost plus a share of the
  seller's surplus ``P_i - c_i`` proportional to each bid's headroom under the cap
  (cap x energy - cost), so every accepted bid is paid at least its bid and at most the
  cap. A bid's VCG price is its payment / its accepted energy, the same in every
  interval.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from flech_sim.clearing.least_cost import clear
from flech_sim.clearing.problem import ClearingOutcome, ClearingProblem, ClearingStatus, SolverOptions

__all__ = ["Pricing", "clear_vcg", "clearing_prices", "pay_as_bid", "pay_as_clear", "vcg"]

PAY_AS_BID = "pay_as_bid"
PAY_AS_CLEAR = "pay_as_clear"
VCG = "vcg"
ACCEPTED_KW = 1e-9  # a bid counts as accepted in an interval above this (as in least_cost)
_CLAMP_REPORT_DKK = 1e-6


@dataclass(frozen=True)
class Pricing:
    """What every bid of a problem is paid (problem order; zeros for bids not accepted)."""

    rule: str
    bid_ids: tuple[str, ...]
    prices: tuple[tuple[float, ...], ...]  # per bid, DKK/kWh per interval
    payments: tuple[float, ...]  # per bid, DKK
    status: ClearingStatus
    seller_payments: dict[str, float] = field(default_factory=dict)  # VCG: per winning seller, DKK
    message: str = ""

    def by_bid(self) -> dict[str, tuple[tuple[float, ...], float]]:
        return {b: (p, m) for b, p, m in zip(self.bid_ids, self.prices, self.payments, strict=True)}

    @property
    def total(self) -> float:
        return float(sum(self.payments))


def _accepted(problem: ClearingProblem, outcome: ClearingOutcome) -> list[tuple[float, ...]]:
    by_id = outcome.accepted_by_bid() if outcome.bid_ids else {}
    n = len(problem.need)
    return [tuple(by_id.get(b.bid_id, (0.0,) * n)) for b in problem.bids]


def clearing_prices(problem: ClearingProblem, outcome: ClearingOutcome) -> tuple[float | None, ...]:
    """Per interval, the highest price among bids accepted in it (None where nothing is accepted)."""
    acc = _accepted(problem, outcome)
    out: list[float | None] = []
    for t in range(len(problem.need)):
        ps = [b.price for b, a in zip(problem.bids, acc, strict=True) if a[t] > ACCEPTED_KW]
        out.append(max(ps) if ps else None)
    return tuple(out)


def pay_as_bid(problem: ClearingProblem, outcome: ClearingOutcome) -> Pricing:
    h = problem.interval_hours
    acc = _accepted(problem, outcome)
    prices = tuple(tuple(b.price for _ in problem.need) for b in problem.bids)
    payments = tuple(sum(a) * b.price * h for b, a in zip(problem.bids, acc, strict=True))
    return Pricing(PAY_AS_BID, tuple(b.bid_id for b in problem.bids), prices, payments, outcome.status)


def pay_as_clear(problem: ClearingProblem, outcome: ClearingOutcome) -> Pricing:
    """Uniform price per interval (see module text); a bid's price where it is not accepted is the
    interval's clearing price if there is one, else its own price (it is paid nothing there)."""
    h = problem.interval_hours
    acc = _accepted(problem, outcome)
    cp = clearing_prices(problem, outcome)
    prices = tuple(tuple(c if c is not None else b.price for c in cp) for b in problem.bids)
    payments = tuple(
        sum(q * p * h for q, p in zip(a, pr, strict=True)) for a, pr in zip(acc, prices, strict=True)
    )
    return Pricing(PAY_AS_CLEAR, tuple(b.bid_id for b in problem.bids), prices, payments, outcome.status)


def vcg(problem: ClearingProblem, outcome: ClearingOutcome, options: SolverOptions | None = None) -> Pricing:
    """VCG payments for an outcome that is optimal (cleared with MIP gap 0: see :func:`clear_vcg`)."""
    options = dataclasses.replace(options or SolverOptions(), mip_gap=0.0)
    h = problem.interval_hours
    cap = problem.price_cap
    acc = _accepted(problem, outcome)
    ids = tuple(b.bid_id for b in problem.bids)
    energy = [sum(a) * h for a in acc]
    cost = [e * b.price for e, b in zip(energy, problem.bids, strict=True)]
    base = pay_as_bid(problem, outcome)
    if not outcome.is_ok:
        return dataclasses.replace(base, rule=VCG, message=f"no VCG payments: clearing {outcome.status}")
    winners = sorted({b.seller for b, e in zip(problem.bids, energy, strict=True) if e > ACCEPTED_KW * h})
    payments = list(base.payments)
    prices = [list(p) for p in base.prices]
    seller_pay: dict[str, float] = {}
    notes: list[str] = []
    for seller in winners:
        mine = [k for k, b in enumerate(problem.bids) if b.seller == seller and energy[k] > ACCEPTED_KW * h]
        c_i = sum(cost[k] for k in mine)
        e_i = sum(energy[k] for k in mine)
        others = tuple(b for b in problem.bids if b.seller != seller)
        without = clear(dataclasses.replace(problem, bids=others), options)
        if not without.is_ok:
            notes.append(f"{seller}: clearing without it {without.status}; paid as bid")
            seller_pay[seller] = c_i
            continue
        raw = without.objective - (outcome.objective - c_i)
        p_i = min(max(raw, c_i), cap * e_i)
        if abs(p_i - raw) > _CLAMP_REPORT_DKK:
            notes.append(f"{seller}: externality {raw:.6f} DKK clamped to {p_i:.6f}")
        seller_pay[seller] = p_i
        headroom = [max(0.0, cap * energy[k] - cost[k]) for k in mine]
        room = sum(headroom)
        for k, hr in zip(mine, headroom, strict=True):
            pay = cost[k] + ((p_i - c_i) * hr / room if room > 0 else 0.0)
            payments[k] = pay
            price = pay / energy[k]
            prices[k] = [price] * len(problem.need)
    return Pricing(VCG, ids, tuple(tuple(p) for p in prices), tuple(payments), outcome.status, seller_pay,
                   "; ".join(notes))


def clear_vcg(problem: ClearingProblem, options: SolverOptions | None = None) -> tuple[ClearingOutcome, Pricing]:
    """Clear exactly (MIP gap 0, the same time limit) and price the result by VCG."""
    exact = dataclasses.replace(options or SolverOptions(), mip_gap=0.0)
    outcome = clear(problem, exact)
    return outcome, vcg(problem, outcome, exact)
