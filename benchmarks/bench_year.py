"""The full-scale scenario: 10,000 households, 20 aggregators, hourly DSO markets and 15-minute mFRR.

    python benchmarks/bench_year.py [--days 365] [--households 10000] [--aggregators 20] [--feeders 20]
    python benchmarks/bench_year.py --days 7 30 [--extrapolate 365]

The DSO opens an SRP market every hour (one per feeder in turn, delivered
the next day), the TSO an mFRR market every 15 minutes. Prints wall and CPU
time, the cost per simulated day, messages, markets cleared, peak memory
(ru_maxrss of this process) and the load average beside them (the machine is
shared, so figures drift with it). The target of issue 12 is 2 minutes and
2 GiB for 365 days.

The peak memory is also given per phase of the run (``simulation.PHASE_OBSERVERS``):
set-up, the simulation itself, finalising and closing the tables, the twin's own
phases, the study tables, the fingerprint. On Linux each phase's figure is its
own peak RSS (the kernel's high-water mark, reset at each phase through
``/proc/self/clear_refs``); elsewhere it is the process's peak so far at the
phase's end (``cumulative``).

With several ``--days`` each horizon runs in a fresh child process (so each
peak memory is its own) one after the other, and a line ``wall = a + b x days``
is fitted through them: ``b`` is the cost per simulated day, and
``--extrapolate`` prints the line's figure for a longer horizon, marked as
extrapolated, not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flech_sim import simulation
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run


def year_scenario(days: int, households: int, aggregators: int, feeders: int) -> dict:  # type: ignore[type-arg]
    names = [f"feeder-{i:02d}" for i in range(feeders)]
    per = households // (aggregators * feeders)
    hourly = [
        {
            "product": "SRP",
            "location": names[h % feeders],
            "count": days,
            "request_time": f"{h:02d}:00",
            "gate_close_time": f"{h:02d}:30",
            "delivery_start_time": f"{h:02d}:00",
            "interval_minutes": 60,
            "need_kw": [30.0],
            "price_cap": 3.0,
        }
        for h in range(24)
    ]
    return {
        "name": "bench_year",
        "seed": 1,
        "horizon_hours": 24 * days,
        "products": {"SRP": "builtin", "mFRR": "builtin"},
        "feeders": {f: {"limit_kw": 1000} for f in names},
        "households": {"record_households": 1},
        "buyers": [
            {"id": "dso", "role": "dso", "markets": hourly},
            {
                "id": "tso",
                "role": "tso",
                "balancing": {"product": "mFRR", "imbalance": {"sd_kw": 1500}, "params": {"min_bid_kw": 100}},
            },
        ],
        "aggregators": [{"id": f"agg-{j:02d}", "households": {f: per for f in names}} for j in range(aggregators)],
    }


class PhaseMemory:
    """Peak RSS and wall time of each phase of a run, as :data:`flech_sim.simulation.PHASE_OBSERVERS` announce
    them. A phase announced again (the run's study after its twin) adds to its first entry."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self.own_peaks = _reset_peak()  # False: the kernel does not let the peak be reset here
        self._current: str | None = None
        self._since = 0.0

    def __call__(self, name: str) -> None:
        self._close()
        self._current, self._since = name, time.perf_counter()

    def _close(self) -> None:
        if self._current is None:
            return
        peak = _vm_kib("VmHWM") / 1024 if self.own_peaks else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        entry = self.phases.setdefault(self._current, {"wall_s": 0.0, "peak_rss_mib": 0.0})
        entry["wall_s"] += time.perf_counter() - self._since
        entry["peak_rss_mib"] = max(entry["peak_rss_mib"], peak)
        entry["rss_after_mib"] = _vm_kib("VmRSS") / 1024
        if self.own_peaks:
            _reset_peak()

    def finish(self) -> dict[str, dict[str, float]]:
        self._close()
        self._current = None
        return self.phases


def _vm_kib(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _vm_kib("VmHWM") > 0


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def run_one(days: int, households: int, aggregators: int, feeders: int, out: Path | None) -> dict:  # type: ignore[type-arg]
    """One run in this process; returns its figures (also printed)."""
    scenario = scenario_from_dict(year_scenario(days, households, aggregators, feeders))
    load_before = _load()
    before_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # imports, before the peak is reset
    memory = PhaseMemory()
    simulation.PHASE_OBSERVERS.append(memory)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cpu0, t0 = time.process_time(), time.perf_counter()
            result = run(scenario, out or Path(tmp) / "run", progress=sys.stderr.isatty())
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        simulation.PHASE_OBSERVERS.remove(memory)
    phases = memory.finish()
    assert result.completed, result.error
    s = result.summary
    fig = {
        "days": days,
        "households": households,
        "wall_s": wall,
        "cpu_s": cpu,
        "messages": s["messages"],
        "markets_cleared": s["markets_cleared"],
        "rows": sum(result.manifest["row_counts"].values()),
        "peak_rss_mib": max([before_mib] + [p["peak_rss_mib"] for p in phases.values()]),
        "phases": phases,
        "fingerprint": result.manifest.get("fingerprint"),
        "load_before": load_before,
        "load_after": _load(),
    }
    print(f"scenario: {days} days, {households} households, {aggregators} aggregators, {feeders} feeders")
    print(f"wall time          {wall:9.1f} s   ({days / wall:.2f} simulated days per second)")
    print(f"CPU time           {cpu:9.1f} s   ({cpu / days:.2f} s per simulated day, start-up included)")
    print(f"messages           {s['messages']:9d}   ({s['messages'] / wall:.0f} per second)")
    print(f"markets cleared    {s['markets_cleared']:9d}   ({s['markets_cleared'] / wall:.1f} per second)")
    print(f"rows written       {fig['rows']:9d}")
    print(f"peak memory (RSS)  {fig['peak_rss_mib']:9.0f} MiB")
    kind = "own peak" if memory.own_peaks else "cumulative peak"
    for name, p in phases.items():
        peak, after = p["peak_rss_mib"], p["rss_after_mib"]
        print(f"  {name:22s} {peak:7.0f} MiB {kind}, {after:6.0f} MiB after, {p['wall_s']:7.1f} s")
    print(f"fingerprint        {fig['fingerprint']}")
    print(f"machine            {load_before} before, {fig['load_after']} after")
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, nargs="+", default=[365], help="one or more horizons (several: fit a line)")
    ap.add_argument("--households", type=int, default=10_000)
    ap.add_argument("--aggregators", type=int, default=20)
    ap.add_argument("--feeders", type=int, default=20)
    ap.add_argument("--out", type=Path, help="keep the run here (default: a temporary directory; one horizon only)")
    ap.add_argument("--extrapolate", type=int, default=365, help="days to extrapolate the fitted line to")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    a = ap.parse_args()
    if len(a.days) == 1:
        fig = run_one(a.days[0], a.households, a.aggregators, a.feeders, a.out)
        if a.json:
            print("JSON " + json.dumps(fig))
        return
    figs = []
    for days in a.days:  # a fresh process each: peak memory and start-up are each run's own
        cmd = [sys.executable, __file__, "--days", str(days), "--households", str(a.households)]
        cmd += ["--aggregators", str(a.aggregators), "--feeders", str(a.feeders), "--json"]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        print("\n".join(ln for ln in done.stdout.splitlines() if not ln.startswith("JSON ")), flush=True)
        figs.append(json.loads(next(ln for ln in done.stdout.splitlines() if ln.startswith("JSON "))[5:]))
    import numpy as np

    x = np.array([f["days"] for f in figs], dtype=float)
    for key in ("wall_s", "cpu_s"):
        b, c = np.polyfit(x, [f[key] for f in figs], 1)
        print(
            f"fit {key[:-2]:4s}: {c:.1f} s + {b:.2f} s per simulated day -> {a.extrapolate} days "
            f"~ {c + b * a.extrapolate:.0f} s (extrapolated, not measured)"
        )


if __name__ == "__main__":
    main()
