"""Feeder load with and without flexibility against the feeder limit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..results import Run, open_run
from .common import (
    FEEDER_COMPARE,
    TWIN_DIR,
    WEATHER,
    RunLike,
    _date_axis,
    _no_rows,
    _pick,
    _run,
    _shade_delivery,
    optional_table,
    run_end,
)


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
        wo = _pick(
            cols,
            "load_no_flex_kw",
            "load_without_flex_kw",
            "twin_load_kw",
            "no_flex_kw",
            contains=("no_flex", "without", "twin"),
        )
        feeder = _pick(cols, "feeder", "location")
        if w and wo and feeder:
            out = pd.DataFrame(
                {
                    "feeder": fc[feeder],
                    "interval_start": fc.interval_start,
                    "with_kw": fc[w],
                    "without_kw": fc[wo],
                    "limit_kw": fc[_pick(cols, "limit_kw")] if "limit_kw" in cols else np.nan,
                }
            )
            return out, "twin run (feeder_compare)"
    own = r.table("feeder_load")
    twin_dir = r.path / TWIN_DIR
    if (twin_dir / "manifest.json").is_file():
        tw = open_run(twin_dir).table("feeder_load", columns=["feeder", "interval_start", "load_kw"])
        out = own.merge(tw.rename(columns={"load_kw": "without_kw"}), on=["feeder", "interval_start"], how="left")
        return (
            out.rename(columns={"load_kw": "with_kw"})[
                ["feeder", "interval_start", "with_kw", "without_kw", "limit_kw"]
            ],
            "twin run (twin/feeder_load)",
        )
    pl = r.table("portfolio_load", columns=["location", "interval_start", "reduction_kw"])
    red = pl.groupby(["location", "interval_start"]).reduction_kw.sum().rename("red").reset_index()
    out = own.merge(red.rename(columns={"location": "feeder"}), on=["feeder", "interval_start"], how="left")
    out["without_kw"] = out.load_kw + out.red.fillna(0.0)
    return (
        out.rename(columns={"load_kw": "with_kw"})[["feeder", "interval_start", "with_kw", "without_kw", "limit_kw"]],
        "load + dispatched reduction: no twin in this run, so the rebound is not shown",
    )


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
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside upper center",
        ncols=4,
        fontsize=8,
        title=f"without flexibility: {source}",
        title_fontsize=8,
    )
    ax_t = axes[-1]
    if outdoor is not None:
        ax_t.plot(outdoor.index, outdoor.to_numpy(), color="C1", lw=1.1, label="outdoor temperature")
        ax_t.set_ylabel("°C")
        ax_t.legend(loc="upper right", fontsize=8)
    else:
        ax_t.text(
            0.5,
            0.5,
            "outdoor temperature: this run wrote no 'weather' table",
            ha="center",
            va="center",
            transform=ax_t.transAxes,
            fontsize=9,
            color="0.4",
        )
        ax_t.set_yticks([])
    ax_t.set_title("outdoor temperature", loc="left", fontsize=10)
    if end is not None:
        ax_t.set_xlim(right=end)
    _date_axis(ax_t)
    return fig
