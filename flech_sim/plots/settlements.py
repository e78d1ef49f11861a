"""Settlement figures: ordered versus delivered flexibility, aggregator revenue."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .common import (
    RunLike,
    _date_axis,
    _no_rows,
    _run,
)


# -- ordered versus delivered -------------------------------------------------------------------
def ordered_vs_delivered(run: RunLike) -> Figure:
    """Per product: awarded (ordered) and verified delivered energy per interval and per seller."""
    r = _run(run)
    s = r.table("settlements", filter={"role": "seller"})
    if s.empty:
        return _no_rows("settlements", "ordered versus delivered flexibility")
    products = sorted(s.product_id.unique())
    fig = Figure(figsize=(12, 3.0 * len(products) + 0.6), layout="constrained")
    axes = fig.subplots(len(products), 2, squeeze=False, width_ratios=[2.2, 1])
    for (ax_t, ax_s), product in zip(axes, products, strict=True):
        p = s[s.product_id == product]
        g = p.groupby("interval_start")[["ordered_kwh", "delivered_kwh"]].sum().sort_index()
        ax_t.plot(g.index, g.ordered_kwh, ls="none", marker="s", ms=6, color="C0", label="ordered")
        ax_t.plot(g.index, g.delivered_kwh, ls="none", marker="o", ms=4, color="C1", label="delivered")
        ax_t.vlines(g.index, g.delivered_kwh, g.ordered_kwh, color="C3", lw=1, label="shortfall")
        ax_t.set_title(f"{product}: ordered vs delivered per interval (all sellers)")
        ax_t.set_ylabel("kWh")
        ax_t.legend(fontsize=8)
        _date_axis(ax_t)
        by = p.groupby("party")[["ordered_kwh", "delivered_kwh"]].sum().sort_index()
        x = np.arange(len(by))
        ax_s.bar(x - 0.2, by.ordered_kwh, width=0.4, color="C0", label="ordered")
        ax_s.bar(x + 0.2, by.delivered_kwh, width=0.4, color="C1", label="delivered")
        ax_s.set_xticks(x, by.index.tolist(), rotation=20, fontsize=8)
        ax_s.set_title(f"{product}: per seller")
        ax_s.set_ylabel("kWh")
        ax_s.legend(fontsize=8)
    return fig


# -- aggregator revenue -----------------------------------------------------------------------
def aggregator_revenue(run: RunLike) -> Figure:
    """Per seller: payments, penalties and net over all products, and the net over time."""
    r = _run(run)
    s = r.table("settlements", filter={"role": "seller"})
    if s.empty:
        return _no_rows("settlements", "aggregator revenue and penalties")
    fig = Figure(figsize=(12, 4), layout="constrained")
    ax_b, ax_c = fig.subplots(1, 2, width_ratios=[1, 1.6])
    by = s.groupby("party")[["payment_dkk", "penalty_dkk", "net_dkk"]].sum().sort_index()
    x = np.arange(len(by))
    ax_b.bar(x - 0.27, by.payment_dkk, width=0.27, color="C2", label="payments")
    ax_b.bar(x, -by.penalty_dkk, width=0.27, color="C3", label="penalties")
    ax_b.bar(x + 0.27, by.net_dkk, width=0.27, color="C0", label="net")
    ax_b.axhline(0, color="k", lw=0.8)
    ax_b.set_xticks(x, by.index.tolist(), rotation=20, fontsize=8)
    ax_b.set_ylabel("DKK")
    products = ", ".join(sorted(s.product_id.unique()))
    ax_b.set_title(f"Seller settlement totals ({products})")
    ax_b.legend(fontsize=8)
    for party, p in s.groupby("party", sort=True):
        g = p.groupby("interval_start").net_dkk.sum().sort_index().cumsum()
        ax_c.plot(g.index, g.to_numpy(), drawstyle="steps-post", marker=".", label=str(party))
    ax_c.set_title("Cumulative net by delivery interval")
    ax_c.set_ylabel("DKK")
    ax_c.legend(fontsize=8)
    _date_axis(ax_c)
    return fig
