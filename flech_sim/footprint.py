"""Where a pooled bid's flexibility sits on the grid: the bid fields that say so, shared vocabulary.

A bid in a system-wide market (a TSO's) pools households over feeders. The platform's TSO/DSO
coordination (:mod:`flech_sim.coordination`) keeps each feeder within its limit, so it must know
how many kW of the bid come from each feeder and what they draw back afterwards; only the seller
knows (it dispatches by that split). A product that takes pooled bids accepts these fields in
``Bid.attrs`` (it declares them with :func:`flech_sim.products.mfrr.grid_attrs`):

* ``kw@<feeder>``: kW per interval from the seller's households on that feeder (together at least
  the bid's quantity);
* ``rebound_kwh@<feeder>``: the energy those households draw back after a full down delivery.

Pure: no products, no platform state; agents, products and the coordinator all import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, repeat

import numpy as np

from .messages import AttrValue, Bid

FEEDER_KW = "kw@"
REBOUND_KWH = "rebound_kwh@"


_KEYS: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
"""Per feeder list: the (kw@, rebound_kwh@) key pair of each feeder (an aggregator bids over the same list)."""
_THREE = repeat(3)
"""``map(round, xs, _THREE)`` is ``[round(x, 3) for x in xs]`` with the loop in C (map stops at ``xs``'s end)."""


def _keys(feeders: Sequence[str]) -> tuple[tuple[str, str], ...]:
    key = tuple(feeders)
    keys = _KEYS.get(key)
    if keys is None:
        keys = _KEYS[key] = tuple((f"{FEEDER_KW}{f}", f"{REBOUND_KWH}{f}") for f in key)
    return keys


def declare_footprint(feeders: Sequence[str], kw: np.ndarray, rebound_kwh: np.ndarray) -> dict[str, AttrValue]:
    """The footprint fields of a pooled bid: ``kw`` (feeders, intervals), ``rebound_kwh`` (feeders,).
    Feeders the bid takes nothing from are left out.

    One call a pooled bid (about 20 feeders): which feeders count is one numpy test, the values are
    rounded by Python's ``round`` (correctly rounded, unlike ``np.round``: the JSON of every bid is
    fingerprinted) over ``tolist()`` floats, with the loops in C."""
    q = np.asarray(kw, dtype=float)
    r = np.asarray(rebound_kwh, dtype=float)
    if q.ndim != 2 or r.ndim != 1 or not len(feeders) == len(q) == len(r):
        raise ValueError(
            f"declare_footprint needs kw (feeders, intervals) and rebound_kwh (feeders,) for {len(feeders)} feeders; "
            f"got shapes {q.shape} and {r.shape}"
        )
    out: dict[str, AttrValue] = {}
    rows = np.flatnonzero((q > 0).any(axis=1)).tolist()
    if not rows:
        return out
    keys, kw_rows, rebound = _keys(feeders), q.tolist(), r.tolist()
    for i in rows:
        kw_key, rebound_key = keys[i]
        out[kw_key] = tuple(map(round, kw_rows[i], _THREE))
        out[rebound_key] = round(max(rebound[i], 0.0), 3)
    return out


def check_footprint(bid: Bid, tol_kw: float = 0.01) -> str | None:
    """Why a declared footprint does not cover the bid's quantities (None: it does, or none is declared).
    More than the quantity is allowed: a seller that moves more households than it sells says so."""
    attrs = bid.attrs
    per = list(compress(attrs.values(), map(str.startswith, attrs, _KW_PREFIX)))  # the kw@ values, in order
    if not per:
        return None
    n = len(bid.quantities_kw)
    rows = [v for v in per if isinstance(v, tuple)]
    slack = tol_kw * max(1.0, len(per))
    if rows and len(rows[0]) == n and set(map(len, rows)) == {n}:  # one value per interval each (the product checked)
        # the same additions in the same order as the loop below, one column of the feeders at a time
        sums = [sum(map(float, col)) for col in zip(*rows, strict=True)]
        for i, (q, s) in enumerate(zip(bid.quantities_kw, sums, strict=True)):
            if s < q - slack:
                return _short_of(s, q, i)
        return None
    for i, q in enumerate(bid.quantities_kw):
        s = sum(float(v[i]) for v in rows)
        if s < q - slack:
            return _short_of(s, q, i)
    return None


_KW_PREFIX = repeat(FEEDER_KW)


def _short_of(s: float, q: float, i: int) -> str:
    return f"the kW declared per feeder ({s:g}) fall short of the bid's quantity ({q:g}) in interval {i}"
