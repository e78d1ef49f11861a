"""flech_sim beside ASSUME 0.6: bids per second on the closest equivalent market, one after the other.

    python benchmarks/bench_vs_assume.py [--units 100 1000] [--days 7] [--repeats 3]
        [--operators N] [--households-per-seller 10] [--assume-output none|csv]
        [--assume-python /work/bench-venv/bin/python] [--write-scenario case.yaml]

Installs nothing. ASSUME (``pip install -e .[bench]``, best in a venv of its own, since its
pins may differ from this project's) runs in a child process of ``--assume-python`` (default:
this interpreter); flech_sim runs in a child process of this interpreter. Both children belong
to this process tree and run one after the other, alternating when repeated, so drifting load
on a shared machine hits both alike. Each child reports its own wall and CPU time, counts and
peak memory (ru_maxrss) as one JSON line; imports are timed apart and left out of the rates. The
rates are bids per wall second; bids per CPU second (user + system of the child) are printed
beside them, since on a shared machine they depend less on the neighbours' load. flech_sim's
time counts everything from building the scenario to the fingerprint: set-up (and the first
call of its compiled kernels, loaded from numba's cache), the simulation, and the end-of-run
work ASSUME's side has no counterpart of (closing the Parquet tables, the no-flexibility twin
run, the KPI tables, the fingerprint); where the run announces its phases
(``simulation.PHASE_OBSERVERS``) each one's share is printed too.

The cases, as close as the two models allow:

* ASSUME: N power-plant units (10 MW each, marginal costs 10-59 EUR/MWh) under ``--operators``
  unit operators (default N: one agent per bidder, as each flech_sim aggregator is one
  participant) and one demand unit needing half of the capacity, on an energy-only market
  (``pay_as_clear``) that opens every hour for ``--days`` days with one 1-hour product.
  Per bid: the unit's naive strategy (marginal cost, ramp), the operator's order-book message,
  the market's order validation, pay-as-clear clearing, the clearing message back, the unit's
  dispatch plan and cash flow; with ``--assume-output csv`` also its output agent writing
  orders, market results and dispatch to CSV (``none``: no database, no CSV).
  Counted: the supply orders that reach clearing (a subclass of ``PayAsClearRole`` counts them).
* flech_sim: N aggregators (sellers) of ``--households-per-seller`` simulated homes each on one
  feeder, one DSO opening an SRP market every hour for ``--days`` days (one 1-hour interval,
  delivered the next day, need 30 % of the homes' count in kW), one price step per bid; the
  horizon runs two days past the last request so every market is delivered, metered and settled.
  Per bid: the aggregator's physics forecast of its homes' flexibility and its reservation
  against earlier awards, pricing and sizing, the bid message through the endpoint's checks,
  its ack, every message persisted (Parquet), merit-order clearing, awards, dispatch of the
  homes in the household physics, metering by the DataHub, settlement, the KPI tables and the
  run's fingerprint. Counted: the ``bids`` rows of the run.
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MARKER = "BENCH_RESULT "


# --------------------------------------------------------------------------- ASSUME side (child process)


def assume_case(units: int, operators: int, days: int, output: str) -> dict[str, Any]:
    """Build and run the ASSUME case in this process; return its figures."""
    t0 = time.perf_counter()
    from datetime import datetime, timedelta

    import assume
    import pandas as pd
    from assume import World
    from assume.common.forecaster import DemandForecaster, PowerplantForecaster
    from assume.common.market_objects import MarketConfig, MarketProduct
    from assume.markets.clearing_algorithms.simple import PayAsClearRole
    from dateutil import rrule as rr

    t_import = time.perf_counter() - t0
    counts = {"orders": 0, "supply_orders": 0, "accepted_supply_orders": 0, "clearings": 0}

    class CountingPayAsClear(PayAsClearRole):  # type: ignore[misc]
        """ASSUME's own pay-as-clear; counts the orders that reach each clearing."""

        def clear(self, orderbook: list[dict[str, Any]], market_products: Any) -> Any:
            counts["clearings"] += 1
            counts["orders"] += len(orderbook)
            counts["supply_orders"] += sum(1 for o in orderbook if o["volume"] > 0)
            result = super().clear(orderbook, market_products)
            counts["accepted_supply_orders"] += sum(1 for o in result[0] if o["volume"] > 0)
            return result

    start = datetime(2019, 1, 7)
    # ASSUME opens no market later than `until` minus (first delivery + product length), 2 h here: so 24 x days
    until = start + timedelta(days=days, hours=1)
    end = start + timedelta(days=days, hours=2)  # room for the last market to clear and report
    index = pd.date_range(start, end + timedelta(days=1), freq="h")
    tmp = tempfile.TemporaryDirectory()
    t1, c1 = time.perf_counter(), time.process_time()
    world = World(export_csv_path=tmp.name if output == "csv" else "", log_level="WARNING")
    world.clearing_mechanisms["pay_as_clear_counted"] = CountingPayAsClear
    world.setup(start=start, end=end, save_frequency_hours=24 if output == "csv" else None, simulation_id="bench")
    world.add_market_operator("market_operator")
    world.add_market(
        "market_operator",
        MarketConfig(
            market_id="EOM",
            opening_hours=rr.rrule(rr.HOURLY, dtstart=start, until=until),
            opening_duration=timedelta(hours=1),
            market_mechanism="pay_as_clear_counted",
            market_products=[MarketProduct(timedelta(hours=1), 1, timedelta(hours=1))],
        ),
    )
    for k in range(operators):
        world.add_unit_operator(f"operator_{k}")
    for i in range(units):
        world.add_unit(
            f"unit_{i}",
            "power_plant",
            f"operator_{i % operators}",
            {
                "min_power": 0,
                "max_power": 10,
                "additional_cost": 10 + i % 50,
                "technology": "gas",
                "bidding_strategies": {"EOM": "powerplant_energy_naive"},
            },
            PowerplantForecaster(index, market_prices={"EOM": 35}),
        )
    world.add_unit_operator("demand_operator")
    world.add_unit(
        "demand",
        "demand",
        "demand_operator",
        {
            "min_power": 0,
            "max_power": -5 * units,
            "price": 3000,
            "technology": "demand",
            "bidding_strategies": {"EOM": "demand_energy_naive"},
        },
        DemandForecaster(index, demand=-5 * units, market_prices={"EOM": 35}),
    )
    t_build = time.perf_counter() - t1
    t2 = time.perf_counter()
    world.run()
    t_run = time.perf_counter() - t2
    cpu = time.process_time() - c1
    tmp.cleanup()
    return {
        "side": "assume",
        "version": getattr(assume, "__version__", "?"),
        "units": units,
        "operators": operators,
        "days": days,
        "output": output,
        "import_s": t_import,
        "build_s": t_build,
        "run_s": t_run,
        "wall_s": t_build + t_run,
        "cpu_s": cpu,
        "bids": counts["supply_orders"],
        **counts,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --------------------------------------------------------------------------- flech_sim side (child process)


def flech_scenario(sellers: int, households: int, days: int) -> dict[str, Any]:
    """The flech_sim scenario closest to the ASSUME case: N sellers, an hourly one-hour market for a week."""
    need_kw = round(0.3 * sellers * households, 3)
    hourly = [
        {
            "product": "SRP",
            "location": "feeder-0",
            "count": days,
            "request_time": f"{h:02d}:00",
            "gate_close_time": f"{h:02d}:30",
            "delivery_start_time": f"{h:02d}:00",
            "interval_minutes": 60,
            "need_kw": [need_kw],
            "price_cap": 3.0,
        }
        for h in range(24)
    ]
    return {
        "name": "bench_vs_assume",
        "seed": 1,
        "horizon_hours": 24 * (days + 2),  # delivery D+1, meter data D+2 06:00: every market settles
        "products": {"SRP": "builtin"},
        "feeders": {"feeder-0": {"limit_kw": 10.0 * sellers * households}},
        "households": {"record_households": 0},
        "buyers": [{"id": "dso", "role": "dso", "markets": hourly}],
        "aggregators": [
            {"id": f"seller-{i:05d}", "households": {"feeder-0": households}, "bidding": {"steps": 1}}
            for i in range(sellers)
        ],
    }


def flech_case(sellers: int, households: int, days: int) -> dict[str, Any]:
    """Build and run the flech_sim case in this process; return its figures."""
    t0 = time.perf_counter()
    import flech_sim
    from flech_sim import simulation
    from flech_sim.scenario import scenario_from_dict
    from flech_sim.simulation import run

    t_import = time.perf_counter() - t0
    marks: list[tuple[str, float, float]] = []  # (phase begun, wall, CPU), where the run announces its phases
    observers = getattr(simulation, "PHASE_OBSERVERS", None)
    if observers is not None:
        observers.append(lambda name: marks.append((name, time.perf_counter(), time.process_time())))
    t1, c1 = time.perf_counter(), time.process_time()
    scenario = scenario_from_dict(flech_scenario(sellers, households, days))
    with tempfile.TemporaryDirectory() as tmp:
        result = run(scenario, Path(tmp) / "run")
    wall, cpu = time.perf_counter() - t1, time.process_time() - c1
    marks.append(("end", time.perf_counter(), time.process_time()))
    phases: dict[str, list[float]] = {}  # phase -> [wall s, CPU s]; the twin's phases count in "study"
    for (name, w0, p0), (_, w1, p1) in itertools.pairwise(marks):
        key = "study" if name.startswith("twin: ") else name
        acc = phases.setdefault(key, [0.0, 0.0])
        acc[0], acc[1] = acc[0] + w1 - w0, acc[1] + p1 - p0
    if not result.completed:
        raise SystemExit(f"flech_sim run failed: {result.error}")
    rows = result.manifest["row_counts"]
    s = result.summary
    return {
        "side": "flech_sim",
        "version": flech_sim.__version__,
        "units": sellers,
        "households_per_seller": households,
        "days": days,
        "import_s": t_import,
        "wall_s": wall,
        "cpu_s": cpu,
        "phases": {k: {"wall_s": round(v[0], 3), "cpu_s": round(v[1], 3)} for k, v in phases.items()},
        "bids": rows.get("bids", 0),
        "awards": rows.get("awards", 0),
        "messages": s["messages"],
        "markets_cleared": s["markets_cleared"],
        "markets_settled": s["markets_settled"],
        "rows": sum(rows.values()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --------------------------------------------------------------------------- driver


def _child(python: str, args: list[str], cwd: str | None = None) -> dict[str, Any]:
    """Run one side in a child process of this one and read its figures."""
    env = dict(os.environ, TQDM_DISABLE="1")  # ASSUME's progress bar
    script = os.path.abspath(__file__)
    done = subprocess.run([python, script, *args], capture_output=True, text=True, env=env, cwd=cwd)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{python} {' '.join(args)} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(MARKER) :])  # type: ignore[no-any-return]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, nargs="+", default=[100], help="bidding units / sellers (one or more N)")
    ap.add_argument("--days", type=int, default=7, help="simulated days of hourly markets")
    ap.add_argument("--operators", type=int, help="ASSUME unit operators (default: one per unit)")
    ap.add_argument("--households-per-seller", type=int, default=10, help="flech_sim homes per aggregator")
    ap.add_argument("--assume-output", choices=["none", "csv"], default="none", help="ASSUME's output agent")
    ap.add_argument("--assume-python", default=sys.executable, help="interpreter with assume-framework installed")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each side per N (medians are printed)")
    ap.add_argument("--only", choices=["both", "assume", "flech_sim"], default="both")
    ap.add_argument("--write-scenario", type=Path, help="write the flech_sim case as YAML and stop")
    ap.add_argument("--worker", choices=["assume", "flech_sim"], help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.write_scenario:
        import yaml

        case = flech_scenario(a.units[0], a.households_per_seller, a.days)
        a.write_scenario.write_text(yaml.safe_dump(case, sort_keys=False))
        print(f"wrote {a.write_scenario}: {a.units[0]} sellers, {a.days} days of hourly SRP markets")
        return

    if a.worker == "assume":
        fig = assume_case(a.units[0], a.operators or a.units[0], a.days, a.assume_output)
        print(MARKER + json.dumps(fig), flush=True)
        return
    if a.worker == "flech_sim":
        fig = flech_case(a.units[0], a.households_per_seller, a.days)
        print(MARKER + json.dumps(fig), flush=True)
        return

    scratch = tempfile.mkdtemp(prefix="bench_vs_assume_")  # ASSUME writes assume.log into its working directory
    atexit.register(shutil.rmtree, scratch, True)
    if a.only != "flech_sim":
        probe = subprocess.run([a.assume_python, "-c", "import assume"], capture_output=True, text=True, cwd=scratch)
        if probe.returncode != 0:
            raise SystemExit(
                f"{a.assume_python} cannot import ASSUME ({probe.stderr.strip().splitlines()[-1:]}); install it with "
                "`python3.11 -m venv /work/bench-venv && /work/bench-venv/bin/pip install -e .[bench]` "
                "and pass --assume-python /work/bench-venv/bin/python"
            )
    summary = []
    for n in a.units:
        common = ["--units", str(n), "--days", str(a.days)]
        runs: dict[str, list[dict[str, Any]]] = {"assume": [], "flech_sim": []}
        for rep in range(a.repeats):
            for side in ("assume", "flech_sim"):
                if a.only not in ("both", side):
                    continue
                if side == "assume":
                    args = [*common, "--worker", "assume", "--assume-output", a.assume_output]
                    args += ["--operators", str(a.operators or n)]
                    python, cwd = a.assume_python, scratch
                else:
                    args = [*common, "--worker", "flech_sim", "--households-per-seller", str(a.households_per_seller)]
                    python, cwd = sys.executable, None
                load = _load()
                fig = _child(python, args, cwd)
                fig["load"] = load
                runs[side].append(fig)
                print(
                    f"N={n:<6} {side:9s} run {rep + 1}: {fig['bids']:>9,} bids in {fig['wall_s']:8.2f} s = "
                    f"{fig['bids'] / fig['wall_s']:9,.0f} bids/s (CPU {fig['cpu_s']:.2f} s = "
                    f"{fig['bids'] / fig['cpu_s']:,.0f} bids/CPU-s), peak {fig['peak_rss_mib']:5.0f} MiB, "
                    f"import {fig['import_s']:.1f} s (not counted), load {load}",
                    flush=True,
                )
                if fig.get("phases"):
                    print(
                        "          of which "
                        + ", ".join(
                            f"{k} {v['wall_s']:.2f} s (CPU {v['cpu_s']:.2f})" for k, v in fig["phases"].items()
                        ),
                        flush=True,
                    )
        row: dict[str, Any] = {"units": n}
        for side, rs in runs.items():
            if rs:
                row[side] = {
                    "bids": rs[0]["bids"],
                    "wall_s": _median(rs, "wall_s"),
                    "bids_per_s": statistics.median(r["bids"] / r["wall_s"] for r in rs),
                    "bids_per_cpu_s": statistics.median(r["bids"] / r["cpu_s"] for r in rs),
                    "peak_rss_mib": _median(rs, "peak_rss_mib"),
                    "repeats": len(rs),
                    "detail": rs[0],
                }
        summary.append(row)

    print(f"\n{a.days} days of hourly markets; medians of {a.repeats} run(s) per side; rates exclude imports")
    print(
        f"ASSUME: {a.assume_output} output, operators = {a.operators or 'one per unit'}; "
        f"flech_sim: {a.households_per_seller} homes per seller, everything persisted"
    )
    print(
        f"{'N':>7} | {'ASSUME bids':>11} {'wall s':>8} {'bids/s':>9} | "
        f"{'flech bids':>10} {'wall s':>8} {'bids/s':>9} {'msgs':>9} | flech/ASSUME"
    )
    for row in summary:
        asm, fl = row.get("assume"), row.get("flech_sim")
        left = f"{asm['bids']:>11,} {asm['wall_s']:>8.2f} {asm['bids_per_s']:>9,.0f}" if asm else " " * 30
        right = (
            f"{fl['bids']:>10,} {fl['wall_s']:>8.2f} {fl['bids_per_s']:>9,.0f} {fl['detail']['messages']:>9,}"
            if fl
            else " " * 39
        )
        ratio = f"{fl['bids_per_s'] / asm['bids_per_s']:.2f} x" if asm and fl else "-"
        if asm and fl:  # CPU time of each child: less at the mercy of what else the machine runs
            ratio += f" (by CPU time {fl['bids_per_cpu_s'] / asm['bids_per_cpu_s']:.2f} x)"
        print(f"{row['units']:>7} | {left} | {right} | {ratio}")
    print("JSON " + json.dumps(summary))


if __name__ == "__main__":
    main()
