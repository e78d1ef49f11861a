"""Clearing one market's book: request + bids + solver options -> awards, prices, status. Pure.

This is the code path the simulation runs at gate closure and what
``flech_sim.products.<product>.clear_market`` exposes, so a book can be
cleared from a notebook or re-cleared from the recorded messages of a run
(``MarketRequest`` + the acknowledged ``Bid`` messages in arrival order +
the run's solver options). A product contributes only its rules, as
class-level hooks of its :class:`~flech_sim.products.base.Product` class:
``read_terms``, ``clearing_problem``, ``solve``, ``price`` (a rule of
:mod:`flech_sim.clearing.pricing`) and ``award_attrs``.

Ties at equal price rank by *arrival*: the position of the bid in ``bids``,
which is the order the platform acknowledged them (never the sender's
claimed ``sent_at``, which nothing checks against the clock).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..clearing import BidOffer, ClearingOutcome, ClearingProblem, SolverOptions
from ..clearing.pricing import PAY_AS_CLEAR, Pricing, accepted_quantities, uniform_prices
from ..messages import AttrValue, Bid, MarketRequest

if TYPE_CHECKING:
    from .base import Product

__all__ = ["AwardTerms", "MarketClearing", "clear_book", "offers"]


@dataclass(frozen=True)
class AwardTerms:
    """What an award to one bid says, before it becomes an :class:`~flech_sim.messages.Award` message."""

    bid_id: str
    seller: str
    accepted_kw: tuple[float, ...]
    prices: tuple[float, ...]
    payment_dkk: float
    attrs: dict[str, AttrValue] = field(default_factory=dict)

    @property
    def awarded(self) -> bool:
        return any(q > 0 for q in self.accepted_kw)


@dataclass(frozen=True)
class MarketClearing:
    """The cleared result of one market: solver outcome, pricing and one award per bid (bid order)."""

    market_id: str
    terms: Mapping[str, Any]
    problem: ClearingProblem
    outcome: ClearingOutcome
    pricing: Pricing | None
    awards: tuple[AwardTerms, ...]
    note: str = ""

    @property
    def status(self) -> str:
        return str(self.outcome.status)

    @property
    def is_ok(self) -> bool:
        return self.outcome.is_ok

    @property
    def cost_dkk(self) -> float:
        return sum(a.payment_dkk for a in self.awards)

    @property
    def clearing_price(self) -> tuple[float | None, ...]:
        """Per interval: the uniform price under pay-as-clear, else the highest accepted price."""
        if self.pricing is not None and self.pricing.rule == PAY_AS_CLEAR:
            return uniform_prices(self.problem, self.outcome)
        return self.outcome.marginal_price

    @property
    def accepted_kw(self) -> tuple[float, ...]:
        n = len(self.problem.need)
        return tuple(sum(a.accepted_kw[i] for a in self.awards) for i in range(n)) if self.awards else (0.0,) * n

    def by_bid(self) -> dict[str, AwardTerms]:
        return {a.bid_id: a for a in self.awards}


def offers(bids: Sequence[Bid], book: Sequence[Bid] | None = None) -> tuple[BidOffer, ...]:
    """The book as solver offers; ``submitted_at`` is the arrival position in ``bids`` (the tie-break)."""
    arrival = {b.bid_id: i for i, b in enumerate(bids)}
    return tuple(
        BidOffer(b.bid_id, b.sender, b.price, tuple(b.quantities_kw), b.block, arrival[b.bid_id])
        for b in (bids if book is None else book)
    )


def clear_book(
    rules: type[Product],
    request: MarketRequest,
    bids: Sequence[Bid],
    options: SolverOptions | None = None,
    *,
    terms: Mapping[str, Any] | None = None,
    book: Sequence[Bid] | None = None,
) -> MarketClearing:
    """Clear ``request``'s market over ``bids`` (acknowledged, in arrival order) by ``rules``.

    ``book`` is the part of ``bids`` that may be cleared (the TSO/DSO coordination screen; default all);
    every bid still gets an award, all zeros when it was screened out. ``terms`` default to the request's
    params read by the product.
    """
    options = options or SolverOptions()
    terms = dict(rules.read_terms(request) if terms is None else terms)
    book = list(bids if book is None else book)
    problem = rules.clearing_problem(request, terms, bids, book)
    problem, outcome = rules.solve(problem, terms, rules.solver_options(terms, options))
    if not outcome.is_ok:
        return MarketClearing(request.market_id, terms, problem, outcome, None, ())
    pricing = rules.price(problem, outcome, terms, book, options)
    accepted = dict(zip((b.bid_id for b in problem.bids), accepted_quantities(problem, outcome), strict=True))
    n, h = request.n_intervals, request.interval_minutes / 60.0
    zeros = (0.0,) * n
    extra = rules.award_attrs(request, terms, bids, {b.bid_id: accepted.get(b.bid_id, zeros) for b in bids})
    priced = pricing.by_bid()
    cp = uniform_prices(problem, outcome) if pricing.rule == PAY_AS_CLEAR else (None,) * n
    awards = []
    for bid in bids:
        q = accepted.get(bid.bid_id, zeros)
        if bid.bid_id in priced:
            prices, payment = priced[bid.bid_id]
        else:  # screened out: nothing accepted, quoted at the interval's uniform price where there is one
            prices, payment = tuple(c if c is not None else float(bid.price) for c in cp), 0.0
        prices = tuple(float(p) for p in prices)
        if pricing.payment_from_prices:
            payment = sum(qi * pi * h for qi, pi in zip(q, prices, strict=True))
        elif not any(x > 0 for x in q):
            payment = 0.0
        awards.append(AwardTerms(bid.bid_id, bid.sender, q, prices, float(payment), extra.get(bid.bid_id, {})))
    note = f"{pricing.rule}: {pricing.message}" if pricing.message else ""
    return MarketClearing(request.market_id, terms, problem, outcome, pricing, tuple(awards), note)
