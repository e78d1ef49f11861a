"""Benchmark a whole run: messages/s and markets cleared/s through the full core, and peak memory.

    python benchmarks/bench_run.py [--days 30] [--feeders 10] [--aggregators 10]

Builds a larger version of the default scenario in memory (one DSO per
feeder opening a daily SRP market, every aggregator on every feeder),
runs it, and prints the figures. Peak memory is the process's maximum
resident set size (ru_maxrss).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run


def big_scenario(days: int, feeders: int, aggregators: int, households: int, block: bool) -> dict:  # type: ignore[type-arg]
    names = [f"feeder-{i:02d}" for i in range(feeders)]
    return {
        "name": "bench",
        "seed": 1,
        "horizon_hours": 24 * (days + 2),
        "feeders": {f: {"limit_kw": 1000} for f in names},
        "buyers": [
            {
                "id": f"dso-{f}",
                "markets": [
                    {
                        "product": "SRP",
                        "location": f,
                        "count": days,
                        "need_kw": [40.0, 60.0, 60.0, 40.0],
                        "price_cap": 3.0,
                    }
                ],
            }
            for f in names
        ],
        "aggregators": [
            {
                "id": f"agg-{j:02d}",
                "households": {f: households for f in names},
                "bidding": {"steps": 4, "block_last_step": block},
            }
            for j in range(aggregators)
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--feeders", type=int, default=10)
    ap.add_argument("--aggregators", type=int, default=10)
    ap.add_argument("--households", type=int, default=100, help="per aggregator and feeder")
    ap.add_argument("--block", action="store_true", help="aggregators offer block bids (MILP clearing)")
    a = ap.parse_args()
    scenario = scenario_from_dict(big_scenario(a.days, a.feeders, a.aggregators, a.households, a.block))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run(scenario, Path(tmp) / "run")
        wall = time.perf_counter() - t0
    assert result.completed, result.error
    s = result.summary
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"scenario: {a.days} days x {a.feeders} feeders x {a.aggregators} aggregators "
        f"({'block' if a.block else 'divisible'} bids)"
    )
    print(f"wall time          {wall:8.2f} s")
    print(f"messages           {s['messages']:8d}  -> {s['messages'] / wall:10.0f} messages/s")
    print(f"markets cleared    {s['markets_cleared']:8d}  -> {s['markets_cleared'] / wall:10.1f} markets/s")
    print(f"rows written       {sum(result.manifest['row_counts'].values()):8d}")
    print(f"peak memory (RSS)  {peak_mb:8.0f} MiB")


if __name__ == "__main__":
    main()
