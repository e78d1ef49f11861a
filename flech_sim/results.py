"""Reading runs back: one run directory or many (a sweep) as pandas DataFrames.

The table names, columns and types come from :mod:`flech_sim.schema`, the
same definitions the persistor writes with. Tables are read through
``pyarrow.dataset`` so that a filter or a column selection is applied while
reading: a year-long run does not have to fit in memory to be filtered.

A table the schema knows but the run directory lacks (a run made before
the table existed) reads as an empty frame with the right columns, so
analysis code written against today's schema still opens old runs.
"""

from __future__ import annotations

import glob as _glob
import json
import operator
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeAlias

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from .persistor import PARTS_SUFFIX, part_files
from .schema import TABLES

MANIFEST = "manifest.json"
SWEEP_INDEX = "index.parquet"

Filter: TypeAlias = ds.Expression | Mapping[str, Any] | Sequence[tuple[str, str, Any]] | None
"""A row filter: a pyarrow expression (``pc.field("seller") == "agg-1"``), a mapping
``{column: value}`` (a list/tuple/set value means "is in"), or pyarrow-style
``[(column, op, value), ...]`` tuples combined with AND."""


class UnknownTableError(KeyError):
    """A table name that neither the schema nor the run directory knows."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class NotARunError(FileNotFoundError):
    """A path that is not a run directory (no manifest.json) and holds none."""


class IncompleteRunWarning(UserWarning):
    """The run opened did not complete (failed, interrupted, killed or still running): its tables are partial."""


def incomplete_reason(manifest: Mapping[str, Any]) -> str | None:
    """Why a run's records are partial, in one line; None for a completed run."""
    if manifest.get("completed", True) is True:  # a hand-made manifest without the key: nothing to say
        return None
    status = manifest.get("status")
    status = status if status in ("running", "interrupted") else "failed"
    minute, horizon = manifest.get("simulated_until_minute"), manifest.get("horizon_minute")
    got = f" at simulated minute {minute}" + (f" of {horizon}" if horizon else "") if minute is not None else ""
    if status == "running":
        return f"killed or still running{got} (the manifest was never finalised)"
    error = (manifest.get("error") or "no error recorded").strip().splitlines()
    return f"{error[0] if error else 'no error recorded'} ({status}{got})"


@dataclass
class Run:
    """One run directory: its manifest and its tables."""

    path: Path
    run_id: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        if not (self.path / MANIFEST).is_file():
            raise NotARunError(f"{self.path}: not a run directory (no {MANIFEST})")
        if not self.run_id:
            self.run_id = str(self.manifest.get("run_id") or self.path.name)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, run_id={self.run_id!r})"

    @property
    def complete(self) -> bool:
        """True only when the run reached its horizon and every table was written."""
        return self.incomplete_reason is None

    @property
    def incomplete_reason(self) -> str | None:
        """One line saying why (and how far) an incomplete run got; None if it completed."""
        return incomplete_reason(self.manifest)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The run's manifest.json (scenario, seed, versions, summary, row counts)."""
        return dict(json.loads((self.path / MANIFEST).read_text()))

    @property
    def scenario(self) -> dict[str, Any]:
        """The validated scenario the run was made from, as plain data."""
        return dict(self.manifest.get("scenario") or {})

    @property
    def table_names(self) -> list[str]:
        """Schema tables first (in schema order), then any extra Parquet table found in the run."""
        found = {p.name.removesuffix(".parquet") for p in self.path.glob("*.parquet")}
        found |= {p.name.removesuffix(PARTS_SUFFIX) for p in self.path.glob(f"*{PARTS_SUFFIX}")}  # an incomplete run
        extra = sorted(found - set(TABLES))
        return [*TABLES, *extra]

    def _source(self, name: str) -> Path | None:
        if name not in self.table_names:
            raise UnknownTableError(f"unknown table {name!r}; known tables: {', '.join(self.table_names)}")
        for candidate in (self.path / f"{name}.parquet", self.path / name):
            if candidate.exists() and candidate.suffix != PARTS_SUFFIX:
                return candidate
        return None

    def dataset(self, name: str) -> ds.Dataset:
        """The table as a lazy pyarrow dataset: filter and project before anything is loaded.

        An incomplete run's table may exist only as its published parts (``<table>.parts/``):
        they are read in row order.
        """
        source = self._source(name)
        if source is None:
            parts = part_files(self.path, name)
            if parts:
                return ds.dataset([str(p) for p in parts], format="parquet")
            # known to the schema, absent from this (older or partial) run: empty, right columns
            return ds.dataset(TABLES[name].arrow_schema().empty_table())
        return ds.dataset(source, format="parquet")

    def table(self, name: str, columns: Sequence[str] | None = None, filter: Filter = None) -> pd.DataFrame:
        """The table (or the chosen columns and rows of it) as a DataFrame; time columns are timestamps."""
        dset = self.dataset(name)
        if columns is not None:
            unknown = [c for c in columns if c not in dset.schema.names]
            if unknown:
                raise KeyError(f"table {name!r} has no column(s) {unknown}; columns: {dset.schema.names}")
        expr = _expression(filter, dset.schema, name)
        arrow = dset.to_table(columns=list(columns) if columns is not None else None, filter=expr)
        return _to_pandas(arrow)

    def count(self, name: str, filter: Filter = None) -> int:
        """Rows of a table (matching a filter) without loading them."""
        dset = self.dataset(name)
        return int(dset.count_rows(filter=_expression(filter, dset.schema, name)))


@dataclass
class Runs:
    """Several runs (a sweep, or runs to compare), read as one: every frame gets a ``run_id`` column."""

    runs: list[Run] = field(default_factory=list)
    root: Path | None = None
    """The sweep directory the runs were found in, if they were opened from one."""

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[Run]:
        return iter(self.runs)

    def __getitem__(self, key: int | str) -> Run:
        if isinstance(key, int):
            return self.runs[key]
        for r in self.runs:
            if r.run_id == key:
                return r
        raise KeyError(f"no run {key!r}; run ids: {self.run_ids}")

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    def table(self, name: str, columns: Sequence[str] | None = None, filter: Filter = None) -> pd.DataFrame:
        """The table of every run, concatenated, with ``run_id`` as the first column."""
        frames = []
        for r in self.runs:
            df = r.table(name, columns=columns, filter=filter)
            df.insert(0, "run_id", pd.Series([r.run_id] * len(df), index=df.index, dtype="string"))
            frames.append(df)
        if not frames:
            cols = ["run_id", *(columns or (TABLES[name].names if name in TABLES else ()))]
            return pd.DataFrame(columns=cols)
        non_empty = [f for f in frames if len(f)] or frames[:1]  # concat warns on empty frames
        return pd.concat(non_empty, ignore_index=True)

    def index(self) -> pd.DataFrame:
        """The sweep's index (run_id, parameters, status, headlines) if there is one, else :meth:`manifests`.

        Join it with any table on ``run_id`` to put parameters beside outcomes.
        """
        if self.root is not None and (self.root / SWEEP_INDEX).is_file():
            idx = pd.read_parquet(self.root / SWEEP_INDEX)
            return idx[idx.run_id.astype(str).isin(self.run_ids)].reset_index(drop=True)
        return self.manifests()

    def manifests(self) -> pd.DataFrame:
        """One row per run: id, path, seed, completion and the headline summary figures."""
        rows = []
        for r in self.runs:
            m = r.manifest
            summary = {k: v for k, v in (m.get("summary") or {}).items() if not isinstance(v, dict)}
            rows.append(
                {
                    "run_id": r.run_id,
                    "path": str(r.path),
                    "scenario_name": m.get("scenario_name"),
                    "seed": m.get("seed"),
                    "completed": m.get("completed") is True,
                    "incomplete_reason": r.incomplete_reason,
                    **summary,
                }
            )
        return pd.DataFrame(rows)


def open_run(path: str | Path) -> Run:
    """Open one run directory (the one holding manifest.json).

    An incomplete run opens too (its flushed rows are readable), with an
    :class:`IncompleteRunWarning` saying why and how far it got; see :attr:`Run.incomplete_reason`.
    """
    r = Run(Path(path))
    if r.incomplete_reason:
        warnings.warn(
            f"{r.path}: incomplete run, its tables are partial: {r.incomplete_reason}",
            IncompleteRunWarning,
            stacklevel=2,
        )
    return r


def open_runs(source: str | Path | Iterable[str | Path]) -> Runs:
    """Open many runs: a list of run directories, a glob pattern, or a directory holding runs (a sweep).

    A directory that is not itself a run is searched recursively for run
    directories. Run ids are the directory names (or the manifest's
    ``run_id``); where two runs would share one, the path relative to the
    common parent is used instead, so ids are always unique.
    """
    paths = list(dict.fromkeys(p.resolve() for p in _run_paths(source)))  # each run once
    if not paths:
        raise NotARunError(f"no run directories (with {MANIFEST}) found in {source!r}")
    runs = [Run(p) for p in paths]
    ids = [r.run_id for r in runs]
    if len(set(ids)) < len(ids):
        common = Path(_common_parent(paths))
        for r in runs:
            r.run_id = r.path.resolve().relative_to(common).as_posix()
    root = Path(source) if isinstance(source, str | Path) and Path(source).is_dir() else None
    return Runs(runs, root)


def _run_paths(source: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(source, str | Path):
        p = Path(source)
        if p.is_dir():
            if (p / MANIFEST).is_file():
                return [p]
            return sorted(m.parent for m in p.rglob(MANIFEST) if not _is_twin(m.parent))
        matches = sorted(Path(m) for m in _glob.glob(str(source)))
        if not matches and not any(ch in str(source) for ch in "*?["):
            raise NotARunError(f"{source}: no such run directory")
        return [m for m in matches if (m / MANIFEST).is_file()]
    out: list[Path] = []
    for s in source:
        out.extend(_run_paths(s))
    return out


def _is_twin(path: Path) -> bool:
    """A no-flexibility twin (``<run>/twin/``) belongs to its run, not beside it: searches skip it."""
    return path.name == "twin" and (path.parent / MANIFEST).is_file()


def sql(source: str | Path | Iterable[str | Path] | Runs) -> Any:
    """A DuckDB connection with every table of the runs as a view, with ``run_id`` as the first column.

    ``source`` is anything :func:`open_runs` takes (a run, a sweep directory, a glob, a list) or a
    :class:`Runs`. Views read the Parquet files in place (nothing is loaded until queried), e.g.
    ``sql("results/sweep").sql("select run_id, sum(net_dkk) from settlements group by 1").df()``.
    A sweep's ``index`` and ``kpis_summary`` are views too when present.
    """
    import duckdb

    runs = source if isinstance(source, Runs) else open_runs(source)
    con = duckdb.connect()
    names = list(dict.fromkeys(n for r in runs for n in r.table_names))
    for name in names:
        parts = []
        for r in runs:
            path = r.path / f"{name}.parquet"
            if path.is_file():
                parts.append(f"SELECT {_quote(r.run_id)} AS run_id, * FROM read_parquet({_quote(str(path))})")
        if not parts and name in TABLES:  # no run has it: an empty view with the schema's columns
            con.register(f"_empty_{name}", runs.runs[0].dataset(name).to_table())
            parts.append(f'SELECT NULL::VARCHAR AS run_id, * FROM "_empty_{name}" WHERE false')
        if parts:
            con.execute(f'CREATE VIEW "{name}" AS ' + " UNION ALL BY NAME ".join(parts))
    if runs.root is not None:
        for extra in (SWEEP_INDEX, "kpis_summary.parquet"):
            if (runs.root / extra).is_file():
                view = extra.removesuffix(".parquet")
                con.execute(f'CREATE VIEW "{view}" AS SELECT * FROM read_parquet({_quote(str(runs.root / extra))})')
    return con


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _common_parent(paths: list[Path]) -> str:
    import os.path

    return os.path.commonpath([str(p.resolve().parent) for p in paths])


_OPS: dict[str, Callable[[ds.Expression, Any], ds.Expression]] = {
    "==": operator.eq,
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda f, v: f.isin(list(v)),
    "not in": lambda f, v: ~f.isin(list(v)),
}


def _expression(filter: Filter, schema: pa.Schema, table: str) -> ds.Expression | None:
    if filter is None or isinstance(filter, ds.Expression):
        return filter
    if isinstance(filter, Mapping):
        terms = [(k, "in" if isinstance(v, list | tuple | set | frozenset) else "==", v) for k, v in filter.items()]
    else:
        terms = list(filter)
    expr: ds.Expression | None = None
    for col, op, value in terms:
        if col not in schema.names:
            raise KeyError(f"filter on unknown column {col!r} of table {table!r}; columns: {schema.names}")
        if op not in _OPS:
            raise ValueError(f"unknown filter operator {op!r}; use one of {sorted(_OPS)}")
        term = _OPS[op](ds.field(col), _scalar(value, schema.field(col).type))
        expr = term if expr is None else expr & term
    return expr


def _scalar(value: Any, type_: pa.DataType) -> Any:
    """Timestamps given as strings or pandas timestamps are compared as the column's type."""
    if pa.types.is_timestamp(type_):
        if isinstance(value, list | tuple | set | frozenset):
            return [_scalar(v, type_) for v in value]
        return pa.scalar(pd.Timestamp(value).to_pydatetime(), type=type_)
    if isinstance(value, set | frozenset):
        return sorted(value)
    return value


def _to_pandas(arrow: pa.Table) -> pd.DataFrame:
    df = arrow.to_pandas()
    for f in arrow.schema:  # nanosecond pandas timestamps whatever unit the file stores
        if pa.types.is_timestamp(f.type) and f.name in df:
            df[f.name] = pd.to_datetime(df[f.name]).astype("datetime64[ns]")
    return df
