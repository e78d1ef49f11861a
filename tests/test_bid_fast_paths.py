"""The pooled bid's fast paths (issue 12) give what the long way they replace gives, to the last bit.

A pooled mFRR bid names ~20 feeders: its footprint is declared (:func:`declare_footprint`), checked
(:func:`check_footprint`, :func:`attrs_pass` before :func:`check_attrs`, the ~40 fields bounded by
``limits._params_ok``) once a bid. The references below are the implementations these replaced, kept
verbatim; the generated inputs include what breaks a naive shortcut: -0.0, NaN, infinity, values a
hair from a rounding tie, bools and ints among floats, ints too large for a float, ragged tuples.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flech_sim import limits
from flech_sim.footprint import FEEDER_KW, REBOUND_KWH, check_footprint, declare_footprint
from flech_sim.messages import PLATFORM, Bid, Rejected
from flech_sim.products.attrs import AttrSpec, attrs_pass, check_attrs
from flech_sim.products.mfrr import grid_attrs


# == the references: the code before the fast paths ==============================================
def declare_footprint_reference(feeders: list[str], kw: np.ndarray, rebound_kwh: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, q, r in zip(feeders, np.asarray(kw, dtype=float), np.asarray(rebound_kwh, dtype=float), strict=True):
        if np.any(q > 0):
            out[f"{FEEDER_KW}{f}"] = tuple(round(float(x), 3) for x in q)
            out[f"{REBOUND_KWH}{f}"] = round(max(float(r), 0.0), 3)
    return out


def check_footprint_reference(bid: Bid, tol_kw: float = 0.01) -> str | None:
    per = [v for k, v in bid.attrs.items() if k.startswith(FEEDER_KW)]
    if not per:
        return None
    for i, q in enumerate(bid.quantities_kw):
        s = sum(float(v[i]) for v in per if isinstance(v, tuple))
        if s < q - tol_kw * max(1.0, len(per)):
            return f"the kW declared per feeder ({s:g}) fall short of the bid's quantity ({q:g}) in interval {i}"
    return None


def exact(d: dict[str, Any]) -> bytes:
    """Keys in order and every float to the bit (-0.0 is not 0.0, NaN is NaN): what a fingerprint sees."""
    items = [(k, tuple(map(float.hex, v)) if isinstance(v, tuple) else float.hex(v)) for k, v in d.items()]
    return repr(items).encode()


# == declare_footprint ===========================================================================
tricky = st.one_of(
    st.floats(-1e4, 1e4),
    st.sampled_from([0.0, -0.0, 0.0005, 0.0015, 2.675, 1.0005, -0.0004, 1e-12, 123.4565, 5e-4 - 1e-18]),
    st.integers(-3, 10_000).map(lambda k: k / 1000 + 0.0005),  # a hair from a tie, either side
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300]),
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 24), st.integers(0, 5), st.data())
def test_declare_footprint_is_the_reference_to_the_bit(n_feeders: int, n: int, data: st.DataObject) -> None:
    feeders = [f"feeder-{i:02d}" for i in range(n_feeders)]
    kw = np.array(data.draw(st.lists(st.lists(tricky, min_size=n, max_size=n), min_size=n_feeders, max_size=n_feeders)))
    kw = kw.reshape(n_feeders, n)
    rebound = np.array(data.draw(st.lists(tricky, min_size=n_feeders, max_size=n_feeders)), dtype=float)
    got = declare_footprint(feeders, kw, rebound)
    want = declare_footprint_reference(feeders, kw, rebound)
    assert exact(got) == exact(want)
    assert msgspec.json.encode(got) == msgspec.json.encode(want)  # the bytes a bid's JSON carries


def test_declare_footprint_by_hand() -> None:
    got = declare_footprint(
        ["f1", "f2", "f3"], np.array([[600.12345, 0.0], [0.0, 0.0], [-1.0, 1.0005]]), np.array([90.0, 60.0, -0.0])
    )
    assert list(got.items()) == [
        ("kw@f1", (600.123, 0.0)),
        ("rebound_kwh@f1", 90.0),  # f2 takes nothing: left out
        ("kw@f3", (-1.0, 1.0)),  # 1.0005 is 1.000499999... in binary: rounds down, as round() does
        ("rebound_kwh@f3", -0.0),  # max(-0.0, 0.0) is -0.0, kept as the reference keeps it
    ]
    assert math.copysign(1.0, got["rebound_kwh@f3"]) == -1.0  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        declare_footprint(["f1", "f2"], np.zeros((3, 1)), np.zeros(3))  # one feeder name short


# == check_footprint =============================================================================
def _bid(quantities: tuple[float, ...], attrs: dict[str, Any]) -> Bid:
    return Bid(
        msg_id="agg-a-1",
        sender="agg-a",
        recipient=PLATFORM,
        market_id="m1",
        product_id="mFRR",
        sent_at=0,
        bid_id="b1",
        price=0.3,
        quantities_kw=quantities,
        attrs=attrs,
    )


def _outcome(f: Any, bid: Bid) -> tuple[str, Any]:
    try:
        return "returned", f(bid)
    except Exception as exc:  # noqa: BLE001 - the same exception type, where the reference raises
        return "raised", type(exc)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.integers(0, 6), st.data())
def test_check_footprint_is_the_reference(n: int, n_feeders: int, data: st.DataObject) -> None:
    values = st.one_of(st.floats(0, 2000), st.sampled_from([0.0, 333.333, 1e-3, math.nan, math.inf]))
    quantities = tuple(data.draw(st.lists(values, min_size=n, max_size=n)))
    attrs: dict[str, Any] = {}
    for i in range(n_feeders):
        length = data.draw(st.sampled_from([n, n, n, max(n - 1, 0), n + 1]))  # mostly well formed
        attrs[f"kw@f{i}"] = tuple(data.draw(st.lists(values, min_size=length, max_size=length)))
        if data.draw(st.booleans()):
            attrs[f"rebound_kwh@f{i}"] = data.draw(values)
    if data.draw(st.booleans()):
        attrs["kw@odd"] = 5.0  # a scalar under a kw@ key: counted in the tolerance, not summed
    bid = _bid(quantities, attrs)
    assert _outcome(check_footprint, bid) == _outcome(check_footprint_reference, bid)


# == attrs_pass before check_attrs ===============================================================
def _check_attrs_passes(specs: tuple[AttrSpec, ...], attrs: dict[str, Any], n: int, terms: dict[str, Any]) -> bool:
    try:
        check_attrs("P", specs, attrs, n_intervals=n, terms=terms)
    except Rejected:
        return False
    return True


SPECS = (
    *grid_attrs(["f1", "f2", "f3"]),
    AttrSpec("availability_price", float, "-", max_term="cap"),
    AttrSpec("count", int, "-", min=1, max=5),
    AttrSpec("firm", bool, "-"),
    AttrSpec("label", str, "-"),
    AttrSpec("profile", float, "-", per_interval=True, min=0.0, max=1.0),  # bounded on both sides
)
anything = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1e-300, 3.0, 1e9, 10**400, True, False, None, "x", 2, 0, -1]),
    st.integers(-3, 7),
    st.lists(st.one_of(st.floats(-1, 2000), st.sampled_from([math.nan, True, 3, -0.0, "x"])), max_size=3).map(tuple),
)


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(st.sampled_from([s.name for s in SPECS] + ["kw@f9", "other"]), anything, max_size=12),
    st.integers(1, 2),
    st.sampled_from([{}, {"cap": 2.5}, {"cap": 1e-3}]),
)
def test_attrs_pass_never_lets_through_what_check_attrs_refuses(attrs: dict[str, Any], n: int, terms: dict) -> None:  # type: ignore[type-arg]
    if attrs_pass(SPECS, attrs, n_intervals=n, terms=terms):
        assert _check_attrs_passes(SPECS, attrs, n, terms)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.data())
def test_attrs_pass_takes_every_ordinary_pooled_bid(n: int, data: st.DataObject) -> None:
    feeders = [f"f{i}" for i in range(data.draw(st.integers(0, 8)))]
    specs = grid_attrs(feeders)
    attrs: dict[str, Any] = {}
    for f in data.draw(st.lists(st.sampled_from(feeders), unique=True)) if feeders else []:
        attrs[f"kw@{f}"] = tuple(data.draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n)))
        attrs[f"rebound_kwh@{f}"] = data.draw(st.floats(0, 1e6))
    assert _check_attrs_passes(specs, attrs, n, {})
    assert attrs_pass(specs, attrs, n_intervals=n)


def test_attrs_pass_on_hand_picked_fields() -> None:
    specs = SPECS
    ok = {"kw@f1": (10.0,), "rebound_kwh@f1": 2.0, "availability_price": 1.0, "count": 3, "firm": True, "label": "a"}
    assert attrs_pass(specs, ok, n_intervals=1, terms={"cap": 2.0})
    for bad in (
        {"kw@f1": (-1.0,)},  # below min 0
        {"kw@f1": (math.nan,)},
        {"kw@f1": (10.0,), "kw@f2": (math.nan,), "kw@f3": (5.0,)},  # a NaN min and max can skip
        {"kw@f1": (1.0, 2.0)},  # two values, one interval
        {"kw@f1": (True,)},
        {"rebound_kwh@f1": -0.5},
        {"rebound_kwh@f1": math.inf},
        {"availability_price": 2.5},  # above the market's cap term
        {"count": 9},
        {"count": 2.0},  # an int field
        {"firm": 1},
        {"label": 3},
        {"kw@f9": (1.0,)},  # not a field of the product
    ):
        assert not attrs_pass(specs, bad, n_intervals=1, terms={"cap": 2.0}), bad
        assert not _check_attrs_passes(specs, bad, 1, {"cap": 2.0}), bad
    # bounded on both sides, min and max skip a NaN after a number: the sum finds it
    assert attrs_pass(specs, {"profile": (0.5, 1.0)}, n_intervals=2)
    assert not attrs_pass(specs, {"profile": (0.5, math.nan)}, n_intervals=2)
    assert not _check_attrs_passes(specs, {"profile": (0.5, math.nan)}, 2, {})
    required = (AttrSpec("availability_price", float, "-", required=True),)
    assert not attrs_pass(required, {}, n_intervals=1)  # check_attrs says what is missing
    assert attrs_pass((), {}, n_intervals=1)


# == the bounds of the ~40 fields (flech_sim.limits) ===============================================
def _params_check_passes(params: dict[str, Any]) -> bool:
    msg = _bid((1.0,), params)
    try:
        for check in limits._Plan(Bid).checks:
            check(msg, 0)
    except Rejected:
        return False
    except TypeError:  # a value the bounds cannot compare (the type check refuses it before)
        return False
    return True


param_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e9, 1e9 + 1, -1e9, 10**400, True, "x" * 2001, "ok", -0.0]),
    st.integers(-(10**10), 10**10),
    st.lists(st.one_of(st.floats(allow_nan=True), st.sampled_from([True, 1e10, 7, "x"])), max_size=3).map(tuple),
)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(["kw@f1", "rebound_kwh@f1"]), st.text(max_size=3)), param_values))
def test_the_fast_field_bounds_never_let_through_what_the_full_check_refuses(params: dict[str, Any]) -> None:
    if limits._params_ok(params):
        assert _params_check_passes(params)


def test_the_fast_field_bounds_take_a_pooled_bid_and_refuse_the_rest() -> None:
    pooled = declare_footprint([f"f{i}" for i in range(20)], np.full((20, 2), 55.5), np.full(20, 3.0))
    assert limits._params_ok(pooled) and _params_check_passes(pooled)
    assert limits._params_ok({}) and limits._params_ok({"a": True, "b": "text", "c": 2})
    for bad in (
        {"kw@f1": (math.nan,)},
        {"kw@f1": (1.0, math.nan)},  # min and max both skip a NaN after a number: only the sum sees it
        {"a": 1.0, "b": math.nan},
        {"kw@f1": (1.0, 2e9)},
        {"kw@f1": (True,)},
        {"r": math.inf},
        {"r": -2e9},
        {"k" * 201: 1.0},
        {"t": "x" * 2001},
        {f"k{i}": 1.0 for i in range(65)},
        {"kw@f1": tuple([1.0] * 1441)},
    ):
        assert not limits._params_ok(bad), bad
        assert not _params_check_passes(bad), bad
