"""Feeder limits sized like real grids: ``flech-sim size-feeders SCENARIO.yaml [--percentile 98]``.

Real feeders are above their limits only on cold-day peaks, a few per cent of the time
(docs/reference_ranges.md, "Feeder limit sizing"). The documented rule is therefore: run the
scenario's no-flexibility twin (same households and weather, no market opened; optionally over several
seeds, pooled) and set each
feeder's limit at a high percentile (97th-99th) of its load over the study horizon, so that about
``100 - percentile`` per cent of the model steps are above it without flexibility. The twin's load
does not depend on the limits (nothing reacts to them without markets), so one run sizes every feeder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .constants import EXIT_BAD_INPUT, EXIT_OK
from .scenario import Scenario, ScenarioError, load_scenario

DEFAULT_PERCENTILE = 98.0


def twin_feeder_load(scenario: Scenario, horizon_hours: float | None = None, seeds: int = 1) -> pd.DataFrame:
    """The no-flexibility twin's ``feeder_load`` (feeder, interval_start, load_kw, limit_kw, seed), pooled
    over ``seeds`` consecutive seeds from the scenario's: weather and households differ by seed, so a
    limit sized on several is not tuned to one draw."""
    from .results import open_run
    from .simulation import run
    from .twin import twin_scenario

    frames = []
    with tempfile.TemporaryDirectory(prefix="flech-size-") as tmp:
        for k in range(seeds):
            update: dict[str, Any] = {"seed": scenario.seed + k}
            if horizon_hours is not None:
                update["horizon_hours"] = horizon_hours
            twin = twin_scenario(scenario).model_copy(update=update)
            out = Path(tmp) / f"twin-{k}"
            result = run(twin, out, progress=False)
            if not result.completed:
                raise RuntimeError(f"the twin run failed: {(result.error or '').strip().splitlines()[0]}")
            frames.append(open_run(out).table("feeder_load").assign(seed=scenario.seed + k))
    return pd.concat(frames, ignore_index=True)


def size_limits(
    feeder_load: pd.DataFrame, percentile: float = DEFAULT_PERCENTILE, round_to: float = 10.0
) -> pd.DataFrame:
    """Per feeder: the load percentile (rounded up to ``round_to`` kW), its peak and the share of steps above.

    Pure: takes any ``feeder_load``-shaped frame, so a test can hand-check it.
    """
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    rows: list[dict[str, Any]] = []
    for feeder, g in feeder_load.groupby("feeder", sort=True):
        load = g.load_kw.to_numpy(dtype=float)
        raw = float(np.percentile(load, percentile))
        limit = float(np.ceil(raw / round_to) * round_to) if round_to > 0 else raw
        rows.append(
            {
                "feeder": str(feeder),
                "limit_kw": limit,
                "percentile_kw": raw,
                "peak_kw": float(load.max()),
                "mean_kw": float(load.mean()),
                "share_above": float((load > limit).mean()),
                "current_limit_kw": float(g.limit_kw.iloc[0]) if "limit_kw" in g else float("nan"),
                "current_share_above": float((load > g.limit_kw.to_numpy()).mean())
                if "limit_kw" in g
                else float("nan"),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "feeder",
            "limit_kw",
            "percentile_kw",
            "peak_kw",
            "mean_kw",
            "share_above",
            "current_limit_kw",
            "current_share_above",
        ],
    )


def format_limits(limits: pd.DataFrame, percentile: float) -> str:
    """The sized limits as a table and as the YAML ``feeders:`` block to paste into the scenario."""
    lines = [
        f"feeder limits at the {percentile:g}th percentile of the no-flexibility twin's load (all seeds pooled):",
        f"  {'feeder':<14}{'limit kW':>10}{'peak kW':>10}{'mean kW':>10}{'above':>8}{'now kW':>10}{'above now':>11}",
    ]
    for r in limits.itertuples():
        lines.append(
            f"  {r.feeder:<14}{r.limit_kw:>10.0f}{r.peak_kw:>10.0f}{r.mean_kw:>10.0f}{r.share_above:>8.1%}"
            f"{r.current_limit_kw:>10.0f}{r.current_share_above:>11.1%}"
        )
    lines.append("feeders:")
    lines += [f"  {r.feeder}: {{limit_kw: {r.limit_kw:.0f}}}" for r in limits.itertuples()]
    return "\n".join(lines)


def cli_size_feeders(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not 0 < args.percentile < 100:
        print(f"error: --percentile must be in (0, 100), got {args.percentile}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.seeds < 1:
        print(f"error: --seeds must be >= 1, got {args.seeds}", file=sys.stderr)
        return EXIT_BAD_INPUT
    limits = size_limits(twin_feeder_load(scenario, args.hours, args.seeds), args.percentile)
    print(format_limits(limits, args.percentile))
    if args.out is not None:
        limits.to_csv(args.out, index=False)
        print(f"written to {args.out}")
    return EXIT_OK


def register_cli(sub: Any) -> None:
    p = sub.add_parser("size-feeders", help="size feeder limits at a percentile of the no-flexibility twin's load")
    p.add_argument("scenario", type=Path, help="scenario YAML file")
    p.add_argument(
        "--percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        help=f"load percentile used as the limit (default {DEFAULT_PERCENTILE:g}: ~2 %% of steps above)",
    )
    p.add_argument("--hours", type=float, help="size over this horizon instead of the scenario's")
    p.add_argument("--seeds", type=int, default=1, help="pool the twin's load over this many seeds (default 1)")
    p.add_argument("--out", type=Path, help="also write the table as CSV")
    p.set_defaults(func=cli_size_feeders)
