"""Product-specific fields of bids and awards: declared once per product, checked on arrival.

Shared messages carry only what every product has; a product's own fields travel in
``Bid.attrs`` / ``Award.attrs`` (a JSON object, so they round-trip unchanged). Each
product declares the keys it allows as frozen :class:`AttrSpec` values -- type, per
interval or not, bounds (a bound may name one of the market's terms) -- and
:func:`check_attrs` refuses unknown keys, missing required ones, wrong types, NaN or
infinity and values out of bounds with ``out_of_range`` and a text naming the field.
Pure: no SimPy, no platform state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..messages import AttrValue, Rejected, RejectReason
from .validation import finite_number, finite_numbers

__all__ = ["AttrSpec", "check_attrs", "describe_attrs"]


@dataclass(frozen=True)
class AttrSpec:
    """One product-specific field: ``type`` float, int, str or bool; ``per_interval``: one float per interval."""

    name: str
    type: type
    doc: str
    unit: str = "-"
    required: bool = False
    per_interval: bool = False
    min: float | None = None
    max: float | None = None
    max_term: str | None = None
    """Name of a market term whose value is the upper bound (e.g. CRP's ``availability_price_cap``)."""


def _scalar_ok(spec: AttrSpec, v: object) -> bool:
    if spec.type is bool:
        return isinstance(v, bool)
    if spec.type is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if spec.type is float:
        return finite_number(v)
    return isinstance(v, str)


def check_attrs(
    product_id: str,
    specs: Sequence[AttrSpec],
    attrs: Mapping[str, Any],
    *,
    n_intervals: int,
    terms: Mapping[str, Any] | None = None,
    what: str = "bids",
) -> dict[str, AttrValue]:
    """``attrs`` checked against ``specs`` (numbers made float where the spec says float); raise Rejected."""
    if not attrs:  # the common case (every bid of a product without fields of its own): only required ones can fail
        for spec in specs:
            if spec.required:
                raise Rejected(RejectReason.OUT_OF_RANGE, f"{product_id} {what} need {spec.name} ({spec.doc})")
        return {}
    known = {s.name: s for s in specs}
    unknown = sorted(set(attrs) - set(known))
    if unknown:
        raise Rejected(
            RejectReason.OUT_OF_RANGE, f"{product_id} {what} have no field(s) {unknown}; allowed: {sorted(known)}"
        )
    out: dict[str, AttrValue] = {}
    for spec in specs:
        if spec.name not in attrs:
            if spec.required:
                raise Rejected(RejectReason.OUT_OF_RANGE, f"{product_id} {what} need {spec.name} ({spec.doc})")
            continue
        v = attrs[spec.name]
        hi = spec.max if spec.max_term is None else (terms or {}).get(spec.max_term, spec.max)
        bounds = f" in [{'' if spec.min is None else f'{spec.min:g}'}, {'' if hi is None else f'{hi:g}'}]"
        if spec.per_interval:
            ok = isinstance(v, tuple) and len(v) == n_intervals and finite_numbers(v)
            values = tuple(float(x) for x in v) if ok else ()
        else:
            ok = _scalar_ok(spec, v)
            values = (v,) if ok and spec.type in (int, float) else ()
        if ok and values:
            ok = (spec.min is None or min(values) >= spec.min) and (hi is None or max(values) <= hi)
        if not ok:
            shape = f"{n_intervals} finite numbers" if spec.per_interval else f"a {spec.type.__name__}"
            raise Rejected(
                RejectReason.OUT_OF_RANGE,
                f"{product_id} {what} need {spec.name} ({spec.unit}) as {shape}"
                f"{bounds if spec.type in (int, float) or spec.per_interval else ''}, got {v!r}",
            )
        if spec.per_interval:
            out[spec.name] = values
        elif spec.type is float:
            out[spec.name] = float(v)
        else:
            out[spec.name] = v
    return out


def describe_attrs(specs: Sequence[AttrSpec]) -> str:
    """One line per field, for docstrings and the interface contract."""
    lines = []
    for s in specs:
        shape = "per interval" if s.per_interval else s.type.__name__
        need = "required" if s.required else "optional"
        lines.append(f"{s.name} ({shape}, {s.unit}, {need}): {s.doc}")
    return "\n".join(lines)
