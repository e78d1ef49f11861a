"""Pure settlement arithmetic: ordered vs delivered, payments and penalties.

Kept apart from the products so that it can be checked by hand: no SimPy,
no messages. Sign convention: a seller's ``net`` is money it receives;
the buyer's net for the same market is minus the sum of its sellers' nets,
so money is conserved by construction (and a test checks it on the tables).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .messages import Direction


@dataclass(frozen=True)
class IntervalSettlement:
    ordered_kwh: tuple[float, ...]
    delivered_kwh: tuple[float, ...]
    payment_dkk: tuple[float, ...]
    penalty_dkk: tuple[float, ...]
    gap: tuple[bool, ...]

    @property
    def net_dkk(self) -> tuple[float, ...]:
        return tuple(p - q for p, q in zip(self.payment_dkk, self.penalty_dkk, strict=True))


def delivered_against_baseline(direction: Direction, baseline_kw: float, metered_kw: float, ordered_kw: float) -> float:
    """Verified flexibility in one interval: the change from the baseline, capped at the order."""
    change = baseline_kw - metered_kw if direction is Direction.DOWN else metered_kw - baseline_kw
    return min(max(change, 0.0), ordered_kw)


def settle_seller(
    *,
    direction: Direction,
    hours: float,
    ordered_kw: Sequence[float],
    payment_dkk: Sequence[float],
    baseline_kw: Sequence[float],
    metered_kw: Sequence[float | None],
    penalty_price: float,
    gap_rule: str,
) -> IntervalSettlement:
    """Per-interval settlement of one seller in one baseline-verified market (SRP, BL).

    ``payment_dkk`` is what the award pays per interval (pay-as-bid or
    pay-as-clear, computed by the product). Shortfall = ordered - delivered
    is penalised at ``penalty_price``. A meter gap is settled by
    ``gap_rule``: 'no_delivery' (nothing counted as delivered) or 'award'
    (the order counted as delivered).
    """
    delivered: list[float] = []
    gaps: list[bool] = []
    for q, b, m in zip(ordered_kw, baseline_kw, metered_kw, strict=True):
        if m is None:
            gaps.append(True)
            delivered.append(q if gap_rule == "award" else 0.0)
        else:
            gaps.append(False)
            delivered.append(delivered_against_baseline(direction, b, m, q))
    ordered_kwh = tuple(q * hours for q in ordered_kw)
    delivered_kwh = tuple(d * hours for d in delivered)
    penalty = tuple((o - d) * penalty_price for o, d in zip(ordered_kwh, delivered_kwh, strict=True))
    return IntervalSettlement(ordered_kwh, delivered_kwh, tuple(payment_dkk), penalty, tuple(gaps))


def verify_against_baseline(
    *,
    direction: Direction,
    ordered_kw: Sequence[float],
    baseline_kw: Sequence[float | None],
    metered_kw: Sequence[float | None],
    gap_rule: str,
) -> tuple[tuple[float, ...], tuple[bool, ...]]:
    """(delivered kW, meter gap) per interval: the change from the baseline, capped at the order.

    A meter gap is settled by ``gap_rule`` as in :func:`settle_seller`. A missing
    *baseline* (``None``: the platform could not compute one) counts nothing as
    delivered and is not a meter gap.
    """
    delivered: list[float] = []
    gaps: list[bool] = []
    for q, b, m in zip(ordered_kw, baseline_kw, metered_kw, strict=True):
        gaps.append(m is None)
        if m is None:
            delivered.append(q if gap_rule == "award" else 0.0)
        elif b is None:
            delivered.append(0.0)
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
