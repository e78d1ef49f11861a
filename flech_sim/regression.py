"""Regression checks of clearing outcomes: ``flech-sim check RUN_DIR --against GOLDEN_DIR``.

What is compared, per market (the "outcomes" below; everything else a run
writes, such as message IDs or solver timings, may change freely):

* ``markets``: final state, bids acknowledged, gate closure, delivery start;
* ``clearings``: solver status, objective, cost, accepted and unmet energy;
* ``clearing_intervals``: need, accepted, unmet and clearing price per interval;
* ``awards``: accepted kW, price and payment per bidder, bid and interval;
* ``settlements``: ordered, delivered, payment, penalty, net and meter gap
  per party and interval.

Numbers match when ``|new - golden| <= atol + rtol * |golden|`` (defaults
:data:`DEFAULT_ATOL` and :data:`DEFAULT_RTOL`); text, integers, booleans
and times must be equal. A market or row present on one side only is a
difference too.

Golden outcomes are a directory of CSV files, one per table above, plus
``manifest.json`` (an excerpt of the run's manifest). CSV rather than
Parquet because golden files live in a repository: a change of outcome
then shows in ``git diff`` and in code review as the changed lines, one row
per line, sorted by key so that only real changes move. Floats are written
as Python's shortest round-trip ``repr``, so the CSV holds the exact
doubles and a check at zero tolerance is possible.

Either side may be a run directory (Parquet) or a golden directory (CSV):
two runs can be compared directly.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .constants import EXIT_BAD_INPUT, EXIT_DIFFERENT, EXIT_OK
from .persistor import part_files
from .schema import TABLES

DEFAULT_ATOL = 1e-6
"""Absolute tolerance, in the field's unit (kW, kWh, DKK, DKK/kWh): a millionth is noise for all of them."""
DEFAULT_RTOL = 1e-6
"""Relative tolerance (of the golden value)."""


MANIFEST_EXCERPT = ("scenario_name", "scenario_hash", "seed", "flech_sim_version", "fingerprint", "packages", "summary")
"""Manifest keys kept with golden outcomes (no paths or clock times: they would make every accept a diff)."""


@dataclass(frozen=True)
class Outcome:
    """One compared table: rows identified by ``keys`` (market first), fields ``values`` compared."""

    table: str
    keys: tuple[str, ...]
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        """Names are checked against :mod:`flech_sim.schema` when the module loads, so a column renamed
        or dropped there fails here at once, not when a golden is next read."""
        table = TABLES.get(self.table)
        unknown = [c for c in self.columns if table is None or c not in table.names]
        if unknown:
            raise ValueError(f"regression outcome {self.table}: no column(s) {unknown} in flech_sim.schema")

    @property
    def columns(self) -> tuple[str, ...]:
        return self.keys + self.values


OUTCOMES: tuple[Outcome, ...] = (
    Outcome("markets", ("market_id", "product_id"), ("state", "n_bids", "gate_close", "delivery_start")),
    Outcome(
        "clearings",
        ("market_id", "product_id"),
        ("status", "objective_dkk", "cost_dkk", "n_accepted", "accepted_kwh", "unmet_kwh"),
    ),
    Outcome(
        "clearing_intervals",
        ("market_id", "product_id", "interval"),
        ("need_kw", "accepted_kw", "unmet_kw", "clearing_price"),
    ),
    Outcome(
        "awards", ("market_id", "product_id", "seller", "bid_id", "interval"), ("accepted_kw", "price", "payment_dkk")
    ),
    Outcome(
        "settlements",
        ("market_id", "product_id", "party", "role", "interval"),
        ("ordered_kwh", "delivered_kwh", "payment_dkk", "penalty_dkk", "net_dkk", "meter_gap"),
    ),
)


class RegressionInputError(ValueError):
    """A directory to compare is missing or is not a run / golden directory (exit code 2)."""


@dataclass(frozen=True)
class Tolerances:
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL

    def __post_init__(self) -> None:
        if not (self.atol >= 0 and self.rtol >= 0):
            raise RegressionInputError(f"tolerances must be >= 0 (got atol={self.atol}, rtol={self.rtol})")

    def close(self, golden: float, new: float) -> bool:
        return abs(new - golden) <= self.atol + self.rtol * abs(golden)

    def __str__(self) -> str:
        return f"|new - golden| <= {self.atol:g} + {self.rtol:g} x |golden|"


@dataclass(frozen=True)
class Difference:
    market_id: str  # "" for differences of the run as a whole
    table: str
    field: str  # a column, or "(row)" / "(market)" for something present on one side only
    where: str  # the row's key beyond the market, e.g. "seller=agg-a bid_id=b1 interval=2"
    golden: Any
    new: Any

    @property
    def delta(self) -> float | None:
        if _is_number(self.golden) and _is_number(self.new):
            return float(self.new) - float(self.golden)
        return None


@dataclass
class Report:
    run_dir: Path
    golden_dir: Path
    tolerances: Tolerances
    differences: list[Difference] = field(default_factory=list)
    rows_compared: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def markets(self) -> list[str]:
        return sorted({d.market_id for d in self.differences})

    def format(self, max_lines: int = 200) -> str:
        """The readable diff: grouped by market, one line per difference, golden vs new and delta."""
        rows = sum(self.rows_compared.values())
        head = (
            f"{self.run_dir} against {self.golden_dir}: {rows} rows in {len(self.rows_compared)} tables "
            f"compared (tolerance {self.tolerances})"
        )
        lines = [head]
        lines += [f"note: {n}" for n in self.notes]
        if self.ok:
            lines.append("OK: clearing outcomes match the golden ones")
            return "\n".join(lines)
        lines.append(f"DIFFERENT: {len(self.differences)} difference(s) in {len(self.markets)} market(s)")
        by_market: dict[str, list[Difference]] = {}
        for d in self.differences:
            by_market.setdefault(d.market_id, []).append(d)
        shown = 0
        for market in sorted(by_market):
            if shown >= max_lines:
                break
            block = [("table", "field", "where", "golden", "new", "delta")]
            for d in by_market[market][: max_lines - shown]:
                block.append((d.table, d.field, d.where, _show(d.golden), _show(d.new), _show_delta(d)))
            shown += len(block) - 1
            lines.append(f"\nmarket {market}" if market else "\nrun")
            lines.extend(_aligned(block))
        if shown < len(self.differences):
            lines.append(f"... and {len(self.differences) - shown} more difference(s)")
        return "\n".join(lines)


# == comparing ==========================================================================
def compare_runs(run_dir: str | Path, golden_dir: str | Path, tolerances: Tolerances | None = None) -> Report:
    """Compare the clearing outcomes of ``run_dir`` with ``golden_dir`` (either may be a run or golden dir)."""
    tol = tolerances or Tolerances()
    run_dir, golden_dir = Path(run_dir), Path(golden_dir)
    new = load_outcomes(run_dir)
    old = load_outcomes(golden_dir)
    report = Report(run_dir, golden_dir, tol)
    _compare_manifests(report, _manifest(run_dir), _manifest(golden_dir))
    new_markets, old_markets = _markets(new), _markets(old)
    for m in sorted(old_markets - new_markets):
        report.differences.append(Difference(m, "markets", "(market)", "", "present", "missing"))
    for m in sorted(new_markets - old_markets):
        report.differences.append(Difference(m, "markets", "(market)", "", "missing", "present"))
    both = old_markets & new_markets
    for spec in OUTCOMES:
        old_rows = _keyed(spec, (r for r in old[spec.table] if r["market_id"] in both))
        new_rows = _keyed(spec, (r for r in new[spec.table] if r["market_id"] in both))
        report.rows_compared[spec.table] = len(old_rows)
        for key in sorted(old_rows.keys() | new_rows.keys(), key=_sort_key):
            where = _where(spec, key)
            g, n = old_rows.get(key), new_rows.get(key)
            if n is None or g is None:
                report.differences.append(
                    Difference(
                        key[0],
                        spec.table,
                        "(row)",
                        where,
                        "missing" if g is None else "present",
                        "missing" if n is None else "present",
                    )
                )
                continue
            for f in spec.values:
                if not _same(g[f], n[f], tol):
                    report.differences.append(Difference(key[0], spec.table, f, where, g[f], n[f]))
    return report


def _compare_manifests(report: Report, new: dict[str, Any], old: dict[str, Any]) -> None:
    if new and new.get("completed") is False:
        from .results import incomplete_reason

        report.differences.append(Difference("", "manifest", "completed", "", True, False))
        report.notes.append(
            f"the run did not complete: {incomplete_reason(new)}; INCOMPLETE RUN, its outcomes are partial"
        )
    if new.get("scenario_hash") and old.get("scenario_hash") and new["scenario_hash"] != old["scenario_hash"]:
        report.notes.append(
            f"the run's scenario differs from the golden one's "
            f"(hash {new['scenario_hash'][:12]} vs {old['scenario_hash'][:12]})"
        )
    fp_new, fp_old = _fingerprint_of(report.run_dir, new), _fingerprint_of(report.golden_dir, old)
    if fp_new and fp_old:
        report.notes.append(
            f"result fingerprints {'identical' if fp_new == fp_old else 'differ'} "
            f"({fp_new[:12]} vs golden {fp_old[:12]})"
        )


def _fingerprint_of(directory: Path, manifest: dict[str, Any]) -> str | None:
    """The manifest's fingerprint, else computed if the directory holds a whole run; None for partial data."""
    if manifest.get("fingerprint"):
        return str(manifest["fingerprint"])
    if manifest.get("completed") is not False and all((directory / f"{t}.parquet").exists() for t in TABLES):
        from .fingerprint import fingerprint

        return fingerprint(directory)
    return None


def _same(golden: Any, new: Any, tol: Tolerances) -> bool:
    if _is_missing(golden) or _is_missing(new):
        return _is_missing(golden) and _is_missing(new)
    if isinstance(golden, float) or isinstance(new, float):
        return _is_number(golden) and _is_number(new) and tol.close(float(golden), float(new))
    return bool(golden == new)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _markets(tables: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {r["market_id"] for rows in tables.values() for r in rows}


def _keyed(spec: Outcome, rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Rows by key; a repeated key gets an occurrence number so that nothing is silently merged."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[k] for k in spec.keys)
        n = 1
        while key + ((n,) if n > 1 else ()) in out:
            n += 1
        out[key + ((n,) if n > 1 else ())] = r
    return out


def _where(spec: Outcome, key: tuple[Any, ...]) -> str:
    parts = [f"{k}={v}" for k, v in zip(spec.keys, key, strict=False) if k not in ("market_id", "product_id")]
    if len(key) > len(spec.keys):
        parts.append(f"(occurrence {key[-1]})")
    return " ".join(parts) or "-"


def _sort_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((0, v) if isinstance(v, int | float) else (1, str(v)) for v in key)


def _row_key(keys: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """Sort key of a row by its key columns, ordered as the diff orders keys (numbers before text)."""
    return lambda r: _sort_key(tuple(r[k] for k in keys))


# == reading =============================================================================
def load_outcomes(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The outcome tables of a run directory (Parquet) or golden directory (CSV), as lists of rows."""
    if not directory.is_dir():
        raise RegressionInputError(f"{directory}: no such directory")
    out: dict[str, list[dict[str, Any]]] = {}
    for spec in OUTCOMES:
        csv_path, pq_path = directory / f"{spec.table}.csv", directory / f"{spec.table}.parquet"
        if csv_path.exists():
            out[spec.table] = _read_csv(spec, csv_path)
        elif pq_path.exists():
            out[spec.table] = _read_parquet(spec, pq_path)
        elif (directory / "manifest.json").exists() and (
            part_files(directory, spec.table) or _manifest(directory).get("completed") is False
        ):
            # an incomplete run: the parts it published (none if it never flushed the table)
            out[spec.table] = [r for p in part_files(directory, spec.table) for r in _read_parquet(spec, p)]
        else:
            raise RegressionInputError(
                f"{directory}: neither {csv_path.name} nor {pq_path.name}; not a flech-sim run or golden directory"
            )
    return out


def _read_parquet(spec: Outcome, path: Path) -> list[dict[str, Any]]:
    try:
        data = pq.read_table(path, columns=list(spec.columns))
    except (OSError, ValueError, KeyError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) for bad files
        raise RegressionInputError(f"{path}: cannot read the outcome columns: {exc}") from None
    cols = {c: data.column(c).to_pylist() for c in spec.columns}
    types = _types(spec)
    return [{c: _from_arrow(types[c], cols[c][i]) for c in spec.columns} for i in range(data.num_rows)]


def _from_arrow(type_: str, v: Any) -> Any:
    if type_ == "time" and isinstance(v, datetime):
        return v.isoformat()
    if type_ == "float" and v is not None:
        return float(v)
    return v


def _read_csv(spec: Outcome, path: Path) -> list[dict[str, Any]]:
    types = _types(spec)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in spec.columns if c not in (reader.fieldnames or [])]
        if missing:
            raise RegressionInputError(f"{path}: missing column(s) {missing}")
        rows = []
        for lineno, raw in enumerate(reader, start=2):
            try:
                rows.append({c: _from_text(types[c], raw[c]) for c in spec.columns})
            except ValueError as exc:
                raise RegressionInputError(f"{path}:{lineno}: {exc}") from None
        return rows


def _from_text(type_: str, text: str) -> Any:
    if type_ == "str":
        return text
    if text == "":
        return None
    if type_ == "int":
        return int(text)
    if type_ == "float":
        return float(text)
    if type_ == "bool":
        if text not in ("true", "false"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text == "true"
    return text  # time: ISO text


def _to_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _types(spec: Outcome) -> dict[str, str]:
    cols = {c.name: c.type for c in TABLES[spec.table].columns}
    return {c: cols[c] for c in spec.columns}


def _manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RegressionInputError(f"{path}: not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else {}


# == accepting ===========================================================================
def accept(run_dir: str | Path, golden_dir: str | Path) -> list[Path]:
    """Write a run's outcomes (CSV, sorted by key) and a manifest excerpt as the golden ones."""
    run_dir, golden_dir = Path(run_dir), Path(golden_dir)
    tables = load_outcomes(run_dir)
    manifest = _manifest(run_dir)
    if manifest.get("completed") is False:
        raise RegressionInputError(f"{run_dir}: the run did not complete; refusing to accept its outcomes")
    golden_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in OUTCOMES:
        rows = sorted(tables[spec.table], key=_row_key(spec.keys))
        path = golden_dir / f"{spec.table}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(spec.columns)
            for r in rows:
                w.writerow([_to_text(r[c]) for c in spec.columns])
        written.append(path)
    excerpt = {k: manifest[k] for k in MANIFEST_EXCERPT if k in manifest}
    fp = _fingerprint_of(run_dir, manifest)
    if fp:
        excerpt["fingerprint"] = fp
    path = golden_dir / "manifest.json"
    path.write_text(json.dumps(excerpt, indent=2, sort_keys=True) + "\n")
    written.append(path)
    return written


# == command line ========================================================================
def register_cli(sub: Any) -> None:
    c = sub.add_parser(
        "check",
        help="compare a run's clearing outcomes with golden ones (exit 0 same, 1 different, 2 bad input)",
        description="Compare the clearing outcomes of a run (market states, clearing prices, awards, settlements) "
        "with golden ones; print every difference and exit 1 if there is any.",
    )
    c.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory written by flech-sim run")
    c.add_argument(
        "--against",
        dest="golden_dir",
        type=Path,
        required=True,
        metavar="GOLDEN_DIR",
        help="golden outcomes (CSV) or another run directory",
    )
    c.add_argument(
        "--accept",
        action="store_true",
        help="write this run's outcomes into GOLDEN_DIR as the new golden ones (shows what changes)",
    )
    c.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"absolute tolerance of numbers, in their unit (default {DEFAULT_ATOL:g})",
    )
    c.add_argument(
        "--rtol", type=float, default=DEFAULT_RTOL, help=f"relative tolerance of numbers (default {DEFAULT_RTOL:g})"
    )
    c.add_argument("--max-lines", type=int, default=200, help="differences to print at most (default 200)")
    c.set_defaults(func=cli_check)


def cli_check(args: argparse.Namespace) -> int:
    try:
        tol = Tolerances(args.atol, args.rtol)
        if not args.run_dir.is_dir():
            raise RegressionInputError(f"{args.run_dir}: no such run directory")
        if args.accept:
            if args.golden_dir.is_dir():
                print(compare_runs(args.run_dir, args.golden_dir, tol).format(args.max_lines))
            written = accept(args.run_dir, args.golden_dir)
            print(f"accepted: wrote {len(written)} files to {args.golden_dir}")
            return EXIT_OK
        if not args.golden_dir.is_dir():
            raise RegressionInputError(
                f"{args.golden_dir}: no golden outcomes there; create them with "
                f"'flech-sim check {args.run_dir} --against {args.golden_dir} --accept'"
            )
        report = compare_runs(args.run_dir, args.golden_dir, tol)
    except RegressionInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report.format(args.max_lines))
    return EXIT_OK if report.ok else EXIT_DIFFERENT


# == formatting helpers ==================================================================
def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.10g}"
    return str(v)


def _show_delta(d: Difference) -> str:
    delta = d.delta
    if delta is None:
        return ""
    g = float(d.golden)
    rel = f" ({delta / abs(g):+.2%})" if g != 0 else ""
    return f"{delta:+.6g}{rel}"


def _aligned(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
