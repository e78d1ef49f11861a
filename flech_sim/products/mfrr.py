"""mFRR -- manual Frequency Restoration Reserve, regulating power (bought by the TSO).

Balancing energy per 15-minute interval, cleared in merit order against the
TSO's need and paid as cleared: every accepted bid gets the interval's
marginal price.

Units. The Nordic market quotes DKK/MWh and MW; the platform uses DKK/kWh and kW
everywhere, so a bid of 5 MW at 450 DKK/MWh is ``quantities_kw=(5000.0,)``,
``price=0.45`` (DKK/kWh = DKK/MWh / 1000; kW = MW x 1000). Direction follows
the platform's sign, seen from the load: the TSO's *upward* regulation (the
system is short) is ``Direction.DOWN`` (consume less); *downward* regulation
is ``Direction.UP`` (consume more).

Interface contract
------------------
MarketRequest / BidRequest
    ``location`` '*' (system-wide; normal) or a feeder; ``interval_minutes``
    must be 15 and ``delivery_start - gate_close`` at least 45 minutes (else
    invalid_times); ``need_kw`` kW per 15-min interval; ``price_cap`` DKK/kWh.
    ``params``:

    * ``min_bid_kw`` (float >= 0, default 1000 = 1 MW): every offered quantity
      > 0 must be at least this, and so must every *accepted* quantity > 0
      (see :meth:`MFRRProduct.solve`: a bid whose accepted part would fall
      below it is withdrawn from that interval and the book cleared again);
    * ``dispatch`` = 'on_award' (fixed): the award *is* the activation order
      (full activation within the interval); mFRR takes no Activation messages.

Bid
    ``price`` DKK/kWh (<= price_cap); ``quantities_kw`` per interval, each
    either 0 or >= min_bid_kw (else out_of_range: "below the minimum bid
    size"); ``block`` all-or-nothing over the intervals; ``baseline_kw``
    (required; identical in all your bids of one market) = your declared
    consumption per interval, summed over the metering points that count (see
    below); ``location``: '' = pooled over all your feeders, or one feeder you
    have a portfolio on (all your bids in one market must name the same).
    ``attrs`` (optional; a pooled bid's footprint on the grid, which the TSO/DSO
    coordination screens against each feeder's headroom, see flech_sim.coordination):
    ``kw@<feeder>`` = kW per interval from your households on that feeder (they
    sum to ``quantities_kw``; only feeders you have a portfolio on; not with a
    bid location), ``rebound_kwh@<feeder>`` = the energy they draw back after a
    full down delivery. Undeclared, a pooled bid is taken to sit in full on every
    feeder you have households on.

Clearing / Award
    Least cost (merit order; blocks by MILP with the divisible part from the
    LP re-solved with binaries fixed) against need_kw; ties: earlier arrival at
    the platform. Pay-as-clear (:func:`flech_sim.clearing.pricing.pay_as_clear`):
    ``prices`` = the interval's uniform price = the highest price accepted in
    it, lowered to the price of any divisible bid left with spare quantity (so
    no divisible bid priced below it is rejected); a block accepted above it is
    paid its own price;
    ``payment_dkk`` = accepted kWh x clearing price if fully delivered. Each
    award's accepted quantities are also rows of the ``activations`` table
    (activation_id = the award's msg_id).

Settlement (per seller and interval)
    Metering points that count: ``<seller>@<location>`` for a bid location,
    else every ``<seller>@<feeder>`` the seller has (their sum). change =
    declared baseline - metered (down) or metered - baseline (up); delivered =
    the change within [0, accepted]; payment = delivered kWh x clearing price.
    By the scenario's ``settlement.rules``: 'imbalance' (default) -- the
    deviation (accepted - change) kWh, signed, is settled at the imbalance
    price's spread over spot (:mod:`flech_sim.imbalance_price`; the seller
    pays it, the TSO receives it: Energinet settles a provider's undelivered
    energy as its balance responsible party's imbalance), and a penalty only
    if the request names a penalty_price; 'delivered_plus_penalty' -- penalty
    = (accepted - delivered) kWh x penalty price; 'award_minus_penalty' -- the
    award paid in full, penalty on top. The bid request's params carry
    ``settlement`` (the rule) and, under 'imbalance', ``imbalance_premium``
    (DKK/kWh of deviation to expect). A gap at any counted point is a gap
    (the scenario's gap rule). The buyer's net is minus the sum of the
    sellers' nets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, repeat
from typing import Any

from ..clearing import ClearingOutcome, ClearingProblem, SolverOptions, clear
from ..clearing.pricing import PAY_AS_CLEAR, accepted_quantities
from ..footprint import FEEDER_KW, REBOUND_KWH, check_footprint
from ..messages import Bid, MarketRequest, Rejected, RejectReason, SettlementStatement
from ..metering import metering_point
from ..registry import register_product
from ..settlement import IntervalSettlement
from . import records
from .attrs import AttrSpec
from .base import Market
from .book import MarketClearing, clear_book
from .common import TermsProduct, dispatch_param
from .params import Param

INTERVAL_MINUTES = 15
GATE_CLOSURE_MINUTES = 45
"""Bids close at least this long before delivery starts."""
DEFAULT_MIN_BID_KW = 1000.0

PARAMS = (
    Param("min_bid_kw", float, DEFAULT_MIN_BID_KW, "smallest non-zero quantity of a bid, kW (1 MW)", min=0.0),
    dispatch_param("on_award"),
)


def grid_attrs(locations: Iterable[str]) -> tuple[AttrSpec, ...]:
    """The bid fields with which a pooled bid declares its footprint on ``locations`` (flech_sim.footprint)."""
    specs: list[AttrSpec] = []
    for f in sorted(locations):
        specs.append(
            AttrSpec(f"{FEEDER_KW}{f}", float, f"kW of the bid from households on {f}", "kW", per_interval=True, min=0)
        )
        specs.append(
            AttrSpec(
                f"{REBOUND_KWH}{f}",
                float,
                f"energy the households on {f} draw back after a full down delivery",
                "kWh",
                min=0.0,
            )
        )
    return tuple(specs)


@register_product("mFRR")
class MFRRProduct(TermsProduct):
    PARAMS = PARAMS
    pricing = PAY_AS_CLEAR
    feeder_only = False
    declared_baseline = "required"
    SETTLEMENT_RULES = ("imbalance", "delivered_plus_penalty", "award_minus_penalty")

    def __init__(self, product_id: str, services: Any) -> None:
        super().__init__(product_id, services)
        # A pooled bid declares where on the grid its kW sit (kw@<feeder>, rebound_kwh@<feeder>), so the
        # TSO/DSO coordination can screen it against each feeder's headroom; the fields name this run's feeders.
        self.BID_ATTRS = grid_attrs(services.locations)  # type: ignore[misc]  # per run: the feeders are the run's
        self._location: dict[tuple[str, str], str] = {}  # (market, seller) -> bid location ('' = pooled)
        self._portfolio_keys: dict[str, frozenset[str]] = {}  # seller -> the kw@<feeder> keys it may declare

    def _feeder_keys(self, seller: str) -> frozenset[str]:
        """The ``kw@<feeder>`` fields ``seller`` may declare: one per feeder it has a portfolio on. Worked out
        once a seller (a pooled bid names ~20 feeders); a run's portfolios are fixed (the core's sellers_at)."""
        keys = self._portfolio_keys.get(seller)
        if keys is None:
            keys = self._portfolio_keys[seller] = frozenset(
                f"{FEEDER_KW}{f}" for f in self.s.locations if seller in self.s.sellers_at(f)
            )
        return keys

    def check_request(self, req: MarketRequest) -> None:
        if req.interval_minutes != INTERVAL_MINUTES:
            raise Rejected(
                RejectReason.INVALID_TIMES, f"mFRR intervals are {INTERVAL_MINUTES} minutes, got {req.interval_minutes}"
            )
        if req.delivery_start - req.gate_close < GATE_CLOSURE_MINUTES:
            raise Rejected(
                RejectReason.INVALID_TIMES,
                f"mFRR gate closure must be at least {GATE_CLOSURE_MINUTES} min before delivery; "
                f"got {req.delivery_start - req.gate_close} min",
            )

    def check_product_bid(self, market: Market, bid: Bid) -> None:
        least = market.terms["min_bid_kw"]
        for i, q in enumerate(bid.quantities_kw):
            if 0 < q < least:
                raise Rejected(
                    RejectReason.OUT_OF_RANGE,
                    f"{q:g} kW in interval {i} is below the minimum bid size {least:g} kW "
                    f"({least / 1000:g} MW); pool more flexibility into one bid",
                )
        loc = bid.location
        if loc and bid.sender not in self.s.sellers_at(loc):
            raise Rejected(RejectReason.NOT_ELIGIBLE, f"{bid.sender} has no portfolio at {loc!r}")
        wrong = check_footprint(bid)
        if wrong is None:
            keys = list(compress(bid.attrs, map(str.startswith, bid.attrs, repeat(FEEDER_KW))))
            if keys and loc:
                wrong = f"a bid for {loc!r} declares no kW per feeder: they are all at its location"
            elif keys and not self._feeder_keys(bid.sender).issuperset(keys):
                for key in keys:  # the first feeder named without a portfolio there
                    if bid.sender not in self.s.sellers_at(key[len(FEEDER_KW) :]):
                        wrong = f"{key}: {bid.sender} has no portfolio on {key[len(FEEDER_KW) :]!r}"
                        break
        if wrong is not None:
            raise Rejected(RejectReason.OUT_OF_RANGE, wrong)
        earlier = self._location.get((market.market_id, bid.sender))
        if earlier is not None and earlier != loc:
            raise Rejected(
                RejectReason.OUT_OF_RANGE,
                f"bid location {loc!r} differs from your earlier bid's {earlier!r} in this market",
            )
        self._location[(market.market_id, bid.sender)] = loc

    def retire(self, market: Market) -> None:
        for seller in market.bidders:  # before the book is dropped: the bidders come from it
            self._location.pop((market.market_id, seller), None)
        super().retire(market)

    def seller_points(self, market: Market, seller: str) -> list[str]:
        loc = self._location.get((market.market_id, seller), "")
        if not loc and market.request.location != "*":
            loc = market.request.location
        if loc:
            return [metering_point(seller, loc)]
        return [metering_point(seller, f) for f in sorted(self.s.locations) if seller in self.s.sellers_at(f)]

    @classmethod
    def solve(
        cls, problem: ClearingProblem, terms: Mapping[str, Any], options: SolverOptions
    ) -> tuple[ClearingProblem, ClearingOutcome]:
        """Least cost, then the minimum bid size on what is *accepted* (issue 13).

        Rule: in every interval a bid's accepted quantity is 0 or at least ``min_bid_kw``. A bid whose
        accepted part in an interval falls below the minimum is withdrawn from that interval (a block bid
        cannot be partly accepted, so only divisible bids are affected) and the book is cleared again,
        until no accepted part is below the minimum; the need it leaves is taken further up the merit
        order or stays unmet. Each round removes at least one (bid, interval) cell, so this ends.
        """
        least = float(terms.get("min_bid_kw", 0.0))
        outcome = clear(problem, options)
        while least > 0 and outcome.is_ok:
            acc = accepted_quantities(problem, outcome)
            small = {(k, t) for k, a in enumerate(acc) for t, q in enumerate(a) if 0 < q < least - 1e-9}
            if not small:
                break
            bids = tuple(
                dataclasses.replace(
                    b, quantities=tuple(0.0 if (k, t) in small else q for t, q in enumerate(b.quantities))
                )
                for k, b in enumerate(problem.bids)
            )
            problem = dataclasses.replace(problem, bids=bids)
            outcome = clear(problem, options)
        return problem, outcome

    def on_cleared(self, market: Market) -> None:
        """The award is the activation order: its accepted quantities are rows of ``activations``."""
        for a in market.awards:
            for i, q in enumerate(a.accepted_kw):
                if q > 0:
                    records.write_activation(
                        self.s.persistor, market, self.product_id, a.msg_id, a.msg_id, a.recipient, a.bid_id, i, q
                    )

    def settle(self, market: Market) -> list[SettlementStatement]:
        results: dict[str, IntervalSettlement] = {}
        for seller in self.awarded_sellers(market):
            results[seller] = self.settle_seller(market, seller, market.baselines[seller])
        return self.issue_statements(market, results)


def clear_market(
    request: MarketRequest,
    bids: Sequence[Bid],
    options: SolverOptions | None = None,
    *,
    book: Sequence[Bid] | None = None,
) -> MarketClearing:
    """Clear a book of acknowledged mFRR bids (arrival order) for ``request``: awards, prices, status."""
    return clear_book(MFRRProduct, request, bids, options, book=book)
