"""Typed product terms: a market request's ``params`` checked against a product's declared list.

Each product declares its params once (name, type, default, limits, meaning);
:func:`read_params` checks a request's params against that list -- unknown
names, wrong types and out-of-range values are rejected with ``out_of_range``
and a text naming the param -- and fills in the defaults. The product stores
the result as ``Market.terms`` and sends it in every bid request, so sellers
see the terms actually in force.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..messages import Rejected, RejectReason

__all__ = ["Param", "describe", "read_params"]


@dataclass(frozen=True)
class Param:
    name: str
    type: type  # float, int, str or bool
    default: Any  # None: no default here (the product fills it in from the request)
    doc: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None


def _typed(p: Param, value: Any) -> Any:
    if p.type is bool:
        ok = isinstance(value, bool)
    elif p.type is int:
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
        value = int(value) if ok else value
    elif p.type is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"param {p.name!r} must be a {p.type.__name__}, got {value!r}")
    if p.choices and value not in p.choices:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"param {p.name!r} must be one of {list(p.choices)}, got {value!r}")
    if p.min is not None and value < p.min:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"param {p.name!r} must be >= {p.min:g}, got {value!r}")
    if p.max is not None and value > p.max:
        raise Rejected(RejectReason.OUT_OF_RANGE, f"param {p.name!r} must be <= {p.max:g}, got {value!r}")
    return value


def read_params(product_id: str, params: Mapping[str, Any], specs: Sequence[Param]) -> dict[str, Any]:
    """Checked params with defaults filled in (a None default stays None for the product to fill)."""
    known = {p.name: p for p in specs}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise Rejected(
            RejectReason.OUT_OF_RANGE, f"{product_id} has no param(s) {unknown}; its params are {sorted(known)}"
        )
    return {name: (_typed(p, params[name]) if name in params else p.default) for name, p in known.items()}


def describe(specs: Sequence[Param]) -> str:
    """One line per param, for docstrings and the interface contract."""
    lines = []
    for p in specs:
        extra = f" one of {list(p.choices)}" if p.choices else ""
        if p.min is not None or p.max is not None:
            extra += f" in [{'' if p.min is None else f'{p.min:g}'}, {'' if p.max is None else f'{p.max:g}'}]"
        default = "(see text)" if p.default is None else repr(p.default)
        lines.append(f"{p.name} ({p.type.__name__}{extra}; default {default}): {p.doc}")
    return "\n".join(lines)
