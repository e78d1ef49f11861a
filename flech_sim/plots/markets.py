"""The market timeline: one row per market, or markets per product and day."""

from __future__ import annotations

from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .common import (
    RunLike,
    _date_axis,
    _days,
    _no_rows,
    _run,
    run_end,
)

MAX_TIMELINE_MARKETS = 60
"""Above this many markets the timeline counts markets per product and day instead of drawing rows."""


# -- market timeline --------------------------------------------------------------------------
def market_timeline(
    run: RunLike, max_markets: int = MAX_TIMELINE_MARKETS, window: tuple[Any, Any] | None = None
) -> Figure:
    """Markets over time: one row per market when few enough, else the count per product and day.

    ``window`` (start, end) zooms to the markets whose life (request to delivery end) overlaps it.
    Above ``max_markets`` a row per market is unreadable, so the figure shows per product and
    delivery day how many markets there were, stacked by final state (nothing left out).
    """
    r = _run(run)
    m = r.table(
        "markets",
        columns=[
            "market_id",
            "product_id",
            "buyer",
            "location",
            "state",
            "requested_at",
            "gate_close",
            "delivery_start",
            "delivery_end",
        ],
    )
    if window is not None:
        lo, hi = pd.Timestamp(window[0]), pd.Timestamp(window[1])
        m = m[(m.delivery_end > lo) & (m.requested_at < hi)]
    if m.empty:
        return _no_rows("markets", "market timeline")
    m = m.sort_values(["product_id", "requested_at", "market_id"], kind="stable").reset_index(drop=True)
    if len(m) > max_markets:
        return _markets_per_day(m, window)
    y = np.arange(len(m))[::-1].astype(float)
    fig = Figure(figsize=(11, 1.6 + 0.32 * len(m)), layout="constrained")
    ax = fig.subplots()
    start = mdates.date2num(m.requested_at)
    ax.barh(
        y,
        _days(m.gate_close - m.requested_at),
        left=start,
        height=0.6,
        color="C0",
        label="bidding (request → gate closure)",
    )
    ax.barh(
        y,
        _days(m.delivery_start - m.gate_close),
        left=mdates.date2num(m.gate_close),
        height=0.15,
        color="0.6",
        label="cleared, before delivery",
    )
    ax.barh(
        y,
        _days(m.delivery_end - m.delivery_start),
        left=mdates.date2num(m.delivery_start),
        height=0.6,
        color="C2",
        label="delivery window",
    )
    ax.plot(mdates.date2num(m.gate_close), y, ls="none", marker="|", ms=12, color="k", label="gate closure")
    ax.set_yticks(
        y, [f"{p} · {mid} ({s})" for p, mid, s in zip(m.product_id, m.market_id, m.state, strict=True)], fontsize=8
    )
    for boundary in np.flatnonzero(m.product_id.to_numpy()[1:] != m.product_id.to_numpy()[:-1]):
        ax.axhline(y[boundary] - 0.5, color="0.3", lw=0.8)
    end = run_end(r)
    if end is not None:
        ax.axvline(end, color="k", ls=":", lw=1, label="end of run")
    if window is not None:
        ax.set_xlim(pd.Timestamp(window[0]), pd.Timestamp(window[1]))
    ax.xaxis_date()
    _date_axis(ax)
    zoom = f", {pd.Timestamp(window[0]):%Y-%m-%d %H:%M} to {pd.Timestamp(window[1]):%Y-%m-%d %H:%M}" if window else ""
    fig.suptitle(f"Markets per product ({len(m)}{zoom})")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=5, fontsize=8)
    return fig


STATE_COLORS = {
    "settled": "C2",
    "delivered": "C0",
    "cleared": "C9",
    "gate_closed": "C7",
    "open": "C8",
    "cancelled": "0.6",
    "failed": "C3",
}


def _markets_per_day(m: pd.DataFrame, window: tuple[Any, Any] | None) -> Figure:
    """Markets per product and delivery day, stacked by final state: scales to any number of markets."""
    m = m.assign(day=m.delivery_start.dt.floor("D"))
    products = sorted(m.product_id.unique())
    fig = Figure(figsize=(11, 1.0 + 2.4 * len(products)), layout="constrained")
    axes = fig.subplots(len(products), 1, sharex=True, squeeze=False)[:, 0]
    states = [s for s in STATE_COLORS if s in set(m.state)] + sorted(set(m.state) - set(STATE_COLORS))
    for ax, product in zip(axes, products, strict=True):
        counts = m[m.product_id == product].groupby(["day", "state"]).size().unstack("state", fill_value=0)
        bottom = np.zeros(len(counts))
        x = mdates.date2num(counts.index.to_pydatetime())
        for st in states:
            if st not in counts:
                continue
            ax.bar(
                x,
                counts[st].to_numpy(),
                width=0.8,
                bottom=bottom,
                align="edge",
                color=STATE_COLORS.get(st, "C4"),
                label=st,
            )
            bottom += counts[st].to_numpy()
        ax.set_title(f"{product}: {int(bottom.sum())} markets by delivery day", loc="left", fontsize=10)
        ax.set_ylabel("markets")
        ax.legend(fontsize=8, title="final state", title_fontsize=8, loc="upper right")
        ax.xaxis_date()
        _date_axis(ax)
    zoom = " (zoomed)" if window else ""
    fig.suptitle(f"{len(m)} markets per product and delivery day{zoom}")
    return fig
