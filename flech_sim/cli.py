"""Command line: ``flech-sim run | validate | tables``."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from .constants import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUN_FAILED
from .scenario import ScenarioError, load_scenario

COMMAND_MODULES = (
    "flech_sim.regression",
    "flech_sim.sweep",
    "flech_sim.plots",
    "flech_sim.report",
    "flech_sim.docs",
    "flech_sim.bridge.serve",
    "flech_sim.sizing",
    "flech_sim.audit",
)
"""Modules adding subcommands: each has ``register_cli(subparsers)`` that sets ``func=handler(args) -> int``."""
CORE_COMMANDS = ("run", "validate", "tables")
"""Commands of this module: for them the command modules (pandas, matplotlib, ...) are not imported,
so ``flech-sim run`` starts without loading what only ``plot``, ``report`` or ``sweep`` need (issue 12)."""


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line; ``argv`` naming a core command builds only the core commands (a faster start)."""
    p = argparse.ArgumentParser(prog="flech-sim", description="Simulate the FLECH flexibility clearinghouse.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a scenario and write its results as Parquet")
    r.add_argument("scenario", type=Path, help="scenario YAML file")
    r.add_argument("--out", type=Path, help="run directory (default: results/<scenario>/seed<N>-<time>)")
    r.add_argument("--seed", type=int, help="override the scenario's seed")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--no-twin", action="store_true", help="do not run the no-flexibility twin (scenario key twin)")
    v = sub.add_parser("validate", help="check a scenario file without running it")
    v.add_argument("scenario", type=Path)
    sub.add_parser("tables", help="print the reference of every output table (Markdown)")
    if _command_of(sys.argv[1:] if argv is None else argv) in CORE_COMMANDS:
        return p
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # under construction in a parallel change
            if exc.name != name:
                raise
            continue
        module.register_cli(sub)
    return p


def _command_of(argv: list[str]) -> str | None:
    """The subcommand an argument list names (its first word), or None (``--help``, nothing)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stderr.close()
        return EXIT_OK


def _main(argv: list[str] | None = None) -> int:
    args = _parser(argv).parse_args(argv)
    if getattr(args, "func", None) is not None:
        return int(args.func(args))
    try:
        if args.command == "tables":
            from .schema import markdown_reference

            print(markdown_reference())
            return EXIT_OK
        overrides: dict[str, Any] = {}
        if getattr(args, "seed", None) is not None:
            overrides["seed"] = args.seed
        if getattr(args, "no_twin", False):
            overrides["twin"] = False
        scenario = load_scenario(args.scenario, overrides)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.command == "validate":
        print(f"{args.scenario}: valid scenario {scenario.name!r} (hash {scenario.digest()[:12]})")
        plugins = sorted(pid for pid, impl in scenario.products.items() if impl != "builtin")
        if plugins:
            print(
                f"note: product(s) {plugins} name code outside flech_sim; validate located it without running it, "
                "'run' imports (runs) it and checks it implements the product interface"
            )
        return EXIT_OK
    out = args.out
    if out is not None and out.exists() and not out.is_dir():
        print(f"error: --out {out}: exists and is not a directory", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        scenario.load_products()  # runs the plug-in code the scenario names: the user asked for it
    except ScenarioError as exc:
        print(f"error: {args.scenario}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from .simulation import RunInterrupted, run

    try:
        result = run(scenario, out, progress=not args.no_progress and sys.stderr.isatty())
    except RunInterrupted as exc:
        partial = getattr(exc, "result", None)
        where = f"; what was recorded is in {partial.out_dir} (marked incomplete)" if partial else ""
        print(f"error: run interrupted by {exc}{where}", file=sys.stderr)
        return 128 + exc.signum
    if result.manifest.get("manifest_written"):
        print(format_summary(result.summary, result.out_dir, result.completed))
    if not result.completed:
        first = (result.error or "unknown error").strip().splitlines()[0]
        if result.manifest.get("manifest_written"):
            print(f"error: the run failed: {first} (details in {result.out_dir}/manifest.json)", file=sys.stderr)
        else:
            print(f"error: the run failed and no manifest could be written: {first}", file=sys.stderr)
        return EXIT_RUN_FAILED
    return EXIT_OK


def format_summary(s: dict[str, Any], out_dir: Path, completed: bool) -> str:
    if not s:
        return f"run failed before any market opened; see {out_dir}/manifest.json"
    states = ", ".join(f"{k} {v}" for k, v in s["markets_by_state"].items()) or "none"
    return "\n".join(
        [
            f"{'completed' if completed else 'FAILED'}: {s['simulated_hours']:.0f} simulated hours",
            f"  markets opened    {s['markets_opened']} (final states: {states})",
            f"  markets cleared   {s['markets_cleared']}, settled {s['markets_settled']}",
            f"  not opened        {skipped_line(s)}",
            f"  volume procured   {s['procured_kwh']:.1f} kWh (unmet {s['unmet_kwh']:.1f} kWh)",
            f"  procurement cost  {s['procurement_cost_dkk']:.2f} DKK",
            f"  messages          {s['messages']} ({s['messages_rejected']} rejected)",
            *kpi_lines(s.get("kpis") or {}),
            f"  results           {out_dir}",
        ]
    )


def skipped_line(s: dict[str, Any]) -> str:
    """How many markets were not opened because they could not settle inside the horizon, and why."""
    n = s.get("markets_skipped_horizon", 0)
    if not n:
        return "0 (no market would have settled after the horizon)"
    words = {"delivery_after_horizon": "delivery after it", "settlement_after_horizon": "meter data after it"}
    why = ", ".join(f"{words.get(k, k)} {v}" for k, v in (s.get("markets_skipped_horizon_by_reason") or {}).items())
    src = ", ".join(f"{k} {v}" for k, v in (s.get("markets_skipped_horizon_by_source") or {}).items())
    return f"{n} (could not settle inside the horizon: {why}; opened by {src})"


def kpi_lines(k: dict[str, Any]) -> list[str]:
    """The headline KPIs (flech_sim.kpis.HEADLINES); figures needing the twin read 'n/a' without it."""

    def f(key: str, fmt: str) -> str:
        return "n/a" if k.get(key) is None else format(k[key], fmt)

    if not k:
        return []
    return [
        (
            f"  delivered/ordered {f('delivery_ratio', '.1%')}; sellers' net {f('seller_net_dkk', '.2f')} DKK "
            f"(penalties {f('penalties_dkk', '.2f')} DKK)"
        ),
        (
            f"  overload          {f('overload_kwh', '.1f')} kWh (without flexibility "
            f"{f('overload_kwh_without_flex', '.1f')} kWh); rebound ratio {f('rebound_ratio', '.2f')}; "
            f"comfort {f('comfort_degree_hours', '.1f')} K h"
        ),
    ]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
