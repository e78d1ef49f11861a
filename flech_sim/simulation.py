"""Wires one run: SimPy clock, FLECH core (endpoint, dispatcher, products, persistor) and agents.

The order of construction is fixed (participants in ID order, products in
ID order), and all randomness comes from one ``SeedSequence`` split per
portfolio, so the same scenario and seed give identical tables.
"""

from __future__ import annotations

import gc
import platform as _platform
import time
import traceback
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from . import __version__
from .agents.aggregator import Aggregator
from .agents.buyers import Buyer
from .agents.data_provider import DataProvider, published_points
from .clearing import SolverOptions
from .coordination import Coordinator
from .dispatcher import Dispatcher
from .fingerprint import fingerprint
from .endpoint import Endpoint
from .households import child_seed
from .metering import METER_PRODUCT_ID, MeterService
from .persistor import Persistor
from .prices import generate_spot, load_spot_csv
from .products.base import MarketState, PlatformServices, Product
from .registry import resolve_product
from .scenario import Scenario
from .world import World

RESULT_PACKAGES = ("simpy", "numpy", "pandas", "pyomo", "highspy", "pyarrow", "pydantic")


@dataclass
class RunResult:
    out_dir: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    completed: bool
    error: str | None = None


@dataclass
class Core:
    """The FLECH core of one run (seed: Figure 3)."""

    env: simpy.Environment
    persistor: Persistor
    endpoint: Endpoint
    dispatcher: Dispatcher
    products: dict[str, Product]
    meter: MeterService


def build_core(env: simpy.Environment, persistor: Persistor, scenario: Scenario,
               sellers: dict[str, frozenset[str]], metering_points: frozenset[str]) -> Core:
    """Endpoint -> dispatcher -> products, with meter data routed like a product."""
    endpoint = Endpoint(env, persistor)
    dispatcher = Dispatcher(endpoint.send)
    endpoint.route = dispatcher.route
    meter = MeterService(env, persistor, metering_points)
    dispatcher.register(METER_PRODUCT_ID, meter)  # type: ignore[arg-type]
    by_location: dict[str, list[str]] = {}
    for s in sorted(sellers):
        for loc in sellers[s]:
            by_location.setdefault(loc, []).append(s)
    everyone = sorted(sellers)

    def sellers_at(location: str) -> list[str]:
        return everyone if location == "*" else by_location.get(location, [])

    services = PlatformServices(
        env=env, persistor=persistor, reply=dispatcher.reply, new_msg_id=endpoint.new_msg_id,
        sellers_at=sellers_at, meter=meter,
        solver=SolverOptions(method=scenario.solver.method, time_limit_s=scenario.solver.time_limit_s,
                             mip_gap=scenario.solver.mip_gap, seed=scenario.seed),
        settlement=scenario.settlement, locations=frozenset(scenario.feeders),
        is_participant=lambda pid: endpoint.role_of(pid) is not None,
    )
    products: dict[str, Product] = {}
    for pid in sorted(scenario.products):
        products[pid] = resolve_product(pid, scenario.products[pid])(pid, services)
        dispatcher.register(pid, products[pid])
    services.screen = Coordinator(scenario.coordination, persistor, products, endpoint.role_of, sellers).screen
    return Core(env, persistor, endpoint, dispatcher, products, meter)


def default_run_dir(scenario: Scenario, root: Path = Path("results")) -> Path:
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    return root / scenario.name / f"seed{scenario.seed}-{stamp}"


def run(scenario: Scenario, out_dir: Path | None = None, progress: bool = False) -> RunResult:
    """Run a validated scenario to its horizon and write every table and the manifest.

    A failure inside the run is caught here: what was recorded is flushed,
    the manifest says ``completed: false`` with the error, and the result
    carries it (the CLI turns it into a non-zero exit).
    """
    out_dir = Path(out_dir) if out_dir else default_run_dir(scenario)
    started = time.perf_counter()
    started_at = datetime.now().isoformat(timespec="seconds")
    env = simpy.Environment()
    persistor = Persistor(out_dir, scenario.start)
    error: str | None = None
    core: Core | None = None
    agents: dict[str, Any] = {}
    try:
        core, agents = _build(env, persistor, scenario)
        with relaxed_gc():
            _run_clock(env, scenario, progress)
    except Exception as exc:  # recorded, flushed and reported: never a silent crash
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    finally:
        if core is not None:
            for product in core.products.values():
                product.finalize()
        if "_world" in agents:
            agents["_world"].finalize()
        persistor.close()
    summary = summarize(core, scenario, env) if core else {}
    fp = None
    if error is None:
        try:
            fp = fingerprint(out_dir)
        except Exception as exc:  # the tables are written; say why there is no fingerprint
            error = f"fingerprint failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    manifest = {
        "flech_sim_version": __version__,
        "scenario_name": scenario.name,
        "scenario_hash": scenario.digest(),
        "scenario": scenario.model_dump(mode="json"),
        "seed": scenario.seed,
        "run_dir": str(out_dir),
        "started_at": started_at,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "simulated_until_minute": int(env.now),
        "completed": error is None,
        "error": error,
        "fingerprint": fp,
        "python": _platform.python_version(),
        "packages": {p: _version(p) for p in RESULT_PACKAGES},
        "summary": summary,
    }
    persistor.write_manifest(manifest)
    manifest["row_counts"] = dict(persistor.row_counts)
    return RunResult(out_dir, manifest, summary, error is None, error)


@contextmanager
def relaxed_gc() -> Iterator[None]:
    """Millions of short-lived messages: at the default young-generation threshold (700) the
    cyclic collector runs constantly and finds nothing (measured: ~4 us a message). The
    thresholds are restored afterwards."""
    old = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _build(env: simpy.Environment, persistor: Persistor, scenario: Scenario) -> tuple[Core, dict[str, Any]]:
    """Physical world, platform core and agents, always in the same order (determinism)."""
    root = np.random.SeedSequence(scenario.seed)
    world = World(env, scenario, child_seed(root, 1), persistor)
    n_steps = scenario.horizon_minutes // world.dt + 2 * world.steps_per_day
    spot = (load_spot_csv(scenario.spot.csv, scenario.start, n_steps, world.dt) if scenario.spot.csv
            else generate_spot(scenario.start, n_steps, world.dt, child_seed(root, 2), scenario.spot.mean_eur_mwh))
    sellers = {a.id: frozenset(world.feeders_of(a.id)) for a in scenario.aggregators}
    dp = scenario.data_provider
    core = build_core(env, persistor, scenario, sellers, frozenset(published_points(world, dp)))
    agents: dict[str, Any] = {}
    buyer_seeds = child_seed(root, 4)
    for i, b in enumerate(sorted(scenario.buyers, key=lambda b: b.id)):
        agents[b.id] = Buyer(env, core.endpoint.connect(b.id, b.role), b, world, scenario.horizon_minutes,
                             child_seed(buyer_seeds, i))
    for a in sorted(scenario.aggregators, key=lambda a: a.id):
        agents[a.id] = Aggregator(env, core.endpoint.connect(a.id, "aggregator"), a, world, spot, persistor)
    agents[dp.id] = DataProvider(env, core.endpoint.connect(dp.id, "data_provider"), dp, world, child_seed(root, 3))
    world.start()
    for agent_id in sorted(agents):
        agents[agent_id].start()
    agents["_world"] = world
    return core, agents


def _run_clock(env: simpy.Environment, scenario: Scenario, progress: bool) -> None:
    horizon = scenario.horizon_minutes
    if not progress:
        env.run(until=horizon)
        return
    from tqdm import tqdm

    with tqdm(total=horizon // 60, unit="sim h", desc=scenario.name, leave=False) as bar:
        def tick() -> Generator[simpy.Event, Any, None]:
            while True:
                yield env.timeout(60)
                bar.update(1)

        env.process(tick())
        env.run(until=horizon)


def summarize(core: Core, scenario: Scenario, env: simpy.Environment) -> dict[str, Any]:
    """Headline figures of a run (also stored in the manifest)."""
    states: dict[str, int] = {}
    procured_kwh = unmet_kwh = cost = 0.0
    for product in core.products.values():
        for m in product.markets.values():
            states[str(m.state)] = states.get(str(m.state), 0) + 1
            procured_kwh += m.procured_kwh
            unmet_kwh += m.unmet_kwh
            cost += m.cost_dkk
    opened = sum(states.values())
    cleared = sum(states.get(s, 0) for s in (MarketState.CLEARED, MarketState.DELIVERED, MarketState.SETTLED))
    return {
        "markets_opened": opened,
        "markets_cleared": cleared,
        "markets_settled": states.get(MarketState.SETTLED, 0),
        "markets_by_state": dict(sorted(states.items())),
        "procured_kwh": round(procured_kwh, 6),
        "unmet_kwh": round(unmet_kwh, 6),
        "procurement_cost_dkk": round(cost, 6),
        "messages": core.endpoint.counts["in"] + core.endpoint.counts["out"],
        "messages_rejected": core.endpoint.counts["rejected"],
        "simulated_hours": env.now / 60,
    }


def _version(pkg: str) -> str | None:
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None
