"""Benchmark sweep scaling: wall time of the same sweep with 1 and 2 local Dask workers.

    python benchmarks/bench_sweep.py [--scenario scenarios/sweep_example.yaml] [--seeds 4] [--workers 1 2]

Runs the scenario's sweep grid with ``--seeds`` seeds (default 4, so the
example gives 2 prices x 4 seeds = 8 runs) into a fresh directory for each
worker count, and prints the wall time, the part of it spent starting the
local cluster, runs per second and the speed-up over one worker. The runs
themselves are single-threaded, so on the 2-core machine 2 workers can at
best halve the time spent running. The load average is printed because other
work on the machine takes cores away from the workers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import yaml

from flech_sim.sweep import run_sweep

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=REPO / "scenarios" / "sweep_example.yaml")
    ap.add_argument("--seeds", type=int, default=4, help="seeds per grid point (replaces the file's seeds)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--horizon-hours", type=float, help="override the scenario's horizon (heavier runs)")
    a = ap.parse_args()
    raw = yaml.safe_load(a.scenario.read_text())
    raw.setdefault("sweep", {})["seeds"] = list(range(1, a.seeds + 1))
    if a.horizon_hours:
        raw["horizon_hours"] = a.horizon_hours
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.workers:
            result = run_sweep(raw, Path(tmp) / f"w{n}", workers=n, progress=False)
            assert result.ok, [r for r in result.rows if r["status"] != "completed"]
            results[n] = result
    runs = len(next(iter(results.values())).rows)
    print(
        f"sweep {a.scenario.name}: {runs} runs (grid x {a.seeds} seeds), horizon {raw['horizon_hours']} h; "
        f"{os.cpu_count()} CPUs, load average before/after {load_before[0]:.2f}/{os.getloadavg()[0]:.2f}"
    )
    print(
        f"  {'workers':>7}  {'wall s':>7}  {'cluster start s':>15}  {'running s':>9}  {'runs/s':>6}  "
        f"{'mean run s':>10}  {'mean CPU s':>10}  {'speed-up':>8}"
    )
    base = results[a.workers[0]]
    for n, r in results.items():
        running = r.wall_seconds - r.cluster_seconds
        base_running = base.wall_seconds - base.cluster_seconds
        mean_run = sum(row["wall_seconds"] for row in r.rows) / runs
        mean_cpu = sum(row["cpu_seconds"] for row in r.rows) / runs
        print(
            f"  {n:>7}  {r.wall_seconds:7.2f}  {r.cluster_seconds:15.2f}  {running:9.2f}"
            f"  {runs / r.wall_seconds:6.2f}  {mean_run:10.2f}  {mean_cpu:10.2f}"
            f"  {base.wall_seconds / r.wall_seconds:7.2f}x  (running only {base_running / running:.2f}x)"
        )
    print("  (mean run s / mean CPU s: wall and CPU time of one run inside its worker; wall above CPU means the")
    print("   worker waited for a core)")


if __name__ == "__main__":
    main()
