"""Figures of one run, for notebooks, the ``flech-sim plot`` command and the report.

Every function takes a run (a :class:`~flech_sim.results.Run` or its
directory) and returns a :class:`matplotlib.figure.Figure` built without
pyplot, so nothing accumulates in global state however many are made, and
no backend is switched (saving a PNG renders with Agg; a notebook keeps its own).
Products, feeders and sellers are read from the tables, never listed here.
A table with no rows gives a figure that says so instead of an error: a run
without markets, or from a version without the table, is still plottable.

The figures live in one module per kind (``feeders``, ``markets``, ``prices``, ``settlements``,
``temperatures``, ``ensembles``), shared helpers in ``common`` and the command in ``cli``; this
package re-exports the names the former single ``plots`` module had.
"""

from __future__ import annotations

from .cli import KINDS, register_cli, save_plots
from .common import (
    FEEDER_COMPARE,
    KPIS,
    KPIS_SUMMARY,
    TWIN_DIR,
    WEATHER,
    RunLike,
    no_data_figure,
    optional_table,
    run_end,
)
from .common import _fit_price_axis as _fit_price_axis
from .common import _shade_delivery as _shade_delivery
from .ensembles import kpi_summary_frame, kpis_across_seeds, t975
from .feeders import _feeder_series as _feeder_series
from .feeders import feeder_load
from .markets import MAX_TIMELINE_MARKETS, STATE_COLORS, market_timeline
from .prices import MAX_BARS, clearing
from .settlements import aggregator_revenue, ordered_vs_delivered
from .temperatures import HELD_K, TEMPERATURE_TABLE, indoor_temperatures

__all__ = [
    "FEEDER_COMPARE",
    "HELD_K",
    "KINDS",
    "KPIS",
    "KPIS_SUMMARY",
    "MAX_BARS",
    "MAX_TIMELINE_MARKETS",
    "STATE_COLORS",
    "TEMPERATURE_TABLE",
    "TWIN_DIR",
    "WEATHER",
    "RunLike",
    "aggregator_revenue",
    "clearing",
    "feeder_load",
    "indoor_temperatures",
    "kpi_summary_frame",
    "kpis_across_seeds",
    "market_timeline",
    "no_data_figure",
    "optional_table",
    "ordered_vs_delivered",
    "register_cli",
    "run_end",
    "save_plots",
    "t975",
]
