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

import numpy as np

from .messages import AttrValue, Bid

FEEDER_KW = "kw@"
REBOUND_KWH = "rebound_kwh@"


def declare_footprint(feeders: Sequence[str], kw: np.ndarray, rebound_kwh: np.ndarray) -> dict[str, AttrValue]:
    """The footprint fields of a pooled bid: ``kw`` (feeders, intervals), ``rebound_kwh`` (feeders,).
    Feeders the bid takes nothing from are left out."""
    out: dict[str, AttrValue] = {}
    for f, q, r in zip(feeders, np.asarray(kw, dtype=float), np.asarray(rebound_kwh, dtype=float), strict=True):
        if np.any(q > 0):
            out[f"{FEEDER_KW}{f}"] = tuple(round(float(x), 3) for x in q)
            out[f"{REBOUND_KWH}{f}"] = round(max(float(r), 0.0), 3)
    return out


def check_footprint(bid: Bid, tol_kw: float = 0.01) -> str | None:
    """Why a declared footprint does not cover the bid's quantities (None: it does, or none is declared).
    More than the quantity is allowed: a seller that moves more households than it sells says so."""
    per = [v for k, v in bid.attrs.items() if k.startswith(FEEDER_KW)]
    if not per:
        return None
    for i, q in enumerate(bid.quantities_kw):
        s = sum(float(v[i]) for v in per if isinstance(v, tuple))
        if s < q - tol_kw * max(1.0, len(per)):
            return f"the kW declared per feeder ({s:g}) fall short of the bid's quantity ({q:g}) in interval {i}"
    return None
