"""Benchmark the household layer: N households, D days at 15-min steps, with control.

Control pattern per day, as aggregators would drive it: a day-ahead forecast
(96 steps) at 11:00, and at 07:00 and 17:00 a 1-hour event per owner asking 20 %
of the baseline (capped at the forecast flexibility), re-allocated every step.

Usage: python benchmarks/bench_households.py [--households 10000] [--days 7]
Prints wall time, steps/s, household-steps/s and peak memory. Timing comes from
an untraced run (tracemalloc slows numpy allocation several-fold); peak traced
memory from a second, traced run of the same workload (skip with --no-trace);
process RSS from psutil.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from datetime import datetime

import numpy as np
import psutil

from flech_sim.households import Control, HouseholdFleet, generate_weather


def run(n_households: int, days: int, seed: int = 2024) -> dict[str, float]:
    dt = 15
    steps_per_day = 1440 // dt
    n_steps = days * steps_per_day
    weather = generate_weather("winter", datetime(2024, 1, 8), n_steps + steps_per_day, dt, seed)
    fleet = HouseholdFleet.create(n_households, weather, seed, n_feeders=20, n_owners=3)
    event_len, events = 4, 0
    t0 = time.perf_counter()
    t_forecast = 0.0
    target = baseline = None
    left = 0
    delivered = requested = 0.0
    for s in range(n_steps):
        slot = s % steps_per_day
        if slot == 11 * 4:
            tf = time.perf_counter()
            fleet.forecast(steps_per_day, event_len)
            t_forecast += time.perf_counter() - tf
        if slot in (7 * 4, 17 * 4):
            tf = time.perf_counter()
            fc = fleet.forecast(event_len, event_len)
            t_forecast += time.perf_counter() - tf
            target = -np.minimum(0.2 * fc.baseline_kw[0], fc.flex_down_kw[0])
            baseline, left, events = fc.baseline_kw, event_len, events + 1
        if left > 0:
            r = fleet.step(Control(target_kw=target, duration_steps=left))
            requested += float(-target.sum())
            # Delivered vs the forecast baseline (what a verifier would see), not vs the plan.
            delivered += float((baseline[event_len - left] - r.by_owner_kw).sum())
            left -= 1
        else:
            fleet.step()
    wall = time.perf_counter() - t0
    return {
        "wall_s": wall, "forecast_s": t_forecast, "steps_per_s": n_steps / wall,
        "household_steps_per_s": n_steps * n_households / wall, "events": events,
        "delivered_share": delivered / requested if requested else float("nan"),
        "violations": int(fleet.violation_steps.sum()), "ev_unmet_kwh": float(fleet.ev_unmet_kwh.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run")
    args = ap.parse_args()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    res = run(args.households, args.days)
    rss = proc.memory_info().rss
    peak = float("nan")
    if not args.no_trace:
        tracemalloc.start()
        run(args.households, args.days)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    print(f"households={args.households} days={args.days} steps={args.days * 96} events={res['events']}")
    print(f"wall time        {res['wall_s']:.2f} s  (of which forecasts {res['forecast_s']:.2f} s)")
    print(f"steps/s          {res['steps_per_s']:.0f}")
    print(f"household-steps/s {res['household_steps_per_s']:.3g}")
    print(f"peak traced mem  {peak / 2**20:.1f} MiB (tracemalloc, separate run)")
    print(f"process RSS      {rss / 2**20:.1f} MiB (grew {(rss - rss0) / 2**20:.1f} MiB)")
    print(f"delivered/asked  {res['delivered_share']:.3f}; comfort violations {res['violations']}; "
          f"EV unmet {res['ev_unmet_kwh']:.1f} kWh")


if __name__ == "__main__":
    main()
