"""The full-scale scenario: 10,000 households, 20 aggregators, hourly DSO markets and 15-minute mFRR.

    python benchmarks/bench_year.py [--days 365] [--households 10000] [--aggregators 20] [--feeders 20]

The DSO opens an SRP market every hour (one per feeder in turn, delivered
the next day), the TSO an mFRR market every 15 minutes. Prints wall time,
simulated days per wall second, messages, markets cleared and peak memory
(ru_maxrss of this process). The target of issue 6 is 2 minutes and 2 GiB
for 365 days.
"""

from __future__ import annotations

import argparse
import resource
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--households", type=int, default=10_000)
    ap.add_argument("--aggregators", type=int, default=20)
    ap.add_argument("--feeders", type=int, default=20)
    ap.add_argument("--out", type=Path, help="keep the run here (default: a temporary directory)")
    a = ap.parse_args()
    scenario = scenario_from_dict(year_scenario(a.days, a.households, a.aggregators, a.feeders))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run(scenario, a.out or Path(tmp) / "run", progress=True)
        wall = time.perf_counter() - t0
    assert result.completed, result.error
    s = result.summary
    print(f"scenario: {a.days} days, {a.households} households, {a.aggregators} aggregators, {a.feeders} feeders")
    print(f"wall time          {wall:9.1f} s   ({a.days / wall:.2f} simulated days per second)")
    print(f"messages           {s['messages']:9d}   ({s['messages'] / wall:.0f} per second)")
    print(f"markets cleared    {s['markets_cleared']:9d}   ({s['markets_cleared'] / wall:.1f} per second)")
    print(f"rows written       {sum(result.manifest['row_counts'].values()):9d}")
    print(f"peak memory (RSS)  {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:9.0f} MiB")


if __name__ == "__main__":
    main()
