"""Parameter sweeps: ``flech-sim sweep SCENARIO.yaml``, every grid point x seed as one run, on Dask.

The scenario's ``sweep`` section names a grid (dotted path -> values) and
seeds. Every combination is one run:

* its parameters are applied to the scenario as written in the file, and
  the result is validated like any scenario file, before anything runs; a
  bad path or value is a :class:`ScenarioError` that names it;
* its run ID is derived from the parameter values and the seed only (a
  readable slug and a short hash), so the same sweep always maps the same
  combination to the same directory ``OUT/<run_id>/``;
* it runs in a Dask worker: a local cluster of worker processes by default
  (one thread each: a run is single-threaded Python), or an existing
  cluster given its scheduler address (then ``OUT``, and any file the
  scenario names, must be paths the workers can reach, e.g. on a shared
  file system, and flech_sim must be installed on the workers);
* a run that fails is recorded (status ``failed`` and its error) and does
  not stop the others; a run whose manifest says it completed, for the
  same scenario (hash), is skipped when the sweep is run again.

``OUT/index.parquet`` and ``OUT/index.csv`` list every run: run_id, one
column per parameter, seed, status, error, wall seconds and the headline
outcomes of its manifest.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import logging
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .constants import EXIT_BAD_INPUT, EXIT_OK, EXIT_RUN_FAILED
from .kpis import HEADLINES as KPI_HEADLINES
from .scenario import Scenario, ScenarioError, read_scenario_file, scenario_from_dict

DEFAULT_WORKERS = 2

HEADLINES: tuple[tuple[str, str], ...] = (
    ("markets_opened", "markets_opened"),
    ("markets_cleared", "markets_cleared"),
    ("procured_kwh", "procured_kwh"),
    ("procurement_cost_dkk", "procurement_cost_dkk"),
    ("unmet_kwh", "unmet_kwh"),
    ("messages_rejected", "messages_rejected"),
)
"""Index column <- key of the manifest's ``summary``."""

FLOAT_HEADLINES = frozenset({"procured_kwh", "procurement_cost_dkk", "unmet_kwh"})
STATUSES = ("completed", "failed", "skipped")


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: where it goes, what it changes, and the validated scenario."""

    run_id: str
    params: dict[str, Any]  # dotted path -> value, in the grid's order
    seed: int
    scenario: Scenario


@dataclass
class SweepResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    param_names: list[str]
    wall_seconds: float
    cluster_seconds: float = 0.0  # starting (or connecting to) the cluster
    index_paths: list[Path] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def ok(self) -> bool:
        return self.count("failed") == 0


# == expanding the grid ===================================================================
def load_sweep(path: str | Path) -> tuple[dict[str, Any], Scenario]:
    """The scenario file as written (for overrides) and validated (for its ``sweep`` section)."""
    raw = read_scenario_file(path)
    return raw, scenario_from_dict(raw, source=str(path))


def expand(raw: dict[str, Any], source: str = "<scenario>") -> list[RunSpec]:
    """Every grid point x seed, validated; raise ScenarioError naming the first bad path or value.

    Without a ``sweep`` section, or with an empty grid and no seeds, this is the scenario's single run.
    """
    base = scenario_from_dict(raw, source=source)
    sweep = base.sweep
    grid = dict(sweep.grid) if sweep else {}
    seeds = list(sweep.seeds) if sweep and sweep.seeds else [base.seed]
    for path, values in grid.items():
        if path in ("seed", "sweep") or path.startswith("sweep."):
            raise ScenarioError(
                f"{source}: sweep.grid.{path}: not a sweepable parameter (list seeds under sweep.seeds)"
            )
        if not values:
            raise ScenarioError(f"{source}: sweep.grid.{path}: needs at least one value")
    specs: list[RunSpec] = []
    seen: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*grid.values()):
        params = dict(zip(grid.keys(), combo, strict=True))
        for seed in seeds:
            run_id = make_run_id(params, seed)
            if run_id in seen:
                raise ScenarioError(f"{source}: sweep has the same grid point twice: {params} seed {seed}")
            seen[run_id] = params
            doc = copy.deepcopy(raw)
            doc.pop("sweep", None)
            for p, v in params.items():
                set_path(doc, p, v, source)
            doc["seed"] = seed
            scenario = scenario_from_dict(doc, source=f"{source} [sweep run {run_id}: {_describe(params, seed)}]")
            specs.append(RunSpec(run_id, params, seed, scenario))
    return specs


def set_path(doc: dict[str, Any], path: str, value: Any, source: str = "<scenario>") -> None:
    """Set ``a.b.0.c`` in a nested dict/list document; list items by index or by their ``id``.

    Missing mapping keys are created (the scenario validation then rejects unknown ones by name).
    """
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ScenarioError(f"{source}: sweep.grid: {path!r} is not a dotted path")
    node: Any = doc
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, dict):
            if last:
                node[part] = copy.deepcopy(value)
                return
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        elif isinstance(node, list):
            i = _list_index(node, part)
            if i is None:
                ids = [x.get("id") for x in node if isinstance(x, dict) and "id" in x]
                raise ScenarioError(
                    f"{source}: sweep.grid.{path}: {where!r} matches no list item "
                    f"(indexes 0..{len(node) - 1}{'; ids ' + ', '.join(map(str, ids)) if ids else ''})"
                )
            if last:
                node[i] = copy.deepcopy(value)
                return
            node = node[i]
        else:
            raise ScenarioError(
                f"{source}: sweep.grid.{path}: {'.'.join(parts[:depth])!r} is a value, "
                f"not a section, so it has no {part!r}"
            )


def _list_index(items: list[Any], part: str) -> int | None:
    if re.fullmatch(r"-?\d+", part):
        i = int(part)
        return i if 0 <= i < len(items) else None
    for i, x in enumerate(items):
        if isinstance(x, dict) and x.get("id") == part:
            return i
    return None


def make_run_id(params: dict[str, Any], seed: int) -> str:
    """``<slug>-seed<N>-<hash8>``: readable, and unique by the hash of (parameters, seed)."""
    canon = json.dumps({"params": params, "seed": seed}, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canon.encode()).hexdigest()[:8]
    slug = "_".join(f"{p.rsplit('.', 1)[-1]}-{_short(v)}" for p, v in params.items())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", slug).strip("-_.")[:60].rstrip("-_.")
    return f"{slug + '-' if slug else ''}seed{seed}-{digest}"


def _short(v: Any) -> str:
    if isinstance(v, str) and ":" in v:  # a dotted implementation path: its class name
        return v.rsplit(":", 1)[-1]
    return json.dumps(v, separators=(",", ":")) if isinstance(v, list | dict) else str(v)


def _describe(params: dict[str, Any], seed: int) -> str:
    return ", ".join([*(f"{p}={v!r}" for p, v in params.items()), f"seed={seed}"])


# == running ================================================================================
def run_one(run_id: str, scenario_doc: dict[str, Any], out_dir: str) -> dict[str, Any]:
    """Run one sweep point (in a worker) and return its index row fields. Never raises for a failed run."""
    started, started_cpu = time.perf_counter(), time.process_time()
    try:
        from .simulation import run

        scenario = scenario_from_dict(scenario_doc, source=run_id)
        path = Path(out_dir)
        if path.exists():  # leftovers of an earlier failed or stale attempt
            shutil.rmtree(path)
        result = run(scenario, path)
        manifest = dict(result.manifest)
        if result.completed and not manifest.get("fingerprint"):
            from .fingerprint import fingerprint

            manifest["fingerprint"] = fingerprint(path)
        row = _outcome_fields(manifest)
        row["status"] = "completed" if result.completed else "failed"
        row["error"] = _first_line(result.error)
    except Exception as exc:  # noqa: BLE001 -- a failure outside run() (e.g. the directory): still one row
        row = _outcome_fields({})
        row["status"] = "failed"
        row["error"] = f"{type(exc).__name__}: {exc}"
    row["wall_seconds"] = round(time.perf_counter() - started, 3)
    row["cpu_seconds"] = round(time.process_time() - started_cpu, 3)  # of the worker process, while running it
    return row


def _outcome_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    summary = manifest.get("summary") or {}
    row: dict[str, Any] = {col: summary.get(key) for col, key in HEADLINES}
    kpis = summary.get("kpis") or {}
    row.update({f"kpi_{key}": kpis.get(key) for key, _ in KPI_HEADLINES})
    row["fingerprint"] = manifest.get("fingerprint")
    return row


def _first_line(error: str | None) -> str | None:
    if not error:
        return None
    lines = [ln for ln in error.strip().splitlines() if ln.strip()]
    return lines[0] if lines else None


def completed_before(spec: RunSpec, out: Path) -> dict[str, Any] | None:
    """The manifest of an earlier completed run of exactly this scenario, if there is one."""
    path = out / spec.run_id / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if manifest.get("completed") is True and manifest.get("scenario_hash") == spec.scenario.digest():
        return manifest
    return None


def run_sweep(
    scenario: str | Path | dict[str, Any],
    out: str | Path | None = None,
    *,
    workers: int = DEFAULT_WORKERS,
    scheduler: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Expand and run a sweep; write ``OUT/index.parquet`` and ``OUT/index.csv``; return every row.

    ``scenario`` is a scenario file or an already loaded document (dict). Raises ScenarioError for a bad
    sweep before anything runs.
    """
    started = time.perf_counter()
    if isinstance(scenario, dict):
        raw, source = scenario, "<scenario>"
    else:
        raw, _ = load_sweep(scenario)
        source = str(scenario)
    specs = expand(raw, source)
    out_dir = Path(out) if out is not None else Path("results") / specs[0].scenario.name / "sweep"
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    param_names = list(specs[0].params)
    rows: dict[str, dict[str, Any]] = {}
    todo: list[RunSpec] = []
    for spec in specs:
        earlier = completed_before(spec, out_dir)
        if earlier is None:
            todo.append(spec)
            continue
        if not earlier.get("fingerprint"):  # manifests written before the run stored it
            from .fingerprint import fingerprint

            earlier["fingerprint"] = fingerprint(out_dir / spec.run_id)
        row = _outcome_fields(earlier)
        row.update(status="skipped", error=None, wall_seconds=earlier.get("wall_seconds"))
        rows[spec.run_id] = row
    cluster_seconds = 0.0
    from tqdm import tqdm

    with tqdm(
        total=len(specs),
        initial=len(specs) - len(todo),
        unit="run",
        desc="sweep",
        disable=not progress,
        file=sys.stderr,
    ) as bar:
        if todo:
            t0 = time.perf_counter()
            with _client(workers, scheduler) as client:
                cluster_seconds = time.perf_counter() - t0
                for run_id, row in _execute(client, todo, out_dir):
                    rows[run_id] = row
                    bar.update(1)
    index = add_ensemble_columns([_index_row(spec, rows[spec.run_id], out_dir) for spec in specs], param_names)
    result = SweepResult(
        out_dir, index, param_names, round(time.perf_counter() - started, 3), round(cluster_seconds, 3)
    )
    result.index_paths = write_index(out_dir, index, param_names)
    result.index_paths += write_kpis_summary(out_dir, index, param_names)
    return result


def _execute(client: Any, todo: list[RunSpec], out_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    from distributed import as_completed

    futures = {}
    attempt = uuid.uuid4().hex[:8]  # task keys unique per sweep: a long-lived scheduler may remember old ones
    for spec in todo:
        doc = spec.scenario.model_dump(mode="json")
        fut = client.submit(
            run_one, spec.run_id, doc, str(out_dir / spec.run_id), key=f"flech-run-{spec.run_id}-{attempt}"
        )
        futures[fut] = spec
    for fut in as_completed(futures):
        spec = futures[fut]
        try:
            row = fut.result()
        except Exception as exc:  # noqa: BLE001 -- the worker died (e.g. killed for memory): recorded like a failure
            row = _outcome_fields({})
            row.update(status="failed", error=f"{type(exc).__name__}: {exc}", wall_seconds=None)
        yield spec.run_id, row


class _client:
    """A Dask client on a fresh local cluster (closed afterwards) or on an existing scheduler (left running)."""

    def __init__(self, workers: int, scheduler: str | None) -> None:
        self.workers, self.scheduler = workers, scheduler
        self._cluster: Any = None
        self._client: Any = None

    def __enter__(self) -> Any:
        from distributed import Client, LocalCluster

        if self.scheduler:
            self._client = Client(self.scheduler, timeout="30s")
        else:
            self._cluster = LocalCluster(
                n_workers=self.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self._client = Client(self._cluster)
        return self._client

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def _index_row(spec: RunSpec, row: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"run_id": spec.run_id}
    out.update(spec.params)
    out["seed"] = spec.seed
    out["status"] = row["status"]
    out["error"] = row.get("error")
    out["wall_seconds"] = row.get("wall_seconds")
    out["cpu_seconds"] = row.get("cpu_seconds")
    for col, _ in HEADLINES:
        out[col] = row.get(col)
    for key, _ in KPI_HEADLINES:
        out[f"kpi_{key}"] = row.get(f"kpi_{key}")
    out["fingerprint"] = row.get("fingerprint")
    out["run_dir"] = str(out_dir / spec.run_id)
    return out


def _param_column(values: list[Any]) -> list[Any]:
    """Keep a parameter column's values if they share one scalar type (ints and floats mix); else JSON text."""
    kinds = {type(v) for v in values}
    if kinds <= {int, float} or (len(kinds) == 1 and kinds <= {str, bool}):
        return values
    return [v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in values]


def write_index(out_dir: Path, rows: list[dict[str, Any]], param_names: list[str]) -> list[Path]:
    """``index.parquet`` and ``index.csv``; parameter columns keep their type when it is one scalar type."""
    import pandas as pd

    df = pd.DataFrame(rows)
    for p in param_names:
        df[p] = _param_column(df[p].tolist())
    for col, _ in HEADLINES:
        df[col] = pd.to_numeric(df[col]).astype("Float64" if col in FLOAT_HEADLINES else "Int64")
    kpi_cols = [c for c in df.columns if c.startswith("kpi_")]
    for col in ("wall_seconds", "cpu_seconds", *kpi_cols):
        df[col] = pd.to_numeric(df[col]).astype("Float64")
    pq_path, csv_path = out_dir / "index.parquet", out_dir / "index.csv"
    df.to_parquet(pq_path, index=False)
    df.to_csv(csv_path, index=False)
    return [pq_path, csv_path]


# == ensembles: KPIs across seeds ============================================================
KPI_KEYS = ["scope", "product_id", "participant", "feeder", "metric", "unit"]


def t_interval(values: Any, level: float = 0.95) -> tuple[int, float, float, float, float]:
    """n, mean, sample std and the Student-t confidence interval of the mean (NaN where n < 2 for std/CI)."""
    import numpy as np
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return 0, float("nan"), float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if n < 2:
        return n, mean, float("nan"), float("nan"), float("nan")
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / np.sqrt(n)
    return n, mean, std, mean - half, mean + half


def summarize_kpis(kpis: Any, param_names: list[str]) -> Any:
    """Per grid point (parameter values) and KPI key: n seeds, mean, std and 95 % t-interval of the value.

    ``kpis`` is the long KPI table of many runs with the parameter columns (and seed) beside it.
    """
    import pandas as pd

    keys = [*param_names, *KPI_KEYS]
    df = kpis.copy()
    for k in keys:  # groupby drops null keys: nulls (e.g. product_id of a run-scope row) become ""
        df[k] = df[k].astype(object).where(df[k].notna(), "")
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        n, mean, std, lo, hi = t_interval(g["value"].tolist())
        rows.append(
            {
                **dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)),
                "n": n,
                "mean": mean,
                "std": std,
                "ci95_low": lo,
                "ci95_high": hi,
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "n", "mean", "std", "ci95_low", "ci95_high"])


def add_ensemble_columns(index: list[dict[str, Any]], param_names: list[str]) -> list[dict[str, Any]]:
    """Beside each run's headline KPIs, its grid point's mean, std and 95 % t-interval over the seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in index:
        groups.setdefault(json.dumps([r[p] for p in param_names], default=str), []).append(r)
    for members in groups.values():
        ok = [r for r in members if r["status"] in ("completed", "skipped")]
        for key, _ in KPI_HEADLINES:
            _n, mean, std, lo, hi = t_interval([r[f"kpi_{key}"] for r in ok])
            for r in members:
                r.update(
                    {
                        f"kpi_{key}_mean": mean,
                        f"kpi_{key}_std": std,
                        f"kpi_{key}_ci95_low": lo,
                        f"kpi_{key}_ci95_high": hi,
                    }
                )
    return index


def write_kpis_summary(out_dir: Path, index: list[dict[str, Any]], param_names: list[str]) -> list[Path]:
    """``kpis_summary.parquet`` / ``.csv``: every completed run's ``kpis`` table aggregated over seeds."""
    import pandas as pd

    frames = []
    for r in index:
        path = Path(r["run_dir"]) / "kpis.parquet"
        if r["status"] in ("completed", "skipped") and path.is_file():
            k = pd.read_parquet(path)
            for p in param_names:
                k[p] = json.dumps(r[p], separators=(",", ":")) if isinstance(r[p], list | dict) else r[p]
            k["seed"] = r["seed"]
            frames.append(k)
    if not frames:
        return []
    summary = summarize_kpis(pd.concat(frames, ignore_index=True), param_names)
    pq_path, csv_path = out_dir / "kpis_summary.parquet", out_dir / "kpis_summary.csv"
    summary.to_parquet(pq_path, index=False)
    summary.to_csv(csv_path, index=False)
    return [pq_path, csv_path]


def cli_kpis(args: argparse.Namespace) -> int:
    """``flech-sim kpis DIR``: a run's kpis table, or a sweep's kpis_summary (computed if missing)."""
    import pandas as pd

    d = Path(args.dir)
    if (d / "manifest.json").is_file():
        path = d / "kpis.parquet"
        if not path.is_file():
            print(f"error: {d} has no kpis table (run made before KPIs existed)", file=sys.stderr)
            return EXIT_BAD_INPUT
        df = pd.read_parquet(path)
        df = df[df.scope.isin(args.scope)] if args.scope else df
        cols = ["scope", "product_id", "participant", "feeder", "metric", "value", "unit"]
    elif (d / "index.parquet").is_file():
        if not (d / "kpis_summary.parquet").is_file():
            idx = pd.read_parquet(d / "index.parquet")
            fixed = {"run_id", "seed", "status", "error", "wall_seconds", "cpu_seconds", "fingerprint", "run_dir"}
            params = [
                c for c in idx.columns if c not in fixed and c not in dict(HEADLINES) and not c.startswith("kpi_")
            ]
            write_kpis_summary(d, idx.to_dict("records"), params)
        if not (d / "kpis_summary.parquet").is_file():
            print(f"error: no completed run in {d} has a kpis table", file=sys.stderr)
            return EXIT_BAD_INPUT
        df = pd.read_parquet(d / "kpis_summary.parquet")
        df = df[df.scope.isin(args.scope)] if args.scope else df
        cols = list(df.columns)
    else:
        print(f"error: {d} is neither a run directory (manifest.json) nor a sweep (index.parquet)", file=sys.stderr)
        return EXIT_BAD_INPUT
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    return EXIT_OK


# == command line ===========================================================================
def register_cli(sub: Any) -> None:
    k = sub.add_parser("kpis", help="print a run's KPIs, or a sweep's KPIs over seeds (mean, std, 95 %% CI)")
    k.add_argument("dir", type=Path, metavar="RUN_OR_SWEEP_DIR")
    k.add_argument(
        "--scope",
        action="append",
        choices=["run", "product", "aggregator", "feeder"],
        help="only these scopes (repeatable)",
    )
    k.set_defaults(func=cli_kpis)
    s = sub.add_parser(
        "sweep",
        help="run every grid point x seed of a scenario's sweep section, in parallel",
        description="Run a scenario's sweep (grid x seeds) on Dask and write an index of the runs.",
    )
    s.add_argument("scenario", type=Path, metavar="SCENARIO.yaml", help="scenario file with a sweep section")
    s.add_argument("--out", type=Path, help="sweep directory (default: results/<scenario>/sweep)")
    s.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"local worker processes (default {DEFAULT_WORKERS}; ignored with --scheduler)",
    )
    s.add_argument("--scheduler", metavar="ADDR", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cli_sweep)


def cli_sweep(args: argparse.Namespace) -> int:
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        result = run_sweep(
            args.scenario,
            args.out,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # e.g. the scheduler cannot be reached
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_result(result))
    return EXIT_OK if result.ok else EXIT_RUN_FAILED


def format_result(result: SweepResult) -> str:
    n = len(result.rows)
    lines = [
        f"{n} run(s): {result.count('completed')} completed, {result.count('failed')} failed, "
        f"{result.count('skipped')} skipped (already completed) in {result.wall_seconds:.1f} s",
        f"  index  {result.index_paths[1] if len(result.index_paths) > 1 else result.out_dir}",
    ]
    for r in result.rows:
        if r["status"] == "failed":
            lines.append(f"  FAILED {r['run_id']}: {r['error']}")
    return "\n".join(lines)
