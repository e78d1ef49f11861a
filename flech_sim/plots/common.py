"""Helpers every figure shares: opening a run, no-data figures, date axes, optional tables, shading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .. import products as _products  # noqa: F401  (registers the built-in products' own tables)
from ..results import Run, open_run

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
            ax.annotate(
                f"price cap {cap:g} DKK/kWh ↑ (off scale)",
                (1, 1),
                xycoords="axes fraction",
                ha="right",
                va="bottom",
                fontsize=8,
                color="C3",
            )
            break
