"""Pricing rules on top of a least-cost clearing: pay-as-bid, pay-as-clear and VCG.

Pure functions of a :class:`ClearingProblem` and its :class:`ClearingOutcome` (no
simulation machinery): they decide what each accepted bid is paid, never what is
accepted. Every rule returns a :class:`Pricing` keyed like the problem's bids.

* **pay-as-bid**: each bid is paid its own price for what was accepted of it.
* **pay-as-clear** (uniform price): in each interval every accepted bid is paid the
  interval's clearing price = the highest price among the bids accepted in it, except
  that it never exceeds the price of a *divisible* bid left with spare quantity in that
  interval. With block bids the accepted set comes from the MILP (and the divisible
  part from the LP re-solved with the binaries fixed, see :mod:`highs_direct`); a block
  that over-covers the need can then be accepted above the price of a divisible bid
  that is not (fully) accepted. Rule (issue 13, as EUPHEMIA forbids paradoxically
  rejected divisible orders): the uniform price is lowered to that divisible bid's
  price, so no divisible bid priced *below* the clearing price is ever left unaccepted,
  and a block accepted above the uniform price is paid its own price (make-whole), so
  no accepted bid is paid below its own price either.
* **availability** (options, :func:`pay_availability`): the award's price is the bid's
  activation price and its payment the availability payment for what is reserved.
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
from collections.abc import Callable
from dataclasses import dataclass, field

from flech_sim.clearing.least_cost import clear
from flech_sim.clearing.problem import ClearingOutcome, ClearingProblem, ClearingStatus, SolverOptions

__all__ = [
    "PRICING_RULES",
    "Pricing",
    "accepted_quantities",
    "clear_vcg",
    "clearing_prices",
    "pay_as_bid",
    "pay_as_clear",
    "pay_availability",
    "price_by_rule",
    "register_pricing",
    "uniform_prices",
    "vcg",
]

PAY_AS_BID = "pay_as_bid"
PAY_AS_CLEAR = "pay_as_clear"
VCG = "vcg"
AVAILABILITY = "availability"
ACCEPTED_KW = 1e-9  # a bid counts as accepted in an interval above this (as in least_cost)
DUST_KW = 1e-7  # solver dust below this is no acceptance at all, so a non-award is exactly zero
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
    payment_from_prices: bool = True
    """True: a payment is accepted energy x prices (pay-as-bid, pay-as-clear); False: set by the rule (VCG, options)."""

    def by_bid(self) -> dict[str, tuple[tuple[float, ...], float]]:
        return {b: (p, m) for b, p, m in zip(self.bid_ids, self.prices, self.payments, strict=True)}

    @property
    def total(self) -> float:
        return float(sum(self.payments))


def accepted_quantities(problem: ClearingProblem, outcome: ClearingOutcome) -> list[tuple[float, ...]]:
    """kW accepted per bid (problem order) and interval, solver dust (< DUST_KW) dropped to exactly zero."""
    by_id = outcome.accepted_by_bid() if outcome.bid_ids else {}
    n = len(problem.need)
    return [tuple(0.0 if abs(x) < DUST_KW else float(x) for x in by_id.get(b.bid_id, (0.0,) * n)) for b in problem.bids]


_accepted = accepted_quantities


def clearing_prices(problem: ClearingProblem, outcome: ClearingOutcome) -> tuple[float | None, ...]:
    """Per interval, the highest price among bids accepted in it (None where nothing is accepted)."""
    acc = _accepted(problem, outcome)
    out: list[float | None] = []
    for t in range(len(problem.need)):
        ps = [b.price for b, a in zip(problem.bids, acc, strict=True) if a[t] > ACCEPTED_KW]
        out.append(max(ps) if ps else None)
    return tuple(out)


def _energy_payments(
    problem: ClearingProblem, acc: list[tuple[float, ...]], prices: tuple[tuple[float, ...], ...]
) -> tuple[float, ...]:
    h = problem.interval_hours
    return tuple(sum(q * p * h for q, p in zip(a, pr, strict=True)) for a, pr in zip(acc, prices, strict=True))


def pay_as_bid(problem: ClearingProblem, outcome: ClearingOutcome) -> Pricing:
    acc = _accepted(problem, outcome)
    prices = tuple(tuple(b.price for _ in problem.need) for b in problem.bids)
    return Pricing(
        PAY_AS_BID,
        tuple(b.bid_id for b in problem.bids),
        prices,
        _energy_payments(problem, acc, prices),
        outcome.status,
    )


def uniform_prices(problem: ClearingProblem, outcome: ClearingOutcome) -> tuple[float | None, ...]:
    """Per interval, the uniform price of pay-as-clear: the highest accepted price, lowered to the price of
    the cheapest divisible bid with spare quantity in the interval (no paradoxically rejected divisible bid)."""
    acc = _accepted(problem, outcome)
    out: list[float | None] = []
    for t, top in enumerate(clearing_prices(problem, outcome)):
        spare = [
            b.price
            for b, a in zip(problem.bids, acc, strict=True)
            if not b.block and b.price <= problem.price_cap and b.quantities[t] - a[t] > ACCEPTED_KW
        ]
        out.append(None if top is None else min([top, *spare]))
    return tuple(out)


def pay_as_clear(problem: ClearingProblem, outcome: ClearingOutcome) -> Pricing:
    """Uniform price per interval (see module text and :func:`uniform_prices`); an accepted block priced
    above it is paid its own price; a bid's price where it is not accepted is the interval's uniform price
    if there is one, else its own price (it is paid nothing there)."""
    acc = _accepted(problem, outcome)
    up = uniform_prices(problem, outcome)
    prices = tuple(
        tuple(
            b.price
            if (c is not None and b.block and a[t] > ACCEPTED_KW and b.price > c)
            else (c if c is not None else b.price)
            for t, c in enumerate(up)
        )
        for b, a in zip(problem.bids, acc, strict=True)
    )
    return Pricing(
        PAY_AS_CLEAR,
        tuple(b.bid_id for b in problem.bids),
        prices,
        _energy_payments(problem, acc, prices),
        outcome.status,
    )


def pay_availability(
    problem: ClearingProblem,
    outcome: ClearingOutcome,
    availability_price: dict[str, float],
    activation_price: dict[str, float],
) -> Pricing:
    """Options: price = the bid's activation price; payment = availability price x mean reserved kW
    (:func:`flech_sim.clearing.options.availability_payments`); activated energy is paid in settlement."""
    from flech_sim.clearing.options import availability_payments

    acc = _accepted(problem, outcome)
    prices = tuple(tuple(float(activation_price[b.bid_id]) for _ in problem.need) for b in problem.bids)
    payments = tuple(
        sum(availability_payments(availability_price[b.bid_id], a)) for b, a in zip(problem.bids, acc, strict=True)
    )
    return Pricing(
        AVAILABILITY, tuple(b.bid_id for b in problem.bids), prices, payments, outcome.status, payment_from_prices=False
    )


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
        return dataclasses.replace(
            base, rule=VCG, message=f"no VCG payments: clearing {outcome.status}", payment_from_prices=False
        )
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
    return Pricing(
        VCG,
        ids,
        tuple(tuple(p) for p in prices),
        tuple(payments),
        outcome.status,
        seller_pay,
        "; ".join(notes),
        payment_from_prices=False,
    )


def clear_vcg(problem: ClearingProblem, options: SolverOptions | None = None) -> tuple[ClearingOutcome, Pricing]:
    """Clear exactly (MIP gap 0, the same time limit) and price the result by VCG."""
    exact = dataclasses.replace(options or SolverOptions(), mip_gap=0.0)
    outcome = clear(problem, exact)
    return outcome, vcg(problem, outcome, exact)


PricingRule = Callable[[ClearingProblem, ClearingOutcome, SolverOptions], Pricing]
PRICING_RULES: dict[str, PricingRule] = {
    PAY_AS_BID: lambda p, o, _opts: pay_as_bid(p, o),
    PAY_AS_CLEAR: lambda p, o, _opts: pay_as_clear(p, o),
    VCG: vcg,
}
"""Rules a product may declare by name (``Product.pricing``); options need per-bid prices: :func:`pay_availability`."""


def register_pricing(name: str, rule: PricingRule) -> None:
    """Let a plug-in product declare a pricing rule of its own by name."""
    if name in PRICING_RULES and PRICING_RULES[name] is not rule:
        raise ValueError(f"pricing rule {name!r} is already defined")
    PRICING_RULES[name] = rule


def price_by_rule(
    rule: str, problem: ClearingProblem, outcome: ClearingOutcome, options: SolverOptions | None = None
) -> Pricing:
    try:
        fn = PRICING_RULES[rule]
    except KeyError:
        raise ValueError(f"unknown pricing rule {rule!r}; known: {sorted(PRICING_RULES)}") from None
    return fn(problem, outcome, options or SolverOptions())
