"""Storage persistor: the single path from the platform to storage.

Rows are buffered per table in column order and streamed to Parquet in
large row groups (the measured difference between 1 k-row and 50 k-row
batches is 5x in speed and 2x in size). Every table of :mod:`schema` is
written, empty ones included, so that an analyst can always load all of
them.

A run can be stopped at any moment (SIGKILL, a full disk), so nothing is
ever written under a name a reader trusts until it is complete: each
flushed batch becomes a finished Parquet file ``<table>.parts/part-NNNNNN.parquet``
(written under a temporary name, then renamed: atomic on POSIX), so every
flushed row stays readable whatever happens next. ``close()`` joins a
table's parts, row group by row group, into ``<table>.parquet`` (again via
a temporary name) and removes them: a complete run looks exactly as if the
table had been streamed into one file. Each table closes on its own: one
that cannot be written does not stop the others, and the errors are
returned (and recorded in the manifest by the caller). The manifest, too,
is replaced atomically.

Write-behind: a full batch is encoded, compressed, written and fsynced by one
writer thread (pyarrow releases the GIL while it encodes and compresses, and
fsync waits on the disk), fed through a bounded queue; the simulation's thread
only converts rows to Arrow (which needs the GIL wherever it runs) and hands
the batch over. A part counts as published only once the writer has renamed
it; the simulation's thread learns of it (``published_rows``, ``on_publish``)
at its next chunk or flush. A write that fails is re-raised in the simulation's
thread at the next append (at the latest at the next chunk) or reported by
``close``; its rows, and every later batch of that table, are kept and written
into the table's final file at close, in order, as a failed synchronous write
left them. The files are byte for byte what writing inline gives. (Joining
tables two at a time at close measured slower, 66 -> 76 ms wall for the
message benchmark's close: the conversion of the last rows holds the GIL.)
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schema import ARROW_TYPES, ROW_TYPES, TABLES, Table
from .schema import row as schema_row

DEFAULT_BATCH_ROWS = 50_000
CONVERT_ROWS = 4096
"""Row tuples are converted to Arrow in chunks of this size; a Parquet row group holds a batch."""
PARTS_SUFFIX = ".parts"
"""``<table>.parts/``: the finished batches of a table not yet joined into ``<table>.parquet``."""
MANIFEST = "manifest.json"
WRITE_QUEUE = 4
"""Batches handed to the writer thread and not yet written: bounds the memory held while the disk is slow
(the simulation's thread waits when the queue is full)."""
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": False}
"""How every table is written. No dictionary encoding: most columns are unique or nearly (message IDs,
JSON payloads, times, quantities), where a dictionary is built only to be abandoned; zstd finds the
repeats anyway. Measured on 50,000 ``messages`` rows: writing 0.80 -> 0.28 us a row, reading back (as
``close`` does to join the parts) 2.16 -> 0.20 us a row, and the file half the size."""


def part_files(out_dir: Path, table: str) -> list[Path]:
    """The published parts of a table in row order (empty if it has none, e.g. a closed run)."""
    d = Path(out_dir) / f"{table}{PARTS_SUFFIX}"
    return sorted(d.glob("part-*.parquet")) if d.is_dir() else []


def _publish(tmp: Path, final: Path) -> None:
    """Make a finished file visible under its final name in one step, durable first."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


_require_row_types = True


def require_row_types(on: bool = True) -> None:
    """Whether :meth:`Persistor.append` refuses any row that is not its table's row type
    (``schema.row(table, ...)``), so positional tuples cannot come back. On by default: every writer
    builds rows by name; switching it off exists only to measure what the check costs."""
    global _require_row_types
    _require_row_types = on


class _Writer:
    """The write-behind thread: runs the tasks handed to it one at a time, in order.

    A task's exception does not stop the thread (later tasks decide themselves what to do about an
    earlier failure); tasks catch their own errors, so this only guards against a bug in one."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=WRITE_QUEUE)
        self._thread: threading.Thread | None = None
        self.crashed: BaseException | None = None

    def submit(self, task: Callable[[], None]) -> None:
        if self._thread is None:  # started on the first full batch: short runs never start it
            self._thread = threading.Thread(target=self._loop, name="flech-persistor-writer", daemon=True)
            self._thread.start()
        self._queue.put(task)

    def _loop(self) -> None:
        while (task := self._queue.get()) is not None:
            try:
                task()
            except BaseException as exc:  # noqa: BLE001 -- kept and re-raised in the simulation's thread
                self.crashed = self.crashed or exc
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def wait(self) -> None:
        """Until every task handed over so far has run."""
        if self._thread is not None:
            self._queue.join()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class Persistor:
    def __init__(self, out_dir: Path, start: datetime, batch_rows: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._epoch_s = int(start.timestamp()) if start.tzinfo else int((start - datetime(1970, 1, 1)).total_seconds())
        self._batch_rows = batch_rows or DEFAULT_BATCH_ROWS  # read at call time (tests shrink it)
        self._buffers: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
        self._parts: dict[str, list[pa.Table]] = {name: [] for name in TABLES}  # columnar batches, in order
        self._pending: dict[str, int] = {name: 0 for name in TABLES}  # rows in _parts, not yet published
        self._room: dict[str, int] = {name: self._room_for(0) for name in TABLES}  # rows to buffer before work
        self._n_parts: dict[str, int] = {name: 0 for name in TABLES}
        self.row_counts: dict[str, int] = {name: 0 for name in TABLES}
        self.published_rows: dict[str, int] = {name: 0 for name in TABLES}
        """Rows in finished part files: what survives if the process is killed now."""
        self.on_publish: Callable[[], None] | None = None
        """Called after each published part (the run uses it to keep the manifest's progress current)."""
        self.errors: dict[str, str] = {}
        """Tables that could not be written at close: name -> one-line reason."""
        self._closed = False
        self._writer = _Writer()
        self._done: deque[tuple[str, int]] = deque()  # (table, rows) published by the writer, not yet counted
        self._unwritten: dict[str, list[pa.Table]] = {}  # per table: batches from the first failed write on
        self._failure: tuple[str, BaseException] | None = None  # the first failed write, until raised or reported
        self._failed_part: Exception | None = None  # a failed write found only at close (reported in errors)
        self._structs: dict[str, tuple[Table, pa.StructType]] = {}  # per table: the row type Arrow reads rows as
        for name in TABLES:  # parts left by an earlier run into the same directory must not mix in
            stale = self.out_dir / f"{name}{PARTS_SUFFIX}"
            if stale.is_dir():
                shutil.rmtree(stale)

    def add_table(self, name: str) -> None:
        """Take rows for a table registered after this persistor was made (a plug-in product's own)."""
        if name not in self._buffers:
            self._buffers[name], self._parts[name], self._pending[name] = [], [], 0
            self._room[name] = self._room_for(0)
            self._n_parts.setdefault(name, 0)
            self.row_counts.setdefault(name, 0)

    # -- writing rows -------------------------------------------------------------
    def append(self, table: str, row: tuple[Any, ...]) -> None:
        """Add one row given in the table's column order (the fast path): a ``schema.row`` named tuple.

        The hot path of every run (several rows a message): one identity test of the row's type, a
        list append and a count; rows are turned into Arrow columns :data:`CONVERT_ROWS` at a time
        (one C-level transpose) and published :attr:`_batch_rows` at a time."""
        if _require_row_types and type(row) is not ROW_TYPES[table]:
            raise TypeError(f"table {table!r} takes schema.row({table!r}, ...) rows, not {type(row).__name__}")
        buf = self._buffers[table]
        buf.append(row)
        self.row_counts[table] += 1
        if len(buf) >= self._room[table]:  # a chunk is full, or the writer failed (it sets every room to 0)
            self._collect()
            self._rows_to_part(table)
            if self._pending[table] >= self._batch_rows:
                self._flush(table)

    def _room_for(self, pending: int) -> int:
        """Rows to buffer before the next conversion: a chunk, or what is left of the batch."""
        return min(CONVERT_ROWS, self._batch_rows - pending)

    def append_dict(self, table: str, row: Mapping[str, Any]) -> None:
        """Add one row by column name; unknown or missing columns are an error, not a silent drop."""
        names = TABLES[table].names
        extra = set(row) - set(names)
        if extra:
            raise KeyError(f"table {table!r} has no column(s) {sorted(extra)}")
        missing = [n for n in names if n not in row and not _nullable(TABLES[table], n)]
        if missing:
            raise KeyError(f"table {table!r}: missing value(s) for {missing}")
        self.append(table, schema_row(table, **{n: row.get(n) for n in names}))

    def append_columns(self, table: str, columns: Mapping[str, Any]) -> None:
        """Add many rows at once from equal-length columns (lists or numpy arrays): the bulk path."""
        t = TABLES[table]
        if set(columns) != set(t.names):
            raise KeyError(f"table {table!r} needs exactly the columns {list(t.names)}; got {sorted(columns)}")
        part = pa.Table.from_arrays([self._array(c.type, columns[c.name]) for c in t.columns], schema=t.arrow_schema())
        self._collect()
        self._rows_to_part(table)
        self._parts[table].append(part)
        self.row_counts[table] += part.num_rows
        self._pending[table] += part.num_rows
        if self._pending[table] >= self._batch_rows:
            self._flush(table)
        else:
            self._room[table] = self._room_for(self._pending[table])

    # -- flushing -----------------------------------------------------------------
    def _rows_to_part(self, name: str) -> None:
        buf = self._buffers[name]
        if not buf:
            return
        table = TABLES[name]
        self._parts[name].append(pa.Table.from_arrays(self._columns(table, buf), schema=table.arrow_schema()))
        self._pending[name] += len(buf)
        self._room[name] = max(1, self._room_for(self._pending[name]))  # >= 1: append then flushes
        buf.clear()

    def _flush(self, name: str) -> None:
        """Hand what is buffered to the writer as one part file (one row group, as before)."""
        self._collect()
        self._rows_to_part(name)
        parts = self._parts[name]
        if not parts:
            return
        data = pa.concat_tables(parts)
        d = self.out_dir / f"{name}{PARTS_SUFFIX}"
        d.mkdir(exist_ok=True)
        final = d / f"part-{self._n_parts[name] + 1:06d}.parquet"
        self._writer.submit(lambda: self._write_part(name, data, final))  # waits while the queue is full
        self._n_parts[name] += 1
        parts.clear()
        self._pending[name] = 0
        self._room[name] = self._room_for(0)

    def _write_part(self, name: str, data: pa.Table, final: Path) -> None:
        """In the writer thread: encode, write and publish one part; on failure keep it (and every later
        batch of the table) for close, and make the next append raise."""
        later = self._unwritten.get(name)
        if later is not None:  # an earlier part failed: writing this one would leave a gap in the parts
            later.append(data)
            return
        tmp = final.parent / f".{final.name}.tmp"
        try:
            pq.write_table(data, tmp, **PARQUET_OPTIONS)
            _publish(tmp, final)
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the simulation's thread
            tmp.unlink(missing_ok=True)
            self._unwritten[name] = [data]
            if self._failure is None:
                self._failure = (name, exc)
            for table in list(self._room):  # every append takes the slow path, which raises it
                self._room[table] = 0
            return
        self._done.append((name, data.num_rows))

    def _collect(self) -> None:
        """In the simulation's thread: count what the writer published, and raise what it could not write."""
        done = self._done
        while done:
            name, n = done.popleft()
            self.published_rows[name] += n
            if self.on_publish is not None:
                self.on_publish()
        if self._writer.crashed is not None and self._failure is None:
            self._failure, self._writer.crashed = ("", self._writer.crashed), None
        if self._failure is not None:
            _, exc = self._failure
            self._failure = None
            for table in self._room:
                self._room[table] = max(1, self._room_for(self._pending[table]))  # as _rows_to_part leaves it
            raise exc

    def sync(self) -> None:
        """Wait until the writer has written every batch handed to it, count them, and raise its failure."""
        self._writer.wait()
        self._collect()

    def _columns(self, table: Table, rows: list[tuple[Any, ...]]) -> list[pa.Array]:
        """The rows as one Arrow array per column. One pass over the rows, in C: read as a struct array
        and split, which touches each row once (column by column touched each row once a column, and the
        rows lie scattered in memory by then: 2 to 3 us a row in a run, against under 1 us). Times are
        read as int64 minutes and converted per column. Anything it refuses goes column by column, which
        says what is wrong as before."""
        struct = self._structs.get(table.name)
        if struct is None or struct[0] is not table:
            fields = [pa.field(c.name, pa.int64() if c.type == "time" else ARROW_TYPES[c.type]) for c in table.columns]
            struct = self._structs[table.name] = (table, pa.struct(fields))
        try:
            parts = pa.array(rows, type=struct[1]).flatten()
        except Exception:  # noqa: BLE001 -- the column-by-column path raises what is wrong, as it always did
            cols = list(zip(*rows, strict=True))
            return [self._array(c.type, col) for c, col in zip(table.columns, cols, strict=True)]
        return [self._minutes(a) if c.type == "time" else a for c, a in zip(table.columns, parts, strict=True)]

    def _minutes(self, minutes: pa.Array) -> pa.Array:
        """Simulated minutes (int64, nulls kept) -> timestamps."""
        return pc.add(pc.multiply(minutes, 60), self._epoch_s).cast(pa.timestamp("s"))

    def _array(self, type_: str, values: Any) -> pa.Array:
        if type_ == "time":  # simulated minutes -> timestamps, nulls kept
            return self._minutes(pa.array(values, type=pa.int64()))
        return pa.array(values, type=ARROW_TYPES[type_])

    def flush(self) -> None:
        """Publish everything buffered as parts, and wait until they are written."""
        for name in TABLES:
            if name in self._buffers:
                self._flush(name)
        self.sync()

    def close(self) -> dict[str, str]:
        """Flush everything and write each table's final file, empty tables included.

        Every table is closed on its own, so one that fails (a full disk, a value Arrow cannot
        store) loses only itself; its published parts stay where they are. Returns (and keeps in
        :attr:`errors`) the tables that failed, each with a one-line reason.
        """
        if self._closed:
            return self.errors
        self._closed = True
        self._writer.wait()
        self._writer.stop()
        try:
            self._collect()
        except Exception as exc:  # noqa: BLE001 -- a part the writer could not publish: its rows go in at close
            self._failed_part = exc
        failed = self._failed_tables()
        tables = list(TABLES.values())
        outcomes = [self._close_caught(t) for t in tables]  # in turn: two at a time measured slower (GIL)
        # Arrow's allocator keeps what joining the parts freed (a decoded part of every table); hand it back,
        # or the steps after the run (twin, study tables, fingerprint) peak on top of it.
        pa.default_memory_pool().release_unused()
        for table, err in zip(tables, outcomes, strict=True):
            name = table.name
            if err is not None:
                self.errors[name] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            elif name in failed:
                self.errors[name] = failed[name]
        return self.errors

    def _close_caught(self, table: Table) -> BaseException | None:
        try:
            self._close_table(table)
        except Exception as exc:  # noqa: BLE001 -- recorded per table; the others are still written
            return exc
        return None

    def _failed_tables(self) -> dict[str, str]:
        """Tables a part of which the writer could not publish during the run (its rows are written at close
        all the same): the reason, to report in :attr:`errors` when it was not raised before."""
        exc = self._failed_part
        if exc is None:
            return {}
        reason = f"a part could not be written during the run: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        return {name: reason for name in self._unwritten} or {"(writer)": reason}

    def _close_table(self, table: Table) -> None:
        name = table.name
        final = self.out_dir / f"{name}.parquet"
        tmp = self.out_dir / f".{name}.parquet.tmp"
        self._rows_to_part(name)
        pending = self._unwritten.get(name, []) + self._parts[name]  # a failed part's rows, then the rest
        parts = part_files(self.out_dir, name)
        schema = table.arrow_schema()
        try:
            with pq.ParquetWriter(tmp, schema, **PARQUET_OPTIONS) as w:
                for p in parts:  # each part is one row group: the joined file is what streaming wrote
                    data = pq.read_table(p)
                    w.write_table(pa.Table.from_arrays(data.columns, schema=schema))
                if pending:
                    w.write_table(pa.concat_tables(pending))
            _publish(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        n = sum(t.num_rows for t in pending)
        self._parts[name].clear()
        self._unwritten.pop(name, None)
        self._pending[name] = 0
        self._room[name] = self._room_for(0)
        self.published_rows[name] += n
        shutil.rmtree(self.out_dir / f"{name}{PARTS_SUFFIX}", ignore_errors=True)

    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        """Write manifest.json atomically (a reader never sees half of it), with the row counts."""
        path = self.out_dir / MANIFEST
        tmp = self.out_dir / f".{MANIFEST}.tmp"
        data = dict(manifest)
        data["row_counts"] = dict(self.row_counts if self._closed and not self.errors else self.published_rows)
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        _publish(tmp, path)
        return path


def _nullable(table: Table, name: str) -> bool:
    return next(c.nullable for c in table.columns if c.name == name)
