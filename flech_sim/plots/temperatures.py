"""Indoor temperatures of dispatched homes against each home's comfort band, and the sample's strata compared."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..schema import TABLES
from .common import (
    RunLike,
    _date_axis,
    _no_rows,
    _run,
    _shade_delivery,
    no_data_figure,
    run_end,
)

TEMPERATURE_TABLE = "household_temperatures"


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

STRATA: tuple[tuple[str, str], ...] = (
    ("dispatched", "dispatched (aggregated)"),
    ("eligible", "aggregated, never dispatched"),
    ("unaggregated", "unaggregated"),
)
"""Comparison panel groups: key, legend label."""


def _strata(df: pd.DataFrame, key: str, indoor: str) -> tuple[pd.Series, pd.Series]:
    """Per home: was it ever dispatched, and its stratum key (STRATA). Tables written before the
    ``dispatched``/``stratum`` columns: a home whose temperature moved was dispatched, and the owner in
    its metering point says whether it is aggregated."""
    if "dispatched" in df:
        ever = df.groupby(key).dispatched.any()
    else:
        ever = df.groupby(key)[indoor].agg(lambda x: float(x.max() - x.min())) > HELD_K
    if "stratum" in df:
        agg = df.groupby(key).stratum.first() == "aggregated"
    elif "metering_point" in df:
        agg = ~df.groupby(key).metering_point.first().astype(str).str.startswith("unaggregated@")
    else:
        agg = pd.Series(True, index=ever.index)
    agg = agg.reindex(ever.index, fill_value=True)
    kind = pd.Series(np.where(ever, "dispatched", np.where(agg, "eligible", "unaggregated")), index=ever.index)
    return ever, kind


def indoor_temperatures(run: RunLike, max_homes: int = 6) -> Figure:
    """Dispatched homes against their own comfort bands, and the sample's strata compared.

    Top: each dispatched home alone (a mean over homes with different bands looks like a breach where
    there is none), with the steps in which dispatch asked it for a change shaded. Bottom: every
    recorded home's position in its own band (0 = lower limit, 1 = upper limit; outside = breach), as
    the mean and range per stratum -- dispatched homes, aggregated homes never dispatched, unaggregated
    homes -- so a breach, a pre-heat or a drift shows against the homes nobody touched. Homes never
    dispatched sit at their setpoint (the thermostat heats to it every step). (The "0.25 K jumps at
    midnight" of earlier versions were a recording fault, fixed in ``World._persist``.)
    """
    r = _run(run)
    what = "indoor temperatures"
    if TEMPERATURE_TABLE not in TABLES:
        return no_data_figure(
            what, f"no data for {what} in this run: this version of flech_sim writes no '{TEMPERATURE_TABLE}' table"
        )
    t = TABLES[TEMPERATURE_TABLE]
    units = {c.name: c.unit for c in t.columns}
    time_col = next((c.name for c in t.columns if c.type == "time"), None)
    indoor, low, high = _temperature_columns(list(t.names), units)
    if time_col is None or indoor is None:
        return no_data_figure(
            what,
            f"cannot find a time and an indoor temperature column in "
            f"'{TEMPERATURE_TABLE}' (columns: {', '.join(t.names)})",
        )
    df = r.table(TEMPERATURE_TABLE)
    if df.empty:
        return _no_rows(TEMPERATURE_TABLE, what)
    key = next((c for c in ("household", "metering_point") if c in df), None)
    if key is None or not (low and high) or low not in df or high not in df:
        return no_data_figure(what, f"'{TEMPERATURE_TABLE}' has no household or comfort-band columns")
    ever, kind = _strata(df, key, indoor)
    # homes that left their band first (the furthest out first), then the rest in household order
    out = (df[low] - df[indoor]).clip(lower=0) + (df[indoor] - df[high]).clip(lower=0)
    worst = out.groupby(df[key]).max()
    moved = sorted(ever.index[ever], key=lambda h: (-float(worst.get(h, 0.0)), h))
    held = len(ever) - len(moved)
    note = (
        f"{held} recorded home(s) never dispatched: in the lower panel only (their thermostat held them at "
        f"their setpoint)"
        if held
        else ""
    )
    if not moved:
        return no_data_figure(what, f"no recorded home was dispatched in this run; {held} recorded home(s) not drawn")
    shown = moved[:max_homes]
    ncols = min(3, len(shown))
    nrows = -(-len(shown) // ncols)
    fig = Figure(figsize=(4.2 * ncols + 0.6, 2.5 * nrows + 3.4), layout="constrained")
    grid = fig.add_gridspec(nrows + 1, ncols, height_ratios=[1.0] * nrows + [1.25])
    axes = [fig.add_subplot(grid[i // ncols, i % ncols]) for i in range(nrows * ncols)]
    for ax in axes[1:]:
        ax.sharex(axes[0])
    markets = r.table("markets", columns=["location", "delivery_start", "delivery_end"])
    end = run_end(r)
    for ax, home in zip(axes, shown, strict=False):
        h = df[df[key] == home].sort_values(time_col)
        ax.fill_between(h[time_col], h[low], h[high], color="0.88", lw=0, label="own comfort band")
        ax.plot(h[time_col], h[low], color="C3", lw=0.8, ls="--", label="band limits")
        ax.plot(h[time_col], h[high], color="C3", lw=0.8, ls="--")
        if "dispatched" in h and h.dispatched.any():
            lo, hi = float(min(h[low].min(), h[indoor].min())), float(max(h[high].max(), h[indoor].max()))
            ax.fill_between(
                h[time_col],
                lo,
                hi,
                where=h.dispatched.to_numpy(dtype=bool),
                step="pre",
                color="C1",
                alpha=0.25,
                lw=0,
                label="dispatched step",
            )
        ax.plot(h[time_col], h[indoor], color="C0", lw=1.1, label="indoor temperature")
        for edge, side in ((h[low], h[indoor] < h[low]), (h[high], h[indoor] > h[high])):
            if side.any():
                ax.fill_between(
                    h[time_col],
                    h[indoor],
                    edge,
                    where=side.to_numpy(),
                    color="C3",
                    alpha=0.6,
                    lw=0,
                    label="outside own band",
                )
        where = str(h.metering_point.iloc[0]) if "metering_point" in h else ""
        feeder = where.split("@", 1)[1] if "@" in where else None
        _shade_delivery(ax, markets[markets.location == feeder] if feeder else markets.iloc[0:0], end)
        how = f" · {h.selection.iloc[0]}" if "selection" in h else ""
        ax.set_title(f"home {home} · {where}{how}", loc="left", fontsize=9)
        ax.set_ylabel(units.get(indoor, "°C").replace("degC", "°C"), fontsize=8)
        _date_axis(ax, maxticks=5)
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    ax_s = fig.add_subplot(grid[nrows, :])  # not shared: its wide axis takes more date ticks
    pos = (df[indoor] - df[low]) / (df[high] - df[low]).where(df[high] > df[low])
    df = df.assign(position=pos, stratum_kind=df[key].map(kind))
    ax_s.axhspan(0.0, 1.0, color="0.9", lw=0, label="comfort band (each home's own)")
    counts = {}
    for i, (k, label) in enumerate(STRATA):
        g = df[df.stratum_kind == k]
        counts[k] = int(g[key].nunique())
        if g.empty:
            continue
        per = g.groupby(time_col).position.agg(["mean", "min", "max"]).sort_index()
        color = ("C1", "C0", "C2")[i]
        ax_s.fill_between(per.index, per["min"], per["max"], color=color, alpha=0.2, lw=0)
        ax_s.plot(per.index, per["mean"], color=color, lw=1.2, label=f"{label}: mean, range ({counts[k]} homes)")
    ax_s.axhline(0.0, color="C3", lw=0.8, ls="--")
    ax_s.axhline(1.0, color="C3", lw=0.8, ls="--")
    ax_s.set_ylabel("position in own band\n(0 = lower, 1 = upper limit)", fontsize=8)
    ax_s.set_title("the recorded homes by stratum", loc="left", fontsize=9)
    ax_s.legend(loc="lower left", fontsize=7, ncols=2)
    ax_s.set_xlim(axes[0].get_xlim())
    _date_axis(ax_s)
    more = f" (first {len(shown)} of {len(moved)})" if len(moved) > len(shown) else ""
    fig.suptitle(f"Indoor temperature of dispatched homes against each home's comfort band{more}", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=8, title=note or None, title_fontsize=8)
    fig._flech_held_homes = held  # type: ignore[attr-defined]
    fig._flech_strata = counts  # type: ignore[attr-defined]
    return fig
