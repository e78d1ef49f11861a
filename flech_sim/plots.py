"""Figures of one run, for notebooks, the ``flech-sim plot`` command and the report.

Every function takes a run (a :class:`~flech_sim.results.Run` or its
directory) and returns a :class:`matplotlib.figure.Figure` built without
pyplot, so nothing accumulates in global state however many are made, and
no backend is switched (saving a PNG renders with Agg; a notebook keeps its own).
Products, feeders and sellers are read from the tables, never listed here.
A table with no rows gives a figure that says so instead of an error: a run
without markets, or from a version without the table, is still plottable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .results import Run, open_run
from . import products as _products  # noqa: F401  (registers the built-in products' own tables)
from .schema import TABLES

TEMPERATURE_TABLE = "household_temperatures"
MAX_TIMELINE_MARKETS = 60
"""Above this many markets the timeline counts markets per product and day instead of drawing rows."""
MAX_BARS = 1500
"""Above this many intervals, volumes are drawn as step lines instead of bars."""

RunLike = Run | str | Path


def _run(run: RunLike) -> Run:
    return run if isinstance(run, Run) else open_run(run)


def no_data_figure(title: str, message: str) -> Figure:
    """A figure that states why there is nothing to show (``fig._flech_no_data`` holds the text)."""
    fig = Figure(figsize=(8, 2.5))
    ax = fig.add_axes((0, 0, 1, 1))  # an axes, not bare figure text: IPython does not display axes-less figures
    ax.set_axis_off()
    ax.text(0.5, 0.62, title, ha="center", va="center", fontsize=13, weight="bold")
    ax.text(0.5, 0.38, message, ha="center", va="center", fontsize=10, wrap=True)
    fig._flech_no_data = message  # type: ignore[attr-defined]
    return fig


def _no_rows(name: str, what: str) -> Figure:
    return no_data_figure(what, f"no data for {what} in this run (table '{name}' is empty)")


def _date_axis(ax: Axes, maxticks: int | None = None) -> None:
    loc = mdates.AutoDateLocator(minticks=2, maxticks=maxticks) if maxticks else mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _days(delta: Any) -> Any:
    """A duration (Series or Timedelta) in matplotlib date units (days)."""
    return delta / pd.Timedelta(days=1)


# -- optional tables (written by newer versions: the twin, the inputs, the KPIs) ------------------
FEEDER_COMPARE = "feeder_compare"
"""Per feeder and step, from the no-flexibility twin. Columns read (first match wins): ``feeder``;
``interval_start``; with flexibility ``load_kw`` / ``load_flex_kw`` / ``with_flex_kw``; without it
``load_no_flex_kw`` / ``load_without_flex_kw`` / ``twin_load_kw`` / ``no_flex_kw``; ``limit_kw``."""
WEATHER = "weather"
"""Input series: a time column (``interval_start`` or ``time``) and an outdoor temperature column
(``t_out_c``, ``outdoor_temp_c``, ``temperature_c``, or any column whose name has 't_out' or 'temp')."""
KPIS_SUMMARY = "kpis_summary"
"""Across seeds, one row per (grid point,) scope, product_id, participant, feeder and metric:
``mean``, ``std``, ``n``, ``ci_low``, ``ci_high`` (95 %), ``unit``; optional grid-point columns."""
KPIS = "kpis"
"""Per run, long format: scope, product_id, participant, feeder, metric, value, unit."""
TWIN_DIR = "twin"


def optional_table(r: Run, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    """The table if this run wrote it (by name, through :mod:`flech_sim.results`), else None.

    None means "this run has no such table" - a figure then draws what the run does hold and says so,
    instead of showing an empty table as if nothing had happened."""
    if name not in r.table_names or not ((r.path / f"{name}.parquet").exists() or (r.path / name).exists()):
        return None
    return r.table(name, columns=columns)


def _pick(columns: Any, *candidates: str, contains: tuple[str, ...] = ()) -> str | None:
    names = list(columns)
    for c in candidates:
        if c in names:
            return c
    return next((n for n in names if any(k in n for k in contains)), None)


def run_end(r: Run) -> pd.Timestamp | None:
    """The end of the simulated time (start + simulated minutes); shading is clipped to it."""
    start = r.scenario.get("start")
    minutes = r.manifest.get("simulated_until_minute")
    if start is None or minutes is None:
        return None
    return pd.Timestamp(start) + pd.Timedelta(minutes=float(minutes))


def _shade_delivery(ax: Axes, markets: pd.DataFrame, end: pd.Timestamp | None) -> None:
    """Delivery windows as shaded spans, cut at the end of the run (a window may reach past it)."""
    first = True
    for start, stop in zip(markets.delivery_start, markets.delivery_end, strict=True):
        if end is not None:
            if start >= end:
                continue
            stop = min(stop, end)
        ax.axvspan(start, stop, color="C2", alpha=0.12, lw=0, label="delivery window" if first else None)
        first = False


def _outdoor(r: Run) -> pd.Series | None:
    w = optional_table(r, WEATHER)
    if w is None or w.empty:
        return None
    time = _pick(w.columns, "interval_start", "time", "at")
    temp = _pick(w.columns, "t_out_c", "outdoor_temp_c", "temperature_c", contains=("t_out", "temp"))
    if time is None or temp is None:
        return None
    return w.groupby(time)[temp].mean().sort_index()


def _feeder_series(r: Run) -> tuple[pd.DataFrame, str]:
    """(feeder, interval_start, with_kw, without_kw, limit_kw) and where "without" comes from.

    Order of preference: the ``feeder_compare`` table; the twin run's ``feeder_load`` (``twin/``);
    the run's own ``feeder_load`` plus the dispatched reduction, which omits the rebound (the
    households' own plan after a dispatch is not the plan they would have followed without one)."""
    fc = optional_table(r, FEEDER_COMPARE)
    if fc is not None and not fc.empty:
        cols = fc.columns
        w = _pick(cols, "load_kw", "load_flex_kw", "with_flex_kw")
        wo = _pick(cols, "load_no_flex_kw", "load_without_flex_kw", "twin_load_kw", "no_flex_kw",
                   contains=("no_flex", "without", "twin"))
        feeder = _pick(cols, "feeder", "location")
        if w and wo and feeder:
            out = pd.DataFrame({"feeder": fc[feeder], "interval_start": fc.interval_start, "with_kw": fc[w],
                                "without_kw": fc[wo], "limit_kw": fc[_pick(cols, "limit_kw")] if "limit_kw" in cols
                                else np.nan})
            return out, "twin run (feeder_compare)"
    own = r.table("feeder_load")
    twin_dir = r.path / TWIN_DIR
    if (twin_dir / "manifest.json").is_file():
        tw = open_run(twin_dir).table("feeder_load", columns=["feeder", "interval_start", "load_kw"])
        out = own.merge(tw.rename(columns={"load_kw": "without_kw"}), on=["feeder", "interval_start"], how="left")
        return (out.rename(columns={"load_kw": "with_kw"})[["feeder", "interval_start", "with_kw", "without_kw",
                                                            "limit_kw"]], "twin run (twin/feeder_load)")
    pl = r.table("portfolio_load", columns=["location", "interval_start", "reduction_kw"])
    red = pl.groupby(["location", "interval_start"]).reduction_kw.sum().rename("red").reset_index()
    out = own.merge(red.rename(columns={"location": "feeder"}), on=["feeder", "interval_start"], how="left")
    out["without_kw"] = out.load_kw + out.red.fillna(0.0)
    return (out.rename(columns={"load_kw": "with_kw"})[["feeder", "interval_start", "with_kw", "without_kw",
                                                        "limit_kw"]],
            "load + dispatched reduction: no twin in this run, so the rebound is not shown")


# -- feeder load ---------------------------------------------------------------------------
def feeder_load(run: RunLike, feeders: list[str] | None = None) -> Figure:
    """Load per feeder with and without flexibility against its limit, outdoor temperature beneath.

    "Without" comes from the no-flexibility twin when the run has one (so the rebound after a
    delivery shows as the gap turning negative); otherwise it is load + the dispatched reduction and
    the figure says so. Shaded spans are the markets' delivery windows at that feeder, cut at the
    end of the run; the bottom panel is the ``weather`` table's outdoor temperature when written.
    """
    r = _run(run)
    load, source = _feeder_series(r)
    if feeders is not None:
        load = load[load.feeder.isin(feeders)]
    if load.empty:
        return _no_rows("feeder_load", "feeder load")
    markets = r.table("markets", columns=["location", "delivery_start", "delivery_end"])
    end = run_end(r)
    outdoor = _outdoor(r)
    locations = sorted(load.feeder.unique())
    n = len(locations)
    fig = Figure(figsize=(11, 2.6 * n + 2.0), layout="constrained")
    axes = fig.subplots(n + 1, 1, sharex=True, squeeze=False, height_ratios=[3] * n + [1.4])[:, 0]
    for ax, loc in zip(axes[:n], locations, strict=True):
        g = load[load.feeder == loc].groupby("interval_start")[["with_kw", "without_kw", "limit_kw"]].first()
        g = g.sort_index()
        ax.plot(g.index, g.without_kw, drawstyle="steps-post", color="0.5", lw=1.1, label="without flexibility")
        ax.plot(g.index, g.with_kw, drawstyle="steps-post", color="C0", lw=1.1, label="with flexibility")
        limit = g.limit_kw.dropna()
        title = f"{loc}: feeder load"
        if len(limit) and limit.nunique() == 1:
            ax.axhline(limit.iloc[0], color="C3", ls="--", lw=1.2, label="feeder limit")
            title += f" (limit {limit.iloc[0]:g} kW)"
        elif len(limit):
            ax.plot(limit.index, limit, drawstyle="steps-post", color="C3", ls="--", lw=1.2, label="feeder limit")
        _shade_delivery(ax, markets[markets.location == loc], end)
        ax.set_title(title, loc="left", fontsize=10)
        ax.set_ylabel("kW")
    handles: dict[str, Any] = {}
    for ax in axes[:n]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncols=4, fontsize=8,
               title=f"without flexibility: {source}", title_fontsize=8)
    ax_t = axes[-1]
    if outdoor is not None:
        ax_t.plot(outdoor.index, outdoor.to_numpy(), color="C1", lw=1.1, label="outdoor temperature")
        ax_t.set_ylabel("°C")
        ax_t.legend(loc="upper right", fontsize=8)
    else:
        ax_t.text(0.5, 0.5, "outdoor temperature: this run wrote no 'weather' table", ha="center",
                  va="center", transform=ax_t.transAxes, fontsize=9, color="0.4")
        ax_t.set_yticks([])
    ax_t.set_title("outdoor temperature", loc="left", fontsize=10)
    if end is not None:
        ax_t.set_xlim(right=end)
    _date_axis(ax_t)
    return fig


# -- market timeline --------------------------------------------------------------------------
def market_timeline(run: RunLike, max_markets: int = MAX_TIMELINE_MARKETS,
                    window: tuple[Any, Any] | None = None) -> Figure:
    """Markets over time: one row per market when few enough, else the count per product and day.

    ``window`` (start, end) zooms to the markets whose life (request to delivery end) overlaps it.
    Above ``max_markets`` a row per market is unreadable, so the figure shows per product and
    delivery day how many markets there were, stacked by final state (nothing left out).
    """
    r = _run(run)
    m = r.table("markets", columns=["market_id", "product_id", "buyer", "location", "state", "requested_at",
                                    "gate_close", "delivery_start", "delivery_end"])
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
    ax.barh(y, _days(m.gate_close - m.requested_at), left=start, height=0.6, color="C0",
            label="bidding (request → gate closure)")
    ax.barh(y, _days(m.delivery_start - m.gate_close), left=mdates.date2num(m.gate_close), height=0.15,
            color="0.6", label="cleared, before delivery")
    ax.barh(y, _days(m.delivery_end - m.delivery_start), left=mdates.date2num(m.delivery_start), height=0.6,
            color="C2", label="delivery window")
    ax.plot(mdates.date2num(m.gate_close), y, ls="none", marker="|", ms=12, color="k", label="gate closure")
    ax.set_yticks(y, [f"{p} · {mid} ({s})" for p, mid, s in zip(m.product_id, m.market_id, m.state, strict=True)],
                  fontsize=8)
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


STATE_COLORS = {"settled": "C2", "delivered": "C0", "cleared": "C9", "gate_closed": "C7", "open": "C8",
                "cancelled": "0.6", "failed": "C3"}


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
            ax.bar(x, counts[st].to_numpy(), width=0.8, bottom=bottom, align="edge",
                   color=STATE_COLORS.get(st, "C4"), label=st)
            bottom += counts[st].to_numpy()
        ax.set_title(f"{product}: {int(bottom.sum())} markets by delivery day", loc="left", fontsize=10)
        ax.set_ylabel("markets")
        ax.legend(fontsize=8, title="final state", title_fontsize=8, loc="upper right")
        ax.xaxis_date()
        _date_axis(ax)
    zoom = " (zoomed)" if window else ""
    fig.suptitle(f"{len(m)} markets per product and delivery day{zoom}")
    return fig


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
            ax_p.plot(act.index, act.to_numpy(), ls="none", marker="o", ms=4, color="C0",
                      label="activation price, accepted (mean)")
            ax_a = ax_p.twinx()
            avail = av.groupby("interval_start").availability_price.mean().sort_index()
            ax_a.plot(avail.index, avail.to_numpy(), ls="none", marker="s", ms=4, color="C4",
                      label="availability price, accepted (mean)")
            ax_a.set_ylabel("availability DKK/kW", color="C4")
            ax_a.legend(fontsize=8, loc="lower right")
            prices.append(act.to_numpy())
            ax_p.set_title(f"{product}: activation and availability prices", loc="left", fontsize=10)
        else:
            ax_p.plot(c.interval_start, c.clearing_price, ls="none", marker="o", ms=4, color="C0",
                      label="clearing price")
            prices.append(c.clearing_price.to_numpy(dtype=float))
            ax_p.set_title(f"{product}: clearing price", loc="left", fontsize=10)
        _fit_price_axis(ax_p, np.concatenate(prices), caps)
        ax_p.set_ylabel("DKK/kWh")
        ax_p.legend(fontsize=8, loc="upper left")
        _date_axis(ax_p)
        g = c.groupby("interval_start").agg(need_kw=("need_kw", "sum"), accepted_kw=("accepted_kw", "sum"),
                                            unmet_kw=("unmet_kw", "sum"), minutes=("interval_minutes", "min"))
        x = mdates.date2num(g.index)
        if len(g) <= MAX_BARS:
            width = _days(pd.to_timedelta(g.minutes.fillna(60), unit="min")).to_numpy() * 0.9
            ax_v.bar(x, g.accepted_kw, width=width, align="edge", color="C2", label="accepted")
            ax_v.bar(x, g.unmet_kw, width=width, align="edge", bottom=g.accepted_kw, color="C3", alpha=0.6,
                     label="unmet")
        else:
            ax_v.fill_between(x, g.accepted_kw, step="post", color="C2", label="accepted")
            ax_v.fill_between(x, g.accepted_kw, g.accepted_kw + g.unmet_kw, step="post", color="C3", alpha=0.6,
                              label="unmet")
        ax_v.plot(x + (width / 2 if len(g) <= MAX_BARS else 0), g.need_kw, ls="none", marker="_", ms=12,
                  color="k", label="need")
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
    parts = [df for t in TABLES.values()
             if t.name != "bids" and {*key, "availability_price"} <= set(t.names)
             and (df := optional_table(r, t.name, [*key, "availability_price"])) is not None and len(df)]
    if not parts:
        return pd.DataFrame(columns=cols)
    aw = r.table("awards", columns=["bid_id", "market_id", "product_id", "interval_start", "accepted_kw", "price"])
    aw = aw[aw.accepted_kw > 0].merge(pd.concat(parts, ignore_index=True), on=key, how="inner")
    return aw.rename(columns={"price": "activation_price"})[cols]


def _fit_price_axis(ax: Axes, prices: np.ndarray, caps: pd.Series) -> None:
    """Scale the axis to the prices; the cap is a line only if it falls in that range, else a note.

    A cap of 3 DKK/kWh drawn to scale squashes prices of 0.2-0.5 into a sliver."""
    prices = prices[np.isfinite(prices)]
    if len(prices):
        lo, hi = float(prices.min()), float(prices.max())
        pad = max((hi - lo) * 0.15, abs(hi) * 0.05, 0.01)
        ax.set_ylim(min(lo - pad, 0.0) if lo - pad < 0 <= lo else lo - pad, hi + pad)
    top = ax.get_ylim()[1]
    for cap in sorted(set(caps.round(6))):
        if cap <= top:
            ax.axhline(cap, color="C3", lw=1, ls="--", label=f"price cap {cap:g}")
        else:
            ax.annotate(f"price cap {cap:g} DKK/kWh ↑ (off scale)", (1, 1), xycoords="axes fraction",
                        ha="right", va="bottom", fontsize=8, color="C3")
            break


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


# -- indoor temperatures ----------------------------------------------------------------------
def _temperature_columns(names: list[str], units: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    """(indoor, band low, band high) column names guessed from units and names."""
    temps = [n for n in names if units.get(n, "").replace(" ", "") in {"°C", "degC", "C", "K"}]
    low = next((n for n in temps if any(k in n for k in ("min", "low", "lower"))), None)
    high = next((n for n in temps if any(k in n for k in ("max", "high", "upper"))), None)
    rest = [n for n in temps if n not in (low, high) and "out" not in n]
    indoor = next((n for n in rest if "in" in n), rest[0] if rest else None)
    return indoor, low, high


HELD_K = 1e-6
"""A recorded home whose temperature spans less than this never left its setpoint: not dispatched."""


def indoor_temperatures(run: RunLike, max_homes: int = 9) -> Figure:
    """Each dispatched home's indoor temperature against its own comfort band (one panel per home).

    A mean over homes with different bands looks like a breach where there is none, so each home is
    drawn alone. Homes that were never dispatched sit exactly at their setpoint (the default
    controller heats to it every step) and are counted, not drawn. (The "0.25 K jumps at midnight"
    of earlier versions were a recording fault - every day held the last buffered day's values - fixed
    in ``World._persist``.)
    """
    r = _run(run)
    what = "indoor temperatures"
    if TEMPERATURE_TABLE not in TABLES:
        return no_data_figure(what, f"no data for {what} in this run: this version of flech_sim writes no "
                                    f"'{TEMPERATURE_TABLE}' table")
    t = TABLES[TEMPERATURE_TABLE]
    units = {c.name: c.unit for c in t.columns}
    time_col = next((c.name for c in t.columns if c.type == "time"), None)
    indoor, low, high = _temperature_columns(list(t.names), units)
    if time_col is None or indoor is None:
        return no_data_figure(what, f"cannot find a time and an indoor temperature column in "
                                    f"'{TEMPERATURE_TABLE}' (columns: {', '.join(t.names)})")
    ids = [c for c in ("household", "metering_point") if c in t.names]
    cols = [c for c in (time_col, indoor, low, high, *ids) if c]
    df = r.table(TEMPERATURE_TABLE, columns=cols)
    if df.empty:
        return _no_rows(TEMPERATURE_TABLE, what)
    key = ids[0] if ids else None
    if key is None or not (low and high):
        return no_data_figure(what, f"'{TEMPERATURE_TABLE}' has no household or comfort-band columns")
    spread = df.groupby(key)[indoor].agg(lambda x: float(x.max() - x.min()))
    moved = sorted(spread.index[spread > HELD_K])
    held = len(spread) - len(moved)
    note = (f"{held} recorded home(s) not drawn: their temperature never moved, the thermostat held them at "
            f"their setpoint (not dispatched)" if held else "")
    if not moved:
        return no_data_figure(what, f"no recorded home was dispatched in this run; {note}")
    shown = moved[:max_homes]
    ncols = min(3, len(shown))
    nrows = -(-len(shown) // ncols)
    fig = Figure(figsize=(4.2 * ncols + 0.6, 2.5 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
    markets = r.table("markets", columns=["location", "delivery_start", "delivery_end"])
    end = run_end(r)
    for ax, home in zip(axes, shown, strict=False):
        h = df[df[key] == home].sort_values(time_col)
        ax.fill_between(h[time_col], h[low], h[high], color="0.88", lw=0, label="own comfort band")
        ax.plot(h[time_col], h[low], color="C3", lw=0.8, ls="--", label="band limits")
        ax.plot(h[time_col], h[high], color="C3", lw=0.8, ls="--")
        ax.plot(h[time_col], h[indoor], color="C0", lw=1.1, label="indoor temperature")
        where = str(h.metering_point.iloc[0]) if "metering_point" in h else ""
        feeder = where.split("@", 1)[1] if "@" in where else None
        _shade_delivery(ax, markets[markets.location == feeder] if feeder else markets.iloc[0:0], end)
        ax.set_title(f"home {home} · {where}", loc="left", fontsize=9)
        ax.set_ylabel(units.get(indoor, "°C").replace("degC", "°C"), fontsize=8)
        _date_axis(ax, maxticks=5)
    for ax in axes[len(shown):]:
        ax.set_axis_off()
    more = f" (first {len(shown)} of {len(moved)})" if len(moved) > len(shown) else ""
    fig.suptitle(f"Indoor temperature of dispatched homes against each home's comfort band{more}", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8,
               title=note or None, title_fontsize=8)
    fig._flech_held_homes = held  # type: ignore[attr-defined]
    return fig


# -- KPIs across seeds --------------------------------------------------------------------------
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    """Student t 97.5 % quantile (two-sided 95 % interval) for ``df`` degrees of freedom (1.96 above 30);
    a table rather than scipy, which flech_sim does not otherwise need."""
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96 if df > 0 else float("nan")


def kpi_summary_frame(source: str | Path | Run) -> pd.DataFrame:
    """Mean, standard deviation and 95 % CI per metric (and scope, product, participant, feeder).

    From the ``kpis_summary`` table of a sweep/run directory when present; else computed from the
    ``kpis`` tables of every run found (Student t interval over seeds); else empty."""
    from .results import open_runs

    keys = ["scope", "product_id", "participant", "feeder", "metric", "unit"]
    root = source.path if isinstance(source, Run) else Path(source)
    summary = root / f"{KPIS_SUMMARY}.parquet"
    if summary.is_file():
        return pd.read_parquet(summary).rename(columns={"ci95_low": "ci_low", "ci95_high": "ci_high"})
    try:
        runs = open_runs(root)
    except FileNotFoundError:
        return pd.DataFrame(columns=[*keys, "n", "mean", "std", "ci_low", "ci_high"])
    frames = [t.assign(run_id=r.run_id) for r in runs if (t := optional_table(r, KPIS)) is not None]
    if not frames:
        return pd.DataFrame(columns=[*keys, "n", "mean", "std", "ci_low", "ci_high"])
    k = pd.concat(frames, ignore_index=True)
    present = [c for c in keys if c in k]
    g = k.groupby(present, dropna=False).value.agg(["count", "mean", "std"]).reset_index()
    g = g.rename(columns={"count": "n"})
    half = np.where(g.n > 1, [t975(n - 1) for n in g.n] * g["std"] / np.sqrt(g.n), np.nan)
    return g.assign(ci_low=g["mean"] - half, ci_high=g["mean"] + half)


def kpis_across_seeds(source: str | Path | Run, metrics: list[str] | None = None) -> Figure:
    """One panel per metric: mean over seeds with its 95 % confidence interval, per grid point when the
    summary has one (a band over a numeric swept parameter), else per product/participant."""
    what = "KPIs across seeds"
    s = kpi_summary_frame(source)
    if s.empty:
        return no_data_figure(what, f"no data for {what}: no '{KPIS_SUMMARY}' table and no '{KPIS}' tables found")
    if metrics is not None:
        s = s[s.metric.isin(metrics)]
    names = list(dict.fromkeys(s.metric))[:9]
    if not names:
        return no_data_figure(what, f"no data for {what}: none of the metrics {metrics} is in the summary")
    known = {"scope", "product_id", "participant", "feeder", "metric", "unit", "n", "mean", "std", "ci_low",
             "ci_high", "run_id"}
    params = [c for c in s.columns if c not in known and pd.api.types.is_numeric_dtype(s[c])]
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(4.3 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        d = s[s.metric == name]
        label_cols = [c for c in ("scope", "product_id", "participant", "feeder") if c in d and d[c].notna().any()]
        labels = d[label_cols].astype(str).agg(" · ".join, axis=1) if label_cols else pd.Series("", index=d.index)
        unit = str(d.unit.iloc[0]) if "unit" in d and d.unit.notna().any() else ""
        if params:
            x = params[0]
            for lab, part in d.groupby(labels, sort=True):
                part = part.sort_values(x)
                ax.plot(part[x], part["mean"], marker="o", ms=3, label=f"{lab} (mean)")
                ax.fill_between(part[x], part.ci_low, part.ci_high, alpha=0.2, label=f"{lab} (95 % CI)")
            ax.set_xlabel(x)
        else:
            pos = np.arange(len(d))
            err = np.vstack([d["mean"] - d.ci_low, d.ci_high - d["mean"]]).clip(min=0)
            ax.errorbar(pos, d["mean"], yerr=np.nan_to_num(err), fmt="o", capsize=4, color="C0",
                        label="mean ± 95 % CI")
            ax.set_xticks(pos, [f"{lab}\n(n={int(n)})" for lab, n in zip(labels, d.n, strict=True)], fontsize=7)
            ax.set_xlim(-0.6, len(d) - 0.4)
        unit = "" if unit in ("-", "None", "nan") else unit
        for suffix in ("_dkk", "_kwh", "_kw"):
            name = name.removesuffix(suffix) if unit else name
        ax.set_title(name.replace("_", " ") + (f" ({unit})" if unit else ""), loc="left", fontsize=10)
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    fig.suptitle("KPIs across seeds (mean and 95 % confidence interval)", fontsize=11)
    return fig


KINDS: dict[str, Callable[[RunLike], Figure]] = {
    "feeder_load": feeder_load,
    "market_timeline": market_timeline,
    "clearing": clearing,
    "ordered_delivered": ordered_vs_delivered,
    "revenue": aggregator_revenue,
    "temperatures": indoor_temperatures,
}
"""Plot kinds of ``flech-sim plot --kind`` and of the report, in display order."""


def save_plots(run: RunLike, out_dir: Path, kinds: list[str] | None = None, fmt: str = "png") -> list[Path]:
    """Write the chosen figures as ``<kind>.<fmt>`` files and return their paths."""
    r = _run(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in kinds or list(KINDS):
        fig = KINDS[kind](r)
        path = out_dir / f"{kind}.{fmt}"
        fig.savefig(path, format=fmt, dpi=110)
        paths.append(path)
    return paths


def register_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plot", help="write figures of a run as PNG or SVG files")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--kind", nargs="+", choices=[*KINDS, "kpis"], metavar="KIND",
                       help=f"figures to make: {', '.join(KINDS)}; 'kpis' (KPIs across seeds) also takes a "
                            f"sweep directory or any directory holding runs")
    which.add_argument("--all", action="store_true", help="every figure (the default)")
    p.add_argument("--out", type=Path, help="directory for the files (default: RUN_DIR/plots)")
    p.add_argument("--format", choices=["png", "svg"], default="png")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    kinds = args.kind or list(KINDS)
    out = args.out or args.run_dir / "plots"
    if "kpis" in kinds:
        fig = kpis_across_seeds(args.run_dir)
        if not hasattr(fig, "_flech_no_data") or kinds == ["kpis"]:
            out.mkdir(parents=True, exist_ok=True)
            fig.savefig(out / f"kpis.{args.format}", format=args.format, dpi=110)
            print(out / f"kpis.{args.format}")
        kinds = [k for k in kinds if k != "kpis"]
        if not kinds:
            return 0
    try:
        r = open_run(args.run_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in save_plots(r, out, kinds, args.format):
        print(path)
    return 0
