"""Indoor temperatures of dispatched homes against each home's comfort band."""

from __future__ import annotations

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
    note = (
        f"{held} recorded home(s) not drawn: their temperature never moved, the thermostat held them at "
        f"their setpoint (not dispatched)"
        if held
        else ""
    )
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
    for ax in axes[len(shown) :]:
        ax.set_axis_off()
    more = f" (first {len(shown)} of {len(moved)})" if len(moved) > len(shown) else ""
    fig.suptitle(f"Indoor temperature of dispatched homes against each home's comfort band{more}", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8, title=note or None, title_fontsize=8)
    fig._flech_held_homes = held  # type: ignore[attr-defined]
    return fig
