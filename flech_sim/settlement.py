"""Pure settlement arithmetic: ordered vs delivered, payments, penalties and imbalance amounts.

Kept apart from the products so that it can be checked by hand: no SimPy,
no messages. Sign convention: a seller's ``net`` is money it receives;
the buyer's net for the same market is minus the sum of its sellers' nets,
so money is conserved by construction (and a test checks it on the tables).

Settlement rules (a product declares which it can use; ``settlement.rules`` in the
scenario picks one per product, see :data:`RULES`):

* ``delivered_plus_penalty``: the award's price is paid on *delivered* energy only, and
  the shortfall (ordered - delivered) is penalised at the penalty price;
* ``award_minus_penalty``: the award is paid in full, the shortfall penalised on top
  (the rule SRP and BL used before it was named);
* ``imbalance``: delivered energy paid at the award's (clearing) price; the signed
  deviation (ordered - the measured change, which may exceed the order) is settled at
  the imbalance price's spread over spot. The counterparty of that amount is the TSO
  (Energinet, through eSett's imbalance settlement of the seller's balance responsible
  party); on the platform it is the market's buyer, the TSO, so the buyer's net still
  equals minus the sum of the sellers' nets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .messages import Direction

Rule = Literal["delivered_plus_penalty", "award_minus_penalty", "imbalance"]
RULES: tuple[Rule, ...] = ("delivered_plus_penalty", "award_minus_penalty", "imbalance")
"""Settlement rules by name (see the module text)."""


@dataclass(frozen=True)
class IntervalSettlement:
    ordered_kwh: tuple[float, ...]
    delivered_kwh: tuple[float, ...]
    payment_dkk: tuple[float, ...]
    penalty_dkk: tuple[float, ...]
    gap: tuple[bool, ...]
    imbalance_dkk: tuple[float, ...] = ()
    """Deviation settled at the imbalance spread (seller pays, the TSO receives); empty = none."""
    rule: str = ""
    """The settlement rule applied ('' = the product's own, unnamed)."""

    @property
    def charge_dkk(self) -> tuple[float, ...]:
        """What the seller pays for not delivering: penalty plus imbalance amount, per interval."""
        if not self.imbalance_dkk:
            return self.penalty_dkk
        return tuple(p + x for p, x in zip(self.penalty_dkk, self.imbalance_dkk, strict=True))

    @property
    def net_dkk(self) -> tuple[float, ...]:
        return tuple(p - q for p, q in zip(self.payment_dkk, self.charge_dkk, strict=True))


def delivered_against_baseline(direction: Direction, baseline_kw: float, metered_kw: float, ordered_kw: float) -> float:
    """Verified flexibility in one interval: the change from the baseline, capped at the order."""
    change = baseline_kw - metered_kw if direction is Direction.DOWN else metered_kw - baseline_kw
    return min(max(change, 0.0), ordered_kw)


def verify_against_baseline(
    *,
    direction: Direction,
    ordered_kw: Sequence[float],
    baseline_kw: Sequence[float | None],
    metered_kw: Sequence[float | None],
    gap_rule: str,
    signed: bool = False,
) -> tuple[tuple[float, ...], tuple[bool, ...]]:
    """(delivered kW, meter gap) per interval: the change from the baseline, capped at the order.

    A meter gap is settled by ``gap_rule``: 'no_delivery' (nothing counted as delivered)
    or 'award' (the order counted as delivered). A missing *baseline* (``None``: the
    platform could not compute one) counts nothing as delivered and is not a meter gap.
    ``signed``: the measured change itself, neither floored at 0 nor capped at the order
    (what the imbalance rule settles the deviation on).
    """
    delivered: list[float] = []
    gaps: list[bool] = []
    for q, b, m in zip(ordered_kw, baseline_kw, metered_kw, strict=True):
        gaps.append(m is None)
        if m is None:
            delivered.append(q if gap_rule == "award" else 0.0)
        elif b is None:
            delivered.append(0.0)
        elif signed:
            delivered.append(b - m if direction is Direction.DOWN else m - b)
        else:
            delivered.append(delivered_against_baseline(direction, b, m, q))
    return tuple(delivered), tuple(gaps)


def settle_delivered(
    *,
    hours: float,
    ordered_kw: Sequence[float],
    delivered_kw: Sequence[float],
    gaps: Sequence[bool],
    penalty_price: float,
    fixed_dkk: Sequence[float] | None = None,
    energy_price: Sequence[float] | None = None,
) -> IntervalSettlement:
    """Per-interval settlement once delivery is verified.

    payment = ``fixed_dkk`` (paid whatever is delivered: an award paid as awarded, an
    availability payment) + delivered kWh x ``energy_price`` (paid only on delivery);
    penalty = (ordered - delivered) kWh x ``penalty_price``.
    """
    n = len(ordered_kw)
    fixed = fixed_dkk if fixed_dkk is not None else [0.0] * n
    price = energy_price if energy_price is not None else [0.0] * n
    ordered_kwh = tuple(q * hours for q in ordered_kw)
    delivered_kwh = tuple(d * hours for d in delivered_kw)
    payment = tuple(f + d * p for f, d, p in zip(fixed, delivered_kwh, price, strict=True))
    penalty = tuple(max(0.0, o - d) * penalty_price for o, d in zip(ordered_kwh, delivered_kwh, strict=True))
    return IntervalSettlement(ordered_kwh, delivered_kwh, payment, penalty, tuple(gaps))


def settle_by_rule(
    rule: str,
    *,
    hours: float,
    ordered_kw: Sequence[float],
    change_kw: Sequence[float],
    gaps: Sequence[bool],
    energy_price: Sequence[float],
    penalty_price: float,
    fixed_dkk: Sequence[float] | None = None,
    imbalance_spread: Sequence[float] | None = None,
) -> IntervalSettlement:
    """One seller's settlement under a named rule (:data:`RULES`), per interval.

    ``change_kw`` is the measured change from the baseline, signed and uncapped
    (:func:`verify_against_baseline` with ``signed=True``); delivered = the change within
    [0, ordered]. ``energy_price`` DKK/kWh is the award's price of each interval (the
    clearing price, the bid price, an option's activation price); ``fixed_dkk`` what is
    paid whatever is delivered (an option's availability payment).

    * delivered_plus_penalty: payment = fixed + delivered x price; penalty = (ordered -
      delivered) x ``penalty_price``;
    * award_minus_penalty: payment = fixed + ordered x price; penalty as above;
    * imbalance: payment = fixed + delivered x price; penalty = (ordered - delivered) x
      ``penalty_price`` (0 unless the market names one); imbalance = (ordered - change) kWh
      x ``imbalance_spread`` (DKK/kWh, per interval), signed: an over-delivery earns it.
    """
    if rule not in RULES:
        raise ValueError(f"unknown settlement rule {rule!r}; the rules are {list(RULES)}")
    delivered = [min(max(c, 0.0), q) for c, q in zip(change_kw, ordered_kw, strict=True)]
    paid_kw = ordered_kw if rule == "award_minus_penalty" else delivered
    n = len(ordered_kw)
    fixed = list(fixed_dkk) if fixed_dkk is not None else [0.0] * n
    fixed = [f + q * hours * p for f, q, p in zip(fixed, paid_kw, energy_price, strict=True)]
    base = settle_delivered(
        hours=hours,
        ordered_kw=ordered_kw,
        delivered_kw=delivered,
        gaps=gaps,
        penalty_price=penalty_price,
        fixed_dkk=fixed,
    )
    imbalance: tuple[float, ...] = ()
    if rule == "imbalance":
        if imbalance_spread is None:
            raise ValueError("the imbalance rule needs the imbalance spread of every interval")
        imbalance = tuple((q - c) * hours * x for q, c, x in zip(ordered_kw, change_kw, imbalance_spread, strict=True))
    return IntervalSettlement(
        base.ordered_kwh, base.delivered_kwh, base.payment_dkk, base.penalty_dkk, base.gap, imbalance, rule
    )


def cap_compliance(
    *,
    reduction_kw: Sequence[float],
    cap_kw: Sequence[float],
    metered_kw: Sequence[float | None],
    gap_rule: str,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[bool, ...]]:
    """Capacity limitation, per interval: (delivered kW, excess kW, meter gap).

    Only intervals with an accepted reduction (> 0) carry a cap. excess = max(0,
    metered - cap); delivered = max(0, reduction - excess) (the reduction honoured).
    A meter gap follows ``gap_rule``: 'no_delivery' counts the whole reduction as
    excess, 'award' counts it as honoured.
    """
    delivered: list[float] = []
    excess: list[float] = []
    gaps: list[bool] = []
    for r, cap, m in zip(reduction_kw, cap_kw, metered_kw, strict=True):
        gaps.append(m is None and r > 0)
        if r <= 0:
            delivered.append(0.0)
            excess.append(0.0)
        elif m is None:
            x = 0.0 if gap_rule == "award" else r
            delivered.append(r - x)
            excess.append(x)
        else:
            x = max(0.0, m - cap)
            delivered.append(max(0.0, r - x))
            excess.append(x)
    return tuple(delivered), tuple(excess), tuple(gaps)
