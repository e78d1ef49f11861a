"""The ``flech-sim plot`` command and the plot kinds it (and the report) draws."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

from ..results import open_run
from .common import (
    RunLike,
    _run,
)
from .ensembles import kpis_across_seeds
from .feeders import feeder_load
from .markets import market_timeline
from .prices import clearing
from .settlements import aggregator_revenue, ordered_vs_delivered
from .temperatures import indoor_temperatures

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


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plot", help="write figures of a run as PNG or SVG files")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--kind",
        nargs="+",
        choices=[*KINDS, "kpis"],
        metavar="KIND",
        help=f"figures to make: {', '.join(KINDS)}; 'kpis' (KPIs across seeds) also takes a "
        f"sweep directory or any directory holding runs",
    )
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
