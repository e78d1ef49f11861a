"""Benchmark the household layer: N households, D days at 15-min steps, with control.

Control pattern per day, as aggregators would drive it: a day-ahead forecast
(96 steps) at 11:00, and at 07:00 and 17:00 a 1-hour event per owner asking 20 %
of the baseline (capped at the forecast flexibility), re-allocated every step.

Usage: python benchmarks/bench_households.py [--households 10000] [--days 7] [--repeats 3]
       python benchmarks/bench_households.py --rollout 10 500 [--repeats 3]
Runs the workload with the numpy reference and with the numba kernels
(households/kernels.py) and prints both side by side: median wall time of the
repeats, forecast share, steps/s, household-steps/s, the ratio, and checks that
both gave the same outcome. The first numba call's cost (loading or compiling the
cached kernels) is printed separately. Peak traced memory comes from one extra,
traced run per engine (skip with --no-trace; tracemalloc slows numpy several-fold);
process RSS from psutil.

``--rollout N ...``: instead, the controlled roll-out of a forecast copy of N homes (one
aggregator's portfolio over its feeders, as World._forecast_committed steps it): 100 steps
under layered commitments (a long shed, short calls against it, a gap, a flip to 'consume more'), CPU time per
roll-out and per step for both engines, and a checksum of the roll-out's net power.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from datetime import datetime

import numpy as np
import psutil

from flech_sim.households import Control, HouseholdFleet, generate_weather, kernels

ENGINES: tuple[kernels.Engine, ...] = ("numpy", "numba")


def first_call_s() -> float:
    """Cost of the first numba call in this process: loading the on-disk cache, or compiling."""
    t0 = time.perf_counter()
    w = generate_weather("winter", datetime(2024, 1, 8), 2 * 96, 15, 1)
    f = HouseholdFleet.create(3, w, 1, engine="numba")
    f.forecast(4, 4)
    f.step(Control(target_kw=np.array([-0.1]), duration_steps=1))
    return time.perf_counter() - t0


def run(n_households: int, days: int, engine: kernels.Engine, seed: int = 2024) -> dict[str, float]:
    dt = 15
    steps_per_day = 1440 // dt
    n_steps = days * steps_per_day
    weather = generate_weather("winter", datetime(2024, 1, 8), n_steps + steps_per_day, dt, seed)
    fleet = HouseholdFleet.create(n_households, weather, seed, n_feeders=20, n_owners=3, engine=engine)
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
        "wall_s": wall,
        "forecast_s": t_forecast,
        "steps_per_s": n_steps / wall,
        "household_steps_per_s": n_steps * n_households / wall,
        "events": events,
        "delivered_share": delivered / requested if requested else float("nan"),
        "violations": int(fleet.violation_steps.sum()),
        "ev_unmet_kwh": float(fleet.ev_unmet_kwh.sum()),
        "t_in_sum": float(fleet.t_in.sum()),
    }


def rollout_case(n_copy: int, engine: kernels.Engine, seed: int = 7) -> tuple[HouseholdFleet, np.ndarray]:
    """A fleet of 4 owners with ``n_copy`` homes each over 5 feeders, stepped to 10:00 of a winter day;
    the homes of owner 1 and their (owner, feeder) groups."""
    weather = generate_weather("winter", datetime(2024, 1, 8), 4 * 96, 15, seed)
    n, owners, feeders = 4 * n_copy, 4, 5
    owner = np.arange(n) % owners
    feeder = (np.arange(n) // owners) % feeders
    fleet = HouseholdFleet.create(n, weather, seed, owner=owner, feeder=feeder, engine=engine)
    for _ in range(40):
        fleet.step()
    hh = np.flatnonzero(fleet.owner == 1)
    return fleet, hh


def rollout_controls(fleet: HouseholdFleet, hh: np.ndarray, steps: int = 100) -> list[Control | None]:
    """The commitments of the roll-out: a shed of 30 % of the flexibility over steps 0-39 and 48-87
    (a gap between), with a 1-hour 'consume more' call layered inside it at steps 20-23 (the net
    change stays a shed), a 1-hour 'consume more' of 30 % of the up flexibility instead of the shed
    at steps 60-63 and from step 88 to the end (no gap: the sign flips)."""
    g = (fleet.owner * 5 + fleet.feeder)[hh]
    n_groups = int(g.max()) + 1  # the copy counts groups up to its last one
    fc = fleet.forecast(8, 8, by=fleet.owner * 5 + fleet.feeder, households=hh)
    shed, up = -0.3 * fc.flex_down_kw[0, :n_groups], 0.3 * fc.flex_up_kw[0, :n_groups]
    out: list[Control | None] = []
    for s in range(steps):
        if 40 <= s < 48:
            out.append(None)
            continue
        if s >= 88:
            out.append(Control(target_kw=up, by=g, duration_steps=steps - s))
            continue
        if 60 <= s < 64:
            out.append(Control(target_kw=up, by=g, duration_steps=64 - s))
            continue
        left = (40 if s < 40 else 88) - s
        call = 20 if 20 <= s < 24 else None
        if call is None:
            out.append(Control(target_kw=shed, by=g, duration_steps=left))
        else:
            layers = np.array([shed, -0.5 * shed])
            out.append(Control(target_kw=layers, by=g, duration_steps=np.array([left, call + 4 - s])))
    assert all(c is None or np.shape(c.target_kw)[-1] == n_groups for c in out)
    return out


def rollout(n_copy: int, engine: kernels.Engine, repeats: int) -> tuple[float, float]:
    """(median CPU s of one 100-step roll-out of a fresh forecast copy, checksum of its net power)."""
    fleet, hh = rollout_case(n_copy, engine)
    ctl = rollout_controls(fleet, hh)
    times, sums = [], []
    for _ in range(repeats + 1):  # the first warms caches and kernels
        t0 = time.process_time()
        twin = fleet.forecast_copy(hh)
        total = 0.0
        for c in ctl:
            total += float(twin.step(c).net_kw.sum())
        times.append(time.process_time() - t0)
        sums.append(total)
    assert len(set(sums)) == 1, "roll-outs of the same copy differ"
    return statistics.median(times[1:]), sums[0]


def main_rollout(sizes: list[int], repeats: int) -> None:
    first_call_s()
    print(f"{'homes':>6s}{'engine':>8s}{'CPU s/roll-out':>16s}{'ms/step':>9s}  checksum of net kW")
    for n in sizes:
        for e in ENGINES:
            t, chk = rollout(n, e, repeats)
            print(f"{n:6d}{e:>8s}{t:16.4f}{t * 10:9.3f}  {chk!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--households", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-trace", action="store_true", help="skip the tracemalloc runs")
    ap.add_argument("--rollout", type=int, nargs="+", metavar="N", help="time 100-step roll-outs of N-home copies")
    args = ap.parse_args()
    if args.rollout:
        main_rollout(args.rollout, args.repeats)
        return
    proc = psutil.Process()
    first = first_call_s()
    rss0 = proc.memory_info().rss
    res: dict[str, list[dict[str, float]]] = {e: [] for e in ENGINES}
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits both
        for e in ENGINES:
            res[e].append(run(args.households, args.days, e))
    rss = proc.memory_info().rss
    peak = {e: float("nan") for e in ENGINES}
    if not args.no_trace:
        for e in ENGINES:
            tracemalloc.start()
            run(args.households, args.days, e)
            peak[e] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    med = {e: {k: statistics.median(r[k] for r in res[e]) for k in ("wall_s", "forecast_s")} for e in ENGINES}
    r0 = {e: res[e][0] for e in ENGINES}
    print(
        f"households={args.households} days={args.days} steps={args.days * 96} events={r0['numpy']['events']} "
        f"repeats={args.repeats} (medians)"
    )
    print(f"numba first call (cache load or compile) {first:.2f} s")
    print(f"{'':22s}{'numpy':>12s}{'numba':>12s}{'ratio':>9s}")
    for label, key in (("wall time s", "wall_s"), ("of which forecasts s", "forecast_s")):
        a, b = med["numpy"][key], med["numba"][key]
        print(f"{label:22s}{a:12.3f}{b:12.3f}{a / b:8.1f}x")
    steps = args.days * 96
    a, b = (steps / med[e]["wall_s"] for e in ENGINES)
    print(f"{'steps/s':22s}{a:12.0f}{b:12.0f}")
    print(f"{'household-steps/s':22s}{a * args.households:12.3g}{b * args.households:12.3g}")
    print(f"{'peak traced MiB':22s}{peak['numpy'] / 2**20:12.1f}{peak['numba'] / 2**20:12.1f}")
    print(f"process RSS      {rss / 2**20:.1f} MiB (grew {(rss - rss0) / 2**20:.1f} MiB)")
    for e in ENGINES:
        r = r0[e]
        print(
            f"{e:6s} delivered/asked {r['delivered_share']:.6f}; comfort violations {r['violations']}; "
            f"EV unmet {r['ev_unmet_kwh']:.1f} kWh"
        )
    same = all(r0["numpy"][k] == r0["numba"][k] for k in ("delivered_share", "violations", "ev_unmet_kwh", "t_in_sum"))
    print(f"outcomes identical: {same}")


if __name__ == "__main__":
    main()
