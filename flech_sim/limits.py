"""Plausibility bounds of every number and size a participant may send to the platform.

The endpoint applies :func:`check_message` to every incoming message after its types are
checked, so nothing implausible reaches a product, a forecast or the persistor: a window of
100,000 intervals, a delivery 10**12 minutes ahead, a need of 1e308 kW or a time of 2**63
minutes (which would overflow a timestamp column) is refused with a reason code that says
which bound (``too_large`` for sizes, ``invalid_times`` for times, ``out_of_range`` for
numbers, ``malformed`` for NaN / infinity, which JSON cannot carry).

The bounds are generous: they say what no real flexibility market sends, not what a product
accepts; the products' own rules (a price within the buyer's cap, quantities >= 0, ...) are
checked after them. The scenario schema imports the bounds that coincide (intervals, lead
time, kW, prices, ID length), so a scenario cannot ask for what the platform would refuse.

Units as everywhere in flech_sim: times in whole simulated minutes since the scenario start,
power in kW, prices in DKK/kWh (availability prices in DKK/kW per window), money in DKK.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from enum import Enum
from types import NoneType, UnionType
from typing import Any, Union

import msgspec

from .messages import Message, MeterData, Rejected, RejectReason

# -- sizes ------------------------------------------------------------------------------------------
MAX_MESSAGE_BYTES = 1_000_000
"""Raw JSON of one incoming message (UTF-8 bytes; characters for text given as ``str``).
A week of 1-minute meter readings is about 150 kB."""
MAX_ID_CHARS = 200
"""Any ID or name: msg_id, sender, recipient, market_id, product_id, bid_id, activation_id,
metering_point, location, seller, ... (composite IDs such as ``<seller>-<market>-<n>`` included)."""
MAX_TEXT_CHARS = 2_000
"""Free text: a cancellation's reason, a rejection's detail, a text param value."""
MAX_INTERVALS = 1_440
"""Intervals of one market window (need_kw, quantities_kw, baseline_kw, an activation's
quantities): a day of 1-minute or a fortnight of 15-minute intervals."""
MAX_METER_READINGS = 10_080
"""Readings in one meter-data message: a week at 1-minute resolution."""
MAX_LIST_ITEMS = MAX_INTERVALS
"""Any other list in a message."""
MAX_PARAMS = 64
"""Entries of a request's ``params`` (product terms)."""

# -- times (simulated minutes) -------------------------------------------------------------------------
MAX_MINUTE = 20 * 366 * 1440
"""Latest minute any message may name (about 20 years after the scenario start): far beyond
any horizon, and far from the int64 seconds of a timestamp column. No time is negative."""
MAX_LEAD_MINUTES = 366 * 1440
"""How far ahead of now a gate closure, a delivery's end, an activation's end or meter data's
end may lie (a year): aggregators forecast up to it, so it bounds their work and memory."""
MAX_INTERVAL_MINUTES = 1440
"""Length of one interval (a day); at least 1 minute."""
MAX_WINDOW_MINUTES = 31 * 1440
"""Length of one delivery window (intervals x interval length): a month."""

# -- quantities ------------------------------------------------------------------------------------------
MAX_KW = 1e7
"""|kW| of any power figure: need, offer, baseline, meter reading (10 GW: more than Denmark's peak load)."""
MAX_PRICE_DKK_PER_KWH = 1e3
"""|DKK/kWh| of an energy price, cap or penalty (the EU market price limits are below 100 DKK/kWh)."""
MAX_AVAILABILITY_PRICE = 1e3
"""|DKK/kW| per delivery window of an option's availability price."""
MAX_DKK = 1e12
"""|DKK| of any money figure."""
MAX_KWH = 1e10
"""|kWh| of any energy figure (MAX_KW over a MAX_WINDOW_MINUTES window is 7.4e9)."""
MAX_COUNT = 10**9
"""Any count (n_bids, ...)."""
MAX_PARAM_NUMBER = 1e9
"""|x| of a number in a request's params (product terms)."""
MAX_NUMBER = 1e15
"""|x| of a float field no bound above names (plug-in message types)."""
MAX_INT = 10**9
"""|x| of an int field no bound above names (plug-in message types)."""


@dataclasses.dataclass(frozen=True)
class Bound:
    lo: float
    hi: float
    unit: str
    reason: RejectReason = RejectReason.OUT_OF_RANGE


_TIME = Bound(0, MAX_MINUTE, "min", RejectReason.INVALID_TIMES)
_KW = Bound(-MAX_KW, MAX_KW, "kW")
_PRICE = Bound(-MAX_PRICE_DKK_PER_KWH, MAX_PRICE_DKK_PER_KWH, "DKK/kWh")
_DKK = Bound(-MAX_DKK, MAX_DKK, "DKK")
_KWH = Bound(-MAX_KWH, MAX_KWH, "kWh")
FIELD_BOUNDS: dict[str, Bound] = {
    **dict.fromkeys(("sent_at", "gate_close", "delivery_start", "start", "interval_start"), _TIME),
    "interval_minutes": Bound(1, MAX_INTERVAL_MINUTES, "min"),
    **dict.fromkeys(
        ("need_kw", "quantities_kw", "baseline_kw", "accepted_kw", "unmet_kw", "consumption_kw", "cap_kw"), _KW
    ),
    **dict.fromkeys(("price", "price_cap", "penalty_price", "prices", "clearing_price"), _PRICE),
    "availability_price": Bound(-MAX_AVAILABILITY_PRICE, MAX_AVAILABILITY_PRICE, "DKK/kW"),
    **dict.fromkeys(("objective_dkk", "cost_dkk", "payment_dkk", "availability_dkk", "net_dkk", "penalty_dkk"), _DKK),
    **dict.fromkeys(("ordered_kwh", "delivered_kwh"), _KWH),
    **dict.fromkeys(("n_bids", "n_accepted"), Bound(0, MAX_COUNT, "-")),
}
"""Bounds of the number fields of the message types, by field name (also the elements of lists)."""
TEXT_FIELDS = frozenset({"reason", "detail"})
"""String fields holding free text (MAX_TEXT_CHARS); every other string field is an ID (MAX_ID_CHARS)."""
LIST_ITEMS: dict[str, int] = {"consumption_kw": MAX_METER_READINGS}
"""List fields with a length bound other than MAX_INTERVALS."""
_GENERIC_FLOAT = Bound(-MAX_NUMBER, MAX_NUMBER, "-")
_GENERIC_INT = Bound(-MAX_INT, MAX_INT, "-")


def clamp_minute(t: int) -> int:
    """A time as it may be written to a timestamp column: clamped to [0, MAX_MINUTE]."""
    return t if 0 <= t <= MAX_MINUTE else (0 if t < 0 else MAX_MINUTE)


def clip_text(s: str, n: int = MAX_ID_CHARS) -> str:
    """A string fit for a table column: at most ``n`` characters (and a marker), valid UTF-8."""
    if len(s) > n:
        s = f"{s[:n]}...[{len(s) - n} more characters]"
    return s if s.isascii() else s.encode("utf-8", "backslashreplace").decode("utf-8")


# -- the check ---------------------------------------------------------------------------------------------
def check_message(msg: Message, now: int) -> None:
    """Raise :class:`Rejected` if any field of ``msg`` lies outside its bound (``msg`` is type-checked).

    Per message type, one generated expression tests every field at once (about 1 us for a bid);
    only when it fails, or for a type with a window, gaps or params, are the field-by-field
    checks run, which say which field broke which bound.
    """
    plan = _PLANS.get(type(msg))
    if plan is None:
        plan = _PLANS[type(msg)] = _Plan(type(msg))
    if plan.fast(msg):
        return
    for check in plan.checks:
        check(msg, now)


def _fail(reason: RejectReason, text: str) -> Rejected:
    return Rejected(reason, f"{text} (bounds: flech_sim.limits)")


def _ids(names: tuple[str, ...], limit: int) -> Callable[[Message, int], None]:
    def check(msg: Message, now: int) -> None:
        for name in names:
            n = len(getattr(msg, name))
            if n > limit:
                raise _fail(RejectReason.TOO_LARGE, f"{msg.kind}.{name} has {n} characters; at most {limit}")

    return check


def _scalars(names: tuple[str, ...], bounds: tuple[Bound, ...]) -> Callable[[Message, int], None]:
    pairs = tuple(zip(names, bounds, strict=True))

    def check(msg: Message, now: int) -> None:
        for name, b in pairs:
            x = getattr(msg, name)
            if x is not None and not b.lo <= x <= b.hi:
                _out_of_bound(msg, name, x, b)

    return check


def _out_of_bound(msg: Message, name: str, x: Any, b: Bound) -> None:
    if isinstance(x, float) and not math.isfinite(x):
        raise _fail(RejectReason.MALFORMED, f"{msg.kind}.{name}: NaN or infinity cannot be carried as JSON")
    raise _fail(b.reason, f"{msg.kind}.{name} = {_short(x)} {b.unit} is outside [{b.lo:g}, {b.hi:g}]")


def _lists(
    names: tuple[str, ...], bounds: tuple[Bound, ...], limits: tuple[int, ...], nullable: tuple[bool, ...]
) -> Callable[[Message, int], None]:
    spec = tuple(zip(names, bounds, limits, nullable, strict=True))

    def check(msg: Message, now: int) -> None:
        for name, b, limit, gaps in spec:
            v = getattr(msg, name)
            if len(v) > limit:
                raise _fail(RejectReason.TOO_LARGE, f"{msg.kind}.{name} has {len(v)} values; at most {limit}")
            if not v:
                continue
            if gaps:
                v = [x for x in v if x is not None]
                if not v:
                    continue
            total = sum(v)  # NaN or infinity anywhere makes the sum non-finite (so does overflow, far above MAX_*)
            if total - total != 0 or min(v) < b.lo or max(v) > b.hi:
                for i, x in enumerate(v):
                    if not b.lo <= x <= b.hi:
                        _out_of_bound(msg, f"{name}[{i}]", x, b)

    return check


def _params(name: str) -> Callable[[Message, int], None]:
    def check(msg: Message, now: int) -> None:
        params = getattr(msg, name)
        if not params:
            return
        if len(params) > MAX_PARAMS:
            raise _fail(RejectReason.TOO_LARGE, f"{msg.kind}.{name} has {len(params)} entries; at most {MAX_PARAMS}")
        for k, v in params.items():
            if len(k) > MAX_ID_CHARS:
                raise _fail(
                    RejectReason.TOO_LARGE, f"{msg.kind}.{name}: a key has {len(k)} characters; at most {MAX_ID_CHARS}"
                )
            if isinstance(v, str):
                if len(v) > MAX_TEXT_CHARS:
                    raise _fail(
                        RejectReason.TOO_LARGE,
                        f"{msg.kind}.{name}[{_short(k)}] has {len(v)} characters; at most {MAX_TEXT_CHARS}",
                    )
            elif isinstance(v, tuple):  # a per-interval field (AttrValue): every number bounded
                if len(v) > MAX_INTERVALS:
                    raise _fail(RejectReason.TOO_LARGE, f"{msg.kind}.{name}[{_short(k)}] has {len(v)} values")
                bound = Bound(-MAX_PARAM_NUMBER, MAX_PARAM_NUMBER, "-")
                for i, x in enumerate(v):
                    number = isinstance(x, int | float) and not isinstance(x, bool)
                    if not number or not -MAX_PARAM_NUMBER <= x <= MAX_PARAM_NUMBER:
                        _out_of_bound(msg, f"{name}[{_short(k)}][{i}]", x, bound)
            elif not isinstance(v, bool) and not -MAX_PARAM_NUMBER <= v <= MAX_PARAM_NUMBER:
                _out_of_bound(msg, f"{name}[{_short(k)}]", v, Bound(-MAX_PARAM_NUMBER, MAX_PARAM_NUMBER, "-"))

    return check


_PARAM_NUMBER = frozenset({float, int})


def _params_ok(params: dict[str, Any]) -> bool:
    """True only if :func:`_params`' check passes (the fast path: a pooled mFRR bid carries ~40 fields):
    exact types, with the loops in C; min and max bound the numbers, and their sum is finite only if
    none is NaN or infinite. False says nothing: the field-by-field check then runs."""
    if not params:
        return True
    try:
        if len(params) > MAX_PARAMS or max(map(len, params)) > MAX_ID_CHARS:
            return False
        values = params.values()
        types = set(map(type, values))
        if not types <= {float, int, bool, str, tuple}:
            return False
        if str in types and max(len(v) for v in values if type(v) is str) > MAX_TEXT_CHARS:
            return False
        hi = MAX_PARAM_NUMBER
        if tuple in types:
            rows = [v for v in values if type(v) is tuple]
            if max(map(len, rows)) > MAX_INTERVALS:
                return False
            flat = [x for v in rows for x in v]
            if flat and not (
                set(map(type, flat)) <= _PARAM_NUMBER
                and -hi <= min(flat)
                and max(flat) <= hi
                and math.isfinite(sum(flat))
            ):
                return False
        if float in types or int in types:
            numbers = [v for v in values if type(v) is float or type(v) is int]
            if not (-hi <= min(numbers) and max(numbers) <= hi and math.isfinite(sum(numbers))):
                return False
        return True
    except (TypeError, OverflowError):  # keys that are not text, ...: the field-by-field check says
        return False


def _window(msg: Message, now: int) -> None:
    """A market window, an activation or meter data: its length and how far ahead it ends."""
    d = {name: getattr(msg, name) for name in msg.__struct_fields__}
    start = d["delivery_start"] if "delivery_start" in d else d["start"]
    values = d["consumption_kw"] if isinstance(msg, MeterData) else d.get("need_kw", d.get("quantities_kw", ()))
    span = d["interval_minutes"] * len(values)
    if span > MAX_WINDOW_MINUTES and not isinstance(msg, MeterData):
        raise _fail(RejectReason.TOO_LARGE, f"{msg.kind}: a window of {span} minutes; at most {MAX_WINDOW_MINUTES}")
    end = start + span
    ends = [("end", end)] + ([("gate_close", d["gate_close"])] if "gate_close" in d else [])
    for what, t in ends:
        if t > MAX_MINUTE:
            raise _fail(RejectReason.INVALID_TIMES, f"{msg.kind}: {what} at minute {t} is after minute {MAX_MINUTE}")
        if t - now > MAX_LEAD_MINUTES:
            raise _fail(
                RejectReason.INVALID_TIMES,
                f"{msg.kind}: {what} at minute {t} is {t - now} minutes ahead; at most {MAX_LEAD_MINUTES}",
            )


class _Plan:
    """The checks of one message type, from its fields' types and names (made once per type)."""

    def __init__(self, cls: type[Message]) -> None:
        fields = msgspec.structs.fields(cls)
        ids: list[str] = []
        texts: list[str] = []
        scalars: list[tuple[str, Bound]] = []
        lists: list[tuple[str, Bound, int, bool]] = []
        params: list[str] = []
        for f in fields:
            hint, _ = _strip_none(f.type)
            origin = typing.get_origin(hint)
            if hint is str:
                (texts if f.name in TEXT_FIELDS else ids).append(f.name)
            elif hint is bool or (isinstance(hint, type) and issubclass(hint, Enum)):
                continue  # fully checked by the type check
            elif hint in (int, float):
                scalars.append((f.name, FIELD_BOUNDS.get(f.name, _GENERIC_INT if hint is int else _GENERIC_FLOAT)))
            elif origin in (tuple, list):
                item, gaps = _strip_none(typing.get_args(hint)[0])
                if item in (int, float, bool):
                    default = _GENERIC_FLOAT if item is float else _GENERIC_INT
                    lists.append(
                        (f.name, FIELD_BOUNDS.get(f.name, default), LIST_ITEMS.get(f.name, MAX_LIST_ITEMS), gaps)
                    )
            elif origin is dict:
                params.append(f.name)
            # any other type (a plug-in's own): checked by its type only
        self.checks: list[Callable[[Message, int], None]] = []
        if ids:
            self.checks.append(_ids(tuple(ids), MAX_ID_CHARS))
        if texts:
            self.checks.append(_ids(tuple(texts), MAX_TEXT_CHARS))
        if scalars:
            self.checks.append(_scalars(tuple(n for n, _ in scalars), tuple(b for _, b in scalars)))
        if lists:
            self.checks.append(_lists(*(tuple(col) for col in zip(*lists, strict=True))))
        self.checks.extend(_params(p) for p in params)
        names = {f.name for f in fields}
        windowed = bool(
            "interval_minutes" in names
            and names & {"delivery_start", "start"}
            and names & {"need_kw", "quantities_kw", "consumption_kw"}
        )
        if windowed:
            self.checks.append(_window)
        # The fast path: one expression that is true only if every check above would pass.
        terms = [f"len(m.{n}) <= {MAX_ID_CHARS}" for n in ids]
        terms += [f"len(m.{n}) <= {MAX_TEXT_CHARS}" for n in texts]
        for n, b in scalars:
            terms.append(f"(m.{n} is None or {b.lo!r} <= m.{n} <= {b.hi!r})")
        for n, b, limit, gaps in lists:
            if gaps:
                terms.append(f"None not in m.{n}")
            terms.append(
                f"len(m.{n}) <= {limit} and (not m.{n} or ({b.lo!r} <= min(m.{n}) and "
                f"max(m.{n}) <= {b.hi!r} and _isfinite(sum(m.{n}))))"  # bounded above: a C call, no overflow
            )
        terms += [f"_params_ok(m.{p})" for p in params]
        if windowed:
            terms.append("False")
        source = f"lambda m: {' and '.join(terms) or 'True'}"
        self.fast: Callable[[Message], bool] = eval(
            source,
            {"_isfinite": math.isfinite, "_params_ok": _params_ok, "min": min, "max": max, "sum": sum, "len": len},
        )


def _strip_none(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (hint, False)."""
    if typing.get_origin(hint) in (Union, UnionType):
        args = [a for a in typing.get_args(hint) if a is not NoneType]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _short(x: Any) -> str:
    try:
        text = repr(x)
    except ValueError:  # an int of more than 4,300 digits
        return "<a very large number>"
    return text if len(text) <= 40 else text[:37] + "..."


_PLANS: dict[type[Message], _Plan] = {}
