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
from .schema import TABLES

TEMPERATURE_TABLE = "household_temperatures"
MAX_TIMELINE_MARKETS = 60
"""Above this many markets the timeline shows the first ones only (and says so)."""
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


def _date_axis(ax: Axes) -> None:
    loc = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _days(delta: Any) -> Any:
    """A duration (Series or Timedelta) in matplotlib date units (days)."""
    return delta / pd.Timedelta(days=1)


# -- feeder load ---------------------------------------------------------------------------
def feeder_load(run: RunLike, feeders: list[str] | None = None) -> Figure:
    """Load per feeder with flexibility (as simulated) and without it (load + reduction), against the limit.

    Sums ``portfolio_load`` over the portfolios on each feeder (every
    portfolio the run records there); the limit is the scenario's
    ``feeders.<id>.limit_kw``; shaded spans are the delivery windows of the
    markets at that feeder. A rebound after delivery is part of the
    simulated load, so it shows in both lines.
    """
    r = _run(run)
    load = r.table("portfolio_load", columns=["location", "interval_start", "load_kw", "reduction_kw"])
    if feeders is not None:
        load = load[load.location.isin(feeders)]
    if load.empty:
        return _no_rows("portfolio_load", "feeder load")
    limits = {k: (v or {}).get("limit_kw") for k, v in r.scenario.get("feeders", {}).items()}
    markets = r.table("markets", columns=["location", "delivery_start", "delivery_end"])
    locations = sorted(load.location.unique())
    fig = Figure(figsize=(10, 2.8 * len(locations) + 0.6), layout="constrained")
    axes = fig.subplots(len(locations), 1, sharex=True, squeeze=False)[:, 0]
    for ax, loc in zip(axes, locations, strict=True):
        g = load[load.location == loc].groupby("interval_start")[["load_kw", "reduction_kw"]].sum().sort_index()
        ax.plot(g.index, g.load_kw + g.reduction_kw, drawstyle="steps-post", color="0.55",
                label="without flexibility")
        ax.plot(g.index, g.load_kw, drawstyle="steps-post", color="C0", label="with flexibility")
        if limits.get(loc) is not None:
            ax.axhline(limits[loc], color="C3", ls="--", lw=1.2, label=f"limit {limits[loc]:g} kW")
        for i, (_, m) in enumerate(markets[markets.location == loc].iterrows()):
            ax.axvspan(m.delivery_start, m.delivery_end, color="C2", alpha=0.12, lw=0,
                       label="delivery window" if i == 0 else None)
        ax.set_title(f"{loc}: load (sum of its portfolios)")
        ax.set_ylabel("kW")
        ax.legend(loc="upper right", fontsize=8)
        _date_axis(ax)
    return fig


# -- market timeline --------------------------------------------------------------------------
def market_timeline(run: RunLike, max_markets: int = MAX_TIMELINE_MARKETS) -> Figure:
    """One row per market, grouped by product: bidding (request to gate closure), wait, delivery window."""
    r = _run(run)
    m = r.table("markets", columns=["market_id", "product_id", "buyer", "location", "state", "requested_at",
                                    "gate_close", "delivery_start", "delivery_end"])
    if m.empty:
        return _no_rows("markets", "market timeline")
    m = m.sort_values(["product_id", "requested_at", "market_id"], kind="stable").reset_index(drop=True)
    total = len(m)
    m = m.head(max_markets)
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
    ax.xaxis_date()
    _date_axis(ax)
    shown = "" if total <= max_markets else f" (first {max_markets} of {total})"
    fig.suptitle(f"Markets per product{shown}")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
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
    products = sorted(ci.product_id.unique())
    fig = Figure(figsize=(12, 3.0 * len(products) + 0.6), layout="constrained")
    axes = fig.subplots(len(products), 2, squeeze=False)
    for (ax_p, ax_v), product in zip(axes, products, strict=True):
        c = ci[ci.product_id == product].sort_values(["interval_start", "market_id"], kind="stable")
        ax_p.plot(c.interval_start, c.clearing_price, ls="none", marker="o", ms=4, color="C0",
                  label="clearing price")
        ax_p.plot(c.interval_start, c.price_cap, ls="none", marker="_", ms=10, color="C3", label="price cap")
        ax_p.set_title(f"{product}: clearing price")
        ax_p.set_ylabel("DKK/kWh")
        ax_p.legend(fontsize=8)
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
        ax_v.set_title(f"{product}: volume per interval (all markets)")
        ax_v.set_ylabel("kW")
        ax_v.legend(fontsize=8)
    return fig


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


def indoor_temperatures(run: RunLike) -> Figure:
    """Indoor temperature over all households (mean and range) against the mean comfort band.

    Needs a ``household_temperatures`` table; until the household model writes
    one the figure says so.
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
    g = df.groupby(time_col).agg(**{k: (c, f) for k, c, f in [
        ("mean", indoor, "mean"), ("lo", indoor, "min"), ("hi", indoor, "max"),
        *([("band_lo", low, "mean")] if low else []), *([("band_hi", high, "mean")] if high else [])]}).sort_index()
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.fill_between(g.index, g.lo, g.hi, color="C0", alpha=0.2, label="range over households")
    ax.plot(g.index, g["mean"], color="C0", label="mean indoor temperature")
    if "band_lo" in g:
        ax.plot(g.index, g.band_lo, color="C3", ls="--", label="comfort band (mean)")
    if "band_hi" in g:
        ax.plot(g.index, g.band_hi, color="C3", ls="--", label=None if "band_lo" in g else "comfort band (mean)")
    markets = r.table("markets", columns=["delivery_start", "delivery_end"])
    for i, (start, end) in enumerate(zip(markets.delivery_start, markets.delivery_end, strict=True)):
        ax.axvspan(start, end, color="C2", alpha=0.12, lw=0, label="delivery window" if i == 0 else None)
    ax.set_ylabel(units.get(indoor, "°C"))
    count = f" ({len(df[ids].drop_duplicates())} recorded households)" if ids else ""
    ax.set_title(f"Indoor temperatures against comfort bands{count}")
    ax.legend(fontsize=8)
    _date_axis(ax)
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
    which.add_argument("--kind", nargs="+", choices=list(KINDS), metavar="KIND",
                       help=f"figures to make: {', '.join(KINDS)}")
    which.add_argument("--all", action="store_true", help="every figure (the default)")
    p.add_argument("--out", type=Path, help="directory for the files (default: RUN_DIR/plots)")
    p.add_argument("--format", choices=["png", "svg"], default="png")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    try:
        r = open_run(args.run_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in save_plots(r, args.out or args.run_dir / "plots", args.kind, args.format):
        print(path)
    return 0
