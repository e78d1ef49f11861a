"""The full-scale scenario: 10,000 households, 20 aggregators, hourly DSO markets and 15-minute mFRR.

    python benchmarks/bench_year.py [--days 365] [--households 10000] [--aggregators 20] [--feeders 20]
    python benchmarks/bench_year.py --days 7 30 [--extrapolate 365]

The DSO opens an SRP market every hour (one per feeder in turn, delivered
the next day), the TSO an mFRR market every 15 minutes. Prints wall and CPU
time, the cost per simulated day, messages, markets cleared, peak memory
(ru_maxrss of this process) and the load average beside them (the machine is
shared, so figures drift with it). The target of issue 12 is 2 minutes and
2 GiB for 365 days.

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


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def run_one(days: int, households: int, aggregators: int, feeders: int, out: Path | None) -> dict:  # type: ignore[type-arg]
    """One run in this process; returns its figures (also printed)."""
    scenario = scenario_from_dict(year_scenario(days, households, aggregators, feeders))
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = run(scenario, out or Path(tmp) / "run", progress=sys.stderr.isatty())
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
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
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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
