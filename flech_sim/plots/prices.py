"""Clearing prices (and option prices) and volumes per product."""

from __future__ import annotations

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..results import Run
from ..schema import TABLES
from .common import (
    RunLike,
    _date_axis,
    _days,
    _fit_price_axis,
    _no_rows,
    _run,
    optional_table,
)

MAX_BARS = 1500
"""Above this many intervals, volumes are drawn as step lines instead of bars."""


# -- clearing prices and volumes ---------------------------------------------------------------
def clearing(run: RunLike) -> Figure:
    """Per product: clearing prices (and caps) per interval, and need / accepted / unmet volume."""
    r = _run(run)
    ci = r.table("clearing_intervals")
    if ci.empty:
        return _no_rows("clearing_intervals", "clearing prices and volumes")
    markets = r.table("markets", columns=["market_id", "interval_minutes", "price_cap"])
    ci = ci.merge(markets, on="market_id", how="left")
    available = _option_prices(r)
    products = sorted(ci.product_id.unique())
    fig = Figure(figsize=(12, 3.0 * len(products) + 0.6), layout="constrained")
    axes = fig.subplots(len(products), 2, squeeze=False, sharex="row")  # prices and volumes over one time span
    for (ax_p, ax_v), product in zip(axes, products, strict=True):
        c = ci[ci.product_id == product].sort_values(["interval_start", "market_id"], kind="stable")
        caps = c.price_cap.dropna()
        prices: list[np.ndarray] = []
        av = available[available.product_id == product] if len(available) else available
        if len(av):  # options: activation and availability are two prices, not the score clearing_price holds
            act = av.groupby("interval_start").activation_price.mean().sort_index()
            ax_p.plot(
                act.index,
                act.to_numpy(),
                ls="none",
                marker="o",
                ms=4,
                color="C0",
                label="activation price, accepted (mean)",
            )
            ax_a = ax_p.twinx()
            avail = av.groupby("interval_start").availability_price.mean().sort_index()
            ax_a.plot(
                avail.index,
                avail.to_numpy(),
                ls="none",
                marker="s",
                ms=4,
                color="C4",
                label="availability price, accepted (mean)",
            )
            ax_a.set_ylabel("availability DKK/kW", color="C4")
            ax_a.legend(fontsize=8, loc="lower right")
            prices.append(act.to_numpy())
            ax_p.set_title(f"{product}: activation and availability prices", loc="left", fontsize=10)
        else:
            ax_p.plot(
                c.interval_start, c.clearing_price, ls="none", marker="o", ms=4, color="C0", label="clearing price"
            )
            prices.append(c.clearing_price.to_numpy(dtype=float))
            ax_p.set_title(f"{product}: clearing price", loc="left", fontsize=10)
        _fit_price_axis(ax_p, np.concatenate(prices), caps)
        ax_p.set_ylabel("DKK/kWh")
        ax_p.legend(fontsize=8, loc="upper left")
        _date_axis(ax_p)
        g = c.groupby("interval_start").agg(
            need_kw=("need_kw", "sum"),
            accepted_kw=("accepted_kw", "sum"),
            unmet_kw=("unmet_kw", "sum"),
            minutes=("interval_minutes", "min"),
        )
        x = mdates.date2num(g.index)
        if len(g) <= MAX_BARS:
            width = _days(pd.to_timedelta(g.minutes.fillna(60), unit="min")).to_numpy() * 0.9
            ax_v.bar(x, g.accepted_kw, width=width, align="edge", color="C2", label="accepted")
            ax_v.bar(
                x, g.unmet_kw, width=width, align="edge", bottom=g.accepted_kw, color="C3", alpha=0.6, label="unmet"
            )
        else:
            ax_v.fill_between(x, g.accepted_kw, step="post", color="C2", label="accepted")
            ax_v.fill_between(
                x, g.accepted_kw, g.accepted_kw + g.unmet_kw, step="post", color="C3", alpha=0.6, label="unmet"
            )
        ax_v.plot(
            x + (width / 2 if len(g) <= MAX_BARS else 0),
            g.need_kw,
            ls="none",
            marker="_",
            ms=12,
            color="k",
            label="need",
        )
        ax_v.xaxis_date()
        _date_axis(ax_v)
        top = float(np.nanmax([g.need_kw.max(), (g.accepted_kw + g.unmet_kw).max(), 0.0]))
        ax_v.set_ylim(0, top * 1.1 if top > 0 else 1.0)  # the need markers sit on the bars: leave room above
        ax_v.set_title(f"{product}: volume per interval (all markets)", loc="left", fontsize=10)
        ax_v.set_ylabel("kW")
        ax_v.legend(fontsize=8)
    return fig


def _option_prices(r: Run) -> pd.DataFrame:
    """Accepted option bids per interval: activation price (the award's price) and the bid's availability
    price, read from every product table that records an availability price per bid (CRP's ``crp_bids``,
    or a plug-in's of the same shape). Empty when no product sells options."""
    cols = ["product_id", "interval_start", "activation_price", "availability_price"]
    key = ["market_id", "bid_id"]
    parts = [
        df
        for t in TABLES.values()
        if t.name != "bids"
        and {*key, "availability_price"} <= set(t.names)
        and (df := optional_table(r, t.name, [*key, "availability_price"])) is not None
        and len(df)
    ]
    if not parts:
        return pd.DataFrame(columns=cols)
    aw = r.table("awards", columns=["bid_id", "market_id", "product_id", "interval_start", "accepted_kw", "price"])
    aw = aw[aw.accepted_kw > 0].merge(pd.concat(parts, ignore_index=True), on=key, how="inner")
    return aw.rename(columns={"price": "activation_price"})[cols]
