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


def delivered_against_baseline(
    direction: Direction, baseline_kw: float, metered_kw: float, ordered_kw: float
) -> float:
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
