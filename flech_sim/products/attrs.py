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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from ..messages import AttrValue, Rejected, RejectReason
from .validation import finite_number, finite_numbers

__all__ = ["AttrSpec", "attrs_pass", "check_attrs", "describe_attrs"]


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


class _Group:
    """Fields of one shape and one pair of bounds (an mFRR bid's ~20 ``kw@`` fields are one group)."""

    __slots__ = ("hi", "kind", "lo", "max_term", "names")

    def __init__(self, names: tuple[str, ...], kind: str, lo: float | None, hi: float | None, term: str | None):
        self.names, self.kind, self.lo, self.hi, self.max_term = names, kind, lo, hi, term


class _AttrPlan:
    """What :func:`attrs_pass` tests for one product's specs, worked out once."""

    def __init__(self, specs: Sequence[AttrSpec]) -> None:
        self.specs = specs  # held, so that the id() the plan is cached under cannot be reused
        self.known = frozenset(s.name for s in specs)
        self.required = frozenset(s.name for s in specs if s.required)
        by_bounds: dict[tuple[str, float | None, float | None, str | None], list[str]] = {}
        for s in specs:
            kind = "interval" if s.per_interval else s.type.__name__
            if kind not in ("interval", "float", "int", "bool", "str"):
                kind = "other"  # a type check_attrs reads as str: left to it
            by_bounds.setdefault((kind, s.min, s.max, s.max_term), []).append(s.name)
        self.groups = tuple(_Group(tuple(names), *key) for key, names in by_bounds.items())
        self.simple = not self.required and all(g.kind != "other" for g in self.groups)


_PLANS: dict[int, _AttrPlan] = {}
_NUMBER = frozenset({float, int})
_MISSING = object()


def attrs_pass(
    specs: Sequence[AttrSpec],
    attrs: Mapping[str, Any],
    *,
    n_intervals: int,
    terms: Mapping[str, Any] | None = None,
) -> bool:
    """True only if :func:`check_attrs` passes ``attrs`` (the hot path: one call a bid with fields of its own).

    The same tests, field group by field group, with the loops in C: exact types (``float``/``int``
    numbers, tuples of them), lengths, finiteness (the sum of values bounded on both sides is finite
    only if every value is) and the bounds. False says nothing: :func:`check_attrs` then finds the
    reason, or passes what only this test's exact types refuse (a numpy float, an int subclass)."""
    plan = _PLANS.get(id(specs))
    if plan is None or plan.specs is not specs:
        plan = _PLANS[id(specs)] = _AttrPlan(specs)
    if not attrs.keys() <= plan.known or not plan.simple:
        return False
    try:
        return _groups_pass(plan, attrs, n_intervals, terms)
    except (OverflowError, TypeError):  # an int too large for a float, a bound of the wrong type: check_attrs says
        return False


def _groups_pass(plan: _AttrPlan, attrs: Mapping[str, Any], n_intervals: int, terms: Mapping[str, Any] | None) -> bool:
    everything = len(attrs) == len(plan.known)
    for g in plan.groups:
        if everything:
            values = list(map(attrs.__getitem__, g.names))
        else:
            values = [v for v in map(attrs.get, g.names, [_MISSING] * len(g.names)) if v is not _MISSING]
            if not values:
                continue
        kind = g.kind
        if kind == "bool":
            if set(map(type, values)) != {bool}:
                return False
            continue
        if kind == "str":
            if set(map(type, values)) != {str}:
                return False
            continue
        if kind == "interval":
            if set(map(type, values)) != {tuple} or set(map(len, values)) != {n_intervals}:
                return False
            values = list(chain.from_iterable(values))
            if not values:
                continue
            if not set(map(type, values)) <= _NUMBER:
                return False
        elif not set(map(type, values)) <= (_NUMBER if kind == "float" else {int}):
            return False
        lo, hi = g.lo, g.hi if g.max_term is None else (terms or {}).get(g.max_term, g.hi)
        if lo is None or hi is None:  # unbounded on a side: the values one by one
            if not all(map(math.isfinite, values)):
                return False
        elif not math.isfinite(sum(values)):  # bounded values sum to a finite number unless one is NaN or inf
            return False
        if (lo is not None and min(values) < lo) or (hi is not None and max(values) > hi):
            return False
    return True


def describe_attrs(specs: Sequence[AttrSpec]) -> str:
    """One line per field, for docstrings and the interface contract."""
    lines = []
    for s in specs:
        shape = "per interval" if s.per_interval else s.type.__name__
        need = "required" if s.required else "optional"
        lines.append(f"{s.name} ({shape}, {s.unit}, {need}): {s.doc}")
    return "\n".join(lines)
