"""Wires one run: SimPy clock, FLECH core (endpoint, dispatcher, products, persistor) and agents.

The order of construction is fixed (participants in ID order, products in
ID order), and all randomness comes from one ``SeedSequence`` split per
portfolio, so the same scenario and seed give identical tables.
"""

from __future__ import annotations

import gc
import platform as _platform
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from . import __version__
from .agents.aggregator import FLEX_FORECASTS, Aggregator
from .agents.base import AGENT_ERRORS, Agent, Recorder
from .agents.buyers import Buyer, meter_data_due
from .agents.data_provider import DataProvider
from .clearing import SolverOptions
from .coordination import Coordinator
from .dispatcher import Dispatcher
from .endpoint import Connection, Endpoint
from .events import EventBus
from .fingerprint import fingerprint
from .households import child_seed
from .imbalance_price import ImbalancePrices, scenario_imbalance_prices
from .inputs import record_inputs
from .messages import MarketRequest, Rejected
from .metering import METER_PRODUCT_ID, MeterService
from .persistor import Persistor
from .prices import generate_spot, load_spot_csv
from .products.base import Market, MarketState, PlatformServices, Product
from .registry import resolve_product
from .scenario import DataProviderConfig, Scenario
from .twin import finish_study
from .world import GridView, World

if TYPE_CHECKING:
    from .bridge import Transport

PHASE_OBSERVERS: list[Callable[[str], None]] = []
"""Called with the name of each phase of a run as it begins (``set-up``, ``simulation``, ``finalize``,
``close``, ``study``, ``fingerprint``, ``manifest``), e.g. by ``benchmarks/bench_year.py`` for its per-phase memory
report. A run inside a run (the study's no-flexibility twin) names its phases ``twin: ...``; when it
returns, the outer run announces its current phase again."""
_depth = 0


def phase(name: str) -> None:
    """Announce that a phase of the current run begins (to :data:`PHASE_OBSERVERS`)."""
    if PHASE_OBSERVERS:
        label = name if _depth <= 1 else f"twin: {name}"
        for observe in PHASE_OBSERVERS:
            observe(label)


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
    events: EventBus
    coordinator: Coordinator
    external: dict[str, Connection] = field(default_factory=dict)
    """Connections of participants taking part from outside (``transport.external``), not simulated."""


@dataclass(frozen=True)
class Wiring:
    """Everything one run is made of, built in one place (:func:`_build`): the platform core, the
    physical world, and the participants; each participant was handed only its own view of the world."""

    core: Core
    world: World
    agents: Mapping[str, Agent]


def build_core(
    env: simpy.Environment,
    persistor: Persistor,
    scenario: Scenario,
    sellers: dict[str, frozenset[str]],
    metering_points: frozenset[str],
    imbalance_prices: ImbalancePrices | None = None,
    grid: GridView | None = None,
) -> Core:
    """Endpoint -> dispatcher -> products, with meter data routed like a product; the coordinator
    hears of cleared markets on the event bus that the products publish to. ``imbalance_prices``
    (what the 'imbalance' settlement rule settles at): None = made from the scenario."""
    endpoint = Endpoint(env, persistor)
    dispatcher = Dispatcher(endpoint.send)
    endpoint.route = dispatcher.route
    meter = MeterService(env, persistor, metering_points)
    dispatcher.register(METER_PRODUCT_ID, meter)
    by_location: dict[str, list[str]] = {}
    for s in sorted(sellers):
        for loc in sellers[s]:
            by_location.setdefault(loc, []).append(s)
    everyone = sorted(sellers)

    def sellers_at(location: str) -> list[str]:
        return everyone if location == "*" else by_location.get(location, [])

    events = EventBus()
    coordinator = Coordinator(
        scenario.coordination,
        Recorder(persistor, frozenset({"conflicts"})),
        events,
        endpoint.role_of,
        sellers,
        grid=grid,  # the DSOs' grid data the platform screens TSO bids against
        margin=scenario.coordination_margin,
    )
    services = PlatformServices(
        env=env,
        persistor=persistor,
        reply=dispatcher.reply,
        new_msg_id=endpoint.new_msg_id,
        sellers_at=sellers_at,
        meter=meter,
        screen=coordinator.screen,
        events=events,
        solver=SolverOptions(
            method=scenario.solver.method,
            time_limit_s=scenario.solver.time_limit_s,
            mip_gap=scenario.solver.mip_gap,
            seed=scenario.seed,
        ),
        settlement=scenario.settlement,
        locations=frozenset(scenario.feeders),
        is_participant=lambda pid: endpoint.role_of(pid) is not None,
        imbalance_prices=imbalance_prices if imbalance_prices is not None else scenario_imbalance_prices(scenario),
    )
    products: dict[str, Product] = {}
    for pid in sorted(scenario.products):
        products[pid] = resolve_product(pid, scenario.products[pid])(pid, services)
        dispatcher.register(pid, products[pid])
    return Core(env, persistor, endpoint, dispatcher, products, meter, events, coordinator)


def default_run_dir(scenario: Scenario, root: Path = Path("results")) -> Path:
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    return root / scenario.name / f"seed{scenario.seed}-{stamp}"


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during a run; raised after the run's records were flushed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)  # args must rebuild it: SimPy re-raises a process's exception as type(e)(*e.args)
        self.signum = int(signum)

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


def run(
    scenario: Scenario, out_dir: Path | None = None, progress: bool = False, transport: Transport | None = None
) -> RunResult:
    """Run a validated scenario to its horizon and write every table and the manifest.

    The manifest is written first (``completed: false, status: running``) and kept current as
    tables are flushed, so even a run killed outright leaves a directory that says how far it
    got. A failure inside the run is caught here: what was recorded is flushed, the manifest
    says ``completed: false`` with the error, and the result carries it (the CLI turns it into
    a non-zero exit). SIGTERM and SIGINT are handled the same way -- flushed, recorded with
    ``status: interrupted`` -- and then :class:`RunInterrupted` (a KeyboardInterrupt) is raised.

    ``transport`` (:class:`flech_sim.bridge.Transport`): participants in ``transport.external`` are
    connected but not simulated; the transport makes the environment, carries their traffic and runs
    the clock. None: everything in-process, the fast path.
    """
    global _depth
    _depth += 1
    try:
        return _run(scenario, out_dir, progress, transport)
    finally:
        _depth -= 1


def _run(scenario: Scenario, out_dir: Path | None, progress: bool, transport: Transport | None) -> RunResult:
    """:func:`run` itself (``run`` keeps count of runs inside runs for :func:`phase`)."""
    out_dir = Path(out_dir) if out_dir else default_run_dir(scenario)
    started = time.perf_counter()
    started_at = datetime.now().isoformat(timespec="seconds")
    env = transport.environment() if transport is not None else simpy.Environment()
    error: str | None = None
    interrupted: RunInterrupted | None = None
    core: Core | None = None
    wiring: Wiring | None = None
    manifest: dict[str, Any] = {
        "flech_sim_version": __version__,
        "scenario_name": scenario.name,
        "scenario_hash": scenario.digest(),
        "scenario": scenario.model_dump(mode="json"),
        "seed": scenario.seed,
        "run_dir": str(out_dir),
        "started_at": started_at,
        "horizon_minute": scenario.horizon_minutes,
        "python": _platform.python_version(),
        "packages": {p: _version(p) for p in RESULT_PACKAGES},
    }

    def progress_manifest(until: int | None = None) -> None:
        """The manifest of a run in progress; ``until``: the simulated minute once the clock is gone."""
        assert persistor is not None
        persistor.write_manifest(
            manifest
            | {
                "status": "running",
                "completed": False,
                "error": None,
                "fingerprint": None,
                "simulated_until_minute": int(env.now) if until is None else until,
                "wall_seconds": round(time.perf_counter() - started, 3),
            }
        )

    persistor: Persistor | None = None
    phase("set-up")
    with _signals_raise() as signals:
        try:
            persistor = Persistor(out_dir, scenario.start)
            progress_manifest()
            persistor.on_publish = progress_manifest
            wiring = _build(env, persistor, scenario, transport.external if transport else frozenset())
            core = wiring.core
            phase("simulation")
            with relaxed_gc():
                if transport is not None:
                    transport.attach(core)
                    transport.run_clock(env, scenario.horizon_minutes)
                else:
                    _run_clock(env, scenario, progress)
        except RunInterrupted as exc:
            interrupted = exc
            error = f"interrupted by {exc} at simulated minute {int(env.now)}"
        except Exception as exc:  # noqa: BLE001 -- recorded, flushed and reported: never a silent crash
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        finally:
            signals.defer()  # a second signal must not cut the flushing short
            phase("finalize")
            write_errors = _finalize(wiring, persistor, scenario if error is None else None)
            summary = summarize(core, scenario, env) if core else {}
            if summary and wiring is not None:  # markets a buyer did not open: they could not settle in the horizon
                summary |= skipped_summary(wiring.agents.values())
            simulated_until = int(env.now)
            if transport is None:  # (a transport keeps its own references to the core: nothing to gain there)
                # The run's objects -- world, agents, products and their markets, the clock's pending events --
                # are not needed any more: released here, closing the tables, the twin and the study tables do
                # not peak on top of them (measured: 10,000 homes x 7 days, about 400 MiB).
                del wiring, core, env
                if persistor is not None:
                    persistor.on_publish = partial(progress_manifest, simulated_until)
                gc.collect()
            if persistor is not None:
                phase("close")
                write_errors |= persistor.close()
    if write_errors:
        listed = ", ".join(f"{t} ({why})" for t, why in sorted(write_errors.items()))
        error = f"could not write table(s): {listed}" + (f"\n{error}" if error else "")
    study: dict[str, Any] = {}
    if error is None and persistor is not None:  # the twin and the KPI tables (flech_sim.twin, flech_sim.kpis)
        phase("study")
        try:
            study = finish_study(scenario, out_dir, persistor.row_counts)
            summary["kpis"] = study["kpis"]
        except Exception as exc:  # noqa: BLE001 -- recorded in the manifest like any run failure
            error = f"study tables failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    fp = None
    if error is None:
        phase("fingerprint")
        try:
            fp = fingerprint(out_dir)
        except Exception as exc:  # noqa: BLE001 -- the tables are written; say why there is no fingerprint
            error = f"fingerprint failed: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    if transport is not None:  # who took part from outside, how, and what the transport refused
        manifest["transport"] = transport.describe()
    manifest |= {
        "status": "completed" if error is None else "interrupted" if interrupted else "failed",
        "wall_seconds": round(time.perf_counter() - started, 3),
        "simulated_until_minute": simulated_until,
        "completed": error is None,
        "error": error,
        "write_errors": write_errors,
        "fingerprint": fp,
        "summary": summary,
        "twin": study.get("twin"),
    }
    phase("manifest")
    manifest_written = False
    if persistor is not None:
        try:
            persistor.write_manifest(manifest)
            manifest_written = True
        except OSError as exc:
            error = f"could not write {out_dir}/manifest.json: {exc}" + (f"\n{error}" if error else "")
            manifest["completed"], manifest["error"] = False, error
        manifest["row_counts"] = dict(persistor.row_counts)
    manifest["manifest_written"] = manifest_written
    if interrupted is None and signals.pending is not None:  # arrived while finishing: honour it now
        interrupted = RunInterrupted(signals.pending)
    if interrupted is not None:
        interrupted.result = RunResult(out_dir, manifest, summary, False, error)  # type: ignore[attr-defined]
        raise interrupted
    return RunResult(out_dir, manifest, summary, error is None, error)


def _finalize(wiring: Wiring | None, persistor: Persistor | None, inputs_of: Scenario | None = None) -> dict[str, str]:
    """Finalise products and the world and write the input series (``inputs_of``: a run that got to
    its end), each step on its own; the caller then closes the tables."""
    errors: dict[str, str] = {}
    steps: list[tuple[str, Any]] = []
    if wiring is not None:
        steps += [(f"product {pid}", p.finalize) for pid, p in wiring.core.products.items()]
        steps.append(("world", wiring.world.finalize))
        if inputs_of is not None and persistor is not None:
            w = wiring
            steps.append(("inputs tables", lambda: record_inputs(persistor, inputs_of, w)))
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 -- a failing finaliser must not keep the tables from being written
            errors[what] = f"{type(exc).__name__}: {exc}"
    return errors


class _Signals:
    """SIGTERM/SIGINT raise :class:`RunInterrupted` during the run; after ``defer()`` they are noted only."""

    def __init__(self) -> None:
        self.deferred = False
        self.pending: int | None = None

    def handler(self, signum: int, frame: Any) -> None:
        if self.deferred:
            self.pending = self.pending or signum
            return
        raise RunInterrupted(signum)

    def defer(self) -> None:
        self.deferred = True


@contextmanager
def _signals_raise() -> Iterator[_Signals]:
    """Install the handlers in the main thread (only there can Python handle signals)."""
    state = _Signals()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    old = {s: signal.signal(s, state.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)


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


def _build(
    env: simpy.Environment, persistor: Persistor, scenario: Scenario, external: frozenset[str] = frozenset()
) -> Wiring:
    """Physical world, platform core and agents, always in the same order (determinism).

    The one place where participants meet the world: a DSO gets a grid view, a TSO the calendar,
    an aggregator the handle on its own portfolio, the data provider a meter feed; each gets a
    recorder for its own tables only. Participants in ``external`` are connected
    (``core.external``) but not simulated: their traffic is the transport's."""
    root = np.random.SeedSequence(scenario.seed)
    world = World(env, scenario, child_seed(root, 1), persistor)
    n_steps = scenario.horizon_minutes // world.dt + 2 * world.steps_per_day
    spot = (
        load_spot_csv(scenario.spot.csv, scenario.start, n_steps, world.dt)
        if scenario.spot.csv
        else generate_spot(scenario.start, n_steps, world.dt, child_seed(root, 2), scenario.spot.mean_eur_mwh)
    )
    portfolios = {a.id: world.portfolio_of(a.id) for a in sorted(scenario.aggregators, key=lambda a: a.id)}
    sellers = {a: frozenset(p.feeders) for a, p in portfolios.items()}
    dp = scenario.data_provider
    feed = world.meter_feed(dp.household_meters)
    prices = scenario_imbalance_prices(scenario, spot)
    core = build_core(env, persistor, scenario, sellers, frozenset(feed.points), prices, grid=world.grid_view())
    own = Recorder(persistor, frozenset({AGENT_ERRORS}))
    agents: dict[str, Agent] = {}
    buyer_seeds = child_seed(root, 4)
    for b in sorted(scenario.buyers, key=lambda b: b.id):
        if b.id in external:
            core.external[b.id] = core.endpoint.connect(b.id, b.role)
    for a in sorted(scenario.aggregators, key=lambda a: a.id):
        if a.id in external:
            core.external[a.id] = core.endpoint.connect(a.id, "aggregator")
    for i, b in enumerate(sorted(scenario.buyers, key=lambda b: b.id)):
        if b.id in external:
            continue
        grid = world.grid_view() if b.role == "dso" else None
        agents[b.id] = Buyer(
            env,
            core.endpoint.connect(b.id, b.role),
            b,
            grid,
            scenario.start,
            scenario.horizon_minutes,
            child_seed(buyer_seeds, i),
            own,
            settle_due=partial(_settlement_due, core, dp),
        )
    seller_tables = Recorder(persistor, frozenset({AGENT_ERRORS, FLEX_FORECASTS}))
    for a_id, portfolio in portfolios.items():
        if a_id in external:
            continue
        cfg = next(a for a in scenario.aggregators if a.id == a_id)
        agents[a_id] = Aggregator(env, core.endpoint.connect(a_id, "aggregator"), cfg, portfolio, spot, seller_tables)
    agents[dp.id] = DataProvider(env, core.endpoint.connect(dp.id, "data_provider"), dp, feed, child_seed(root, 3), own)
    world.start()
    for agent_id in sorted(agents):
        agents[agent_id].start()
    return Wiring(core, world, agents)


def skipped_summary(agents: Iterable[Any]) -> dict[str, Any]:
    """How many markets the buyers did not open because they could not settle inside the horizon,
    by reason (delivery or meter data after it) and by what would have opened them."""
    skipped = [m for a in agents for m in getattr(a, "skipped_horizon", ())]
    return {
        "markets_skipped_horizon": len(skipped),
        "markets_skipped_horizon_by_reason": dict(sorted(Counter(m.reason for m in skipped).items())),
        "markets_skipped_horizon_by_source": dict(sorted(Counter(m.source for m in skipped).items())),
    }


def _settlement_due(core: Core, dp: DataProviderConfig, req: MarketRequest) -> int:
    """Earliest minute a market can settle: when the data provider has published the readings of
    the product's meter window (which may extend past delivery, e.g. a before/after baseline)."""
    end = req.delivery_end
    product = core.products.get(req.product_id)
    if product is not None:
        with suppress(Rejected):  # a request the product rejects opens no market: nothing to settle
            planned = Market(request=req, requested_at=req.sent_at, penalty_price=0.0, terms=product.read_terms(req))
            end = max(end, product.meter_window(planned)[1])
    return meter_data_due(end, dp.delay_days, dp.publish_time.hour * 60 + dp.publish_time.minute)


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
