"""Result fingerprint: one SHA-256 over a run's outcome tables.

Two runs of the same scenario and seed must get the same fingerprint, on
any machine and with any pyarrow version; a changed outcome must change
it. So the hash is taken over a canonical form defined here, never over
the Parquet bytes (whose encoding, compression and row groups depend on
the writer):

* tables: every table of :data:`flech_sim.schema.TABLES` with
  ``deterministic=True`` (all but ``solver_timings``), in schema order;
  a table's name, row count, and each column's name and type are hashed
  too, so a schema change changes the fingerprint;
* columns in schema order, rows in file order (the order the run wrote
  them, which is itself deterministic); each part of a column's canonical
  form below (validity, values or lengths, string bytes) is hashed as a
  stream of its own, read in batches, and the streams' digests enter the
  fingerprint: a year-long run is hashed in constant memory, and batch or
  row-group boundaries do not matter;
* nulls: a validity byte per value, the value itself then hashed as zero;
* ``int`` and ``time``: int64 little endian (times as whole seconds since
  the epoch);
* ``bool``: one byte;
* ``str``: per value its UTF-8 length (int64 LE), then all bytes;
* ``float``: rounded to :data:`SIGNIFICANT_DIGITS` (9) significant
  decimal digits and hashed as an exact integer pair (mantissa, decimal
  exponent); magnitudes below :data:`ZERO_SNAP` (1e-9, in kW, kWh, DKK or
  DKK/kWh: far below anything meaningful) count as zero, and NaN, +inf and
  -inf have codes of their own. Rounding absorbs last-bit noise (solver
  dust, SIMD-dependent libm results in the household physics) that would
  otherwise make the fingerprint machine-dependent; the rounding uses
  only exactly rounded IEEE operations (multiplication or division by an
  exact power of ten, round-half-even), so it is itself the same
  everywhere.

One exception: ``messages.payload`` is the message's JSON text, hashed as
written. Its numbers are Python's shortest round-trip ``repr``, which
depends only on the double, not on the machine; but re-rounding them would
mean parsing every message (measured: about 35 µs per message, minutes on
a multi-million-message run), against under 1 µs for hashing the text. A
last-bit difference in a number that a message carries therefore changes
the fingerprint; use :func:`flech_sim.regression.compare_runs`, which has
tolerances, to tell whether such runs agree.
"""

from __future__ import annotations

import hashlib
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .schema import TABLES, Table

SCHEME = "flech-sim-fingerprint-v2"
"""Hashed first: bump it when the canonical form changes, so old and new fingerprints never collide."""
SIGNIFICANT_DIGITS = 9
ZERO_SNAP = 1e-9

# float value codes
_NULL, _ZERO, _FINITE, _NAN, _POS_INF, _NEG_INF = range(6)
_EXACT_POW10 = [float(10**k) for k in range(23)]  # 1e0 .. 1e22 are exact doubles


def fingerprint(run_dir: str | Path) -> str:
    """SHA-256 (hex) of the canonical form of a run's deterministic tables (see the module text)."""
    run_dir = Path(run_dir)
    h = hashlib.sha256(SCHEME.encode())
    for table in outcome_tables():
        path = run_dir / f"{table.name}.parquet"
        if not path.exists():
            raise FileNotFoundError(f"{run_dir}: no {table.name}.parquet; is this a flech-sim run directory?")
        _hash_table(h, table, pq.ParquetFile(path))
    pa.default_memory_pool().release_unused()  # Arrow's allocator would keep the freed batches otherwise
    return h.hexdigest()


def outcome_tables() -> list[Table]:
    """The tables that enter the fingerprint, in order."""
    import flech_sim.products  # noqa: F401  (registers the built-in products' own tables, e.g. crp_bids)

    return [t for t in TABLES.values() if t.deterministic]


_STREAMS = {"str": 3, "int": 2, "time": 2, "bool": 2, "float": 3}  # parts of a column's canonical form
BATCH_ROWS = 8192
"""Rows read at a time: memory stays flat however long the run. The hash does not depend on it; measured on a
10,000-home week, 65,536 rows peaked 90 MiB higher (a batch of message payloads, decoded, cast and measured)
at the same speed."""


def _hash_table(h: Any, table: Table, data: pq.ParquetFile) -> None:
    """Each part of each column's canonical form is its own SHA-256 stream, fed batch by batch
    in row order, so the result does not depend on how the rows are batched; the streams'
    digests then enter ``h`` column by column."""
    streams = {c.name: [hashlib.sha256() for _ in range(_STREAMS[c.type])] for c in table.columns}
    for batch in data.iter_batches(batch_size=BATCH_ROWS, columns=list(table.names)):
        for col in table.columns:
            for stream, part in zip(streams[col.name], _canonical(col.type, batch.column(col.name)), strict=True):
                stream.update(part)
    h.update(f"\ntable {table.name} rows {data.metadata.num_rows}\n".encode())
    for col in table.columns:
        h.update(f"column {col.name} {col.type}\n".encode())
        for stream in streams[col.name]:
            h.update(stream.digest())


def _canonical(type_: str, arr: pa.Array) -> list[bytes | memoryview]:
    valid = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=np.uint8)
    if type_ == "str":
        filled = pc.fill_null(arr.cast(pa.large_string()), "")
        lengths = np.asarray(pc.binary_length(filled).to_numpy(zero_copy_only=False), dtype="<i8")
        return [valid.tobytes(), lengths.tobytes(), _string_bytes(filled)]
    if type_ in ("int", "time"):
        if type_ == "time":
            arr = arr.cast(pa.timestamp("s")).cast(pa.int64())
        values = np.asarray(pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), dtype="<i8")
        return [valid.tobytes(), values.tobytes()]
    if type_ == "bool":
        values = np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=np.uint8)
        return [valid.tobytes(), values.tobytes()]
    if type_ == "float":
        values = np.asarray(pc.fill_null(arr.cast(pa.float64()), 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
        code, mantissa, exponent = canonical_floats(values)
        code[valid == 0] = _NULL
        mantissa[valid == 0] = 0
        exponent[valid == 0] = 0
        return [code.tobytes(), mantissa.astype("<i8").tobytes(), exponent.astype("<i8").tobytes()]
    raise ValueError(f"no canonical form for column type {type_!r}")


def _string_bytes(arr: pa.Array) -> memoryview | bytes:
    """The UTF-8 bytes of all values of a null-free large_string array, back to back: a view of the
    array's own buffer, not a copy (copying the whole buffer, then the slice, cost two copies of a batch of
    message payloads at the end of every run)."""
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    return memoryview(data_buf)[offsets[0] : offsets[-1]] if len(arr) else b""


def canonical_floats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(code, mantissa, exponent) with value ~= mantissa * 10**(exponent - 8) for code FINITE.

    ``mantissa`` has exactly :data:`SIGNIFICANT_DIGITS` digits (10**8 <= |m| < 10**9): ``rint(x * 10**k)``
    in IEEE double arithmetic (one exactly rounded multiplication or division by an exact power of ten,
    then round half to even). Within half an ulp of a decimal tie this may round the other way than
    exact decimal rounding would; it does so identically on every machine, which is what matters here.
    """
    x = np.asarray(values, dtype=np.float64)
    code = np.full(x.shape, _FINITE, dtype=np.uint8)
    mantissa = np.zeros(x.shape, dtype=np.int64)
    exponent = np.zeros(x.shape, dtype=np.int64)
    code[np.isnan(x)] = _NAN
    code[x == np.inf] = _POS_INF
    code[x == -np.inf] = _NEG_INF
    finite = np.isfinite(x)
    code[finite & (np.abs(np.where(finite, x, 0.0)) < ZERO_SNAP)] = _ZERO
    idx = np.flatnonzero(code == _FINITE)
    if idx.size:
        v = x[idx]
        e = np.floor(np.log10(np.abs(v))).astype(np.int64)
        m = _scaled(v, e)
        for _ in range(2):  # log10 may be off by one near powers of ten, and rounding may carry to 10**9
            high = np.abs(m) >= 10**SIGNIFICANT_DIGITS
            low = np.abs(m) < 10 ** (SIGNIFICANT_DIGITS - 1)
            fix = np.flatnonzero(high | low)
            if not fix.size:
                break
            e[fix] += np.where(high[fix], 1, -1)
            m[fix] = _scaled(v[fix], e[fix])
        mantissa[idx] = m
        exponent[idx] = e
    return code, mantissa, exponent


def _scaled(v: np.ndarray, e: np.ndarray) -> np.ndarray:
    """round(v * 10**(8 - e)) using one exactly rounded multiplication or division by an exact power of ten."""
    shift = (SIGNIFICANT_DIGITS - 1) - e  # multiply by 10**shift
    if np.all(np.abs(shift) <= 22):
        out = np.empty(v.shape, dtype=np.float64)
        pos = shift >= 0
        pw = np.asarray(_EXACT_POW10)[np.abs(shift)]
        out[pos] = v[pos] * pw[pos]
        out[~pos] = v[~pos] / pw[~pos]
        return np.rint(out).astype(np.int64)
    # |v| beyond 1e30: 10**shift is no exact double; scale exactly in decimal instead (rare, so slow is fine)
    return np.array(
        [
            int(Decimal(vi).scaleb(si).to_integral_value(ROUND_HALF_EVEN))
            for vi, si in zip(v.tolist(), shift.tolist(), strict=True)
        ],
        dtype=np.int64,
    )


def describe() -> str:
    """One line for documentation and the CLI."""
    names = ", ".join(t.name for t in outcome_tables())
    return (
        f"{SCHEME}: SHA-256 over {names}; floats at {SIGNIFICANT_DIGITS} significant digits, "
        f"|x| < {ZERO_SNAP:g} as zero; messages.payload as written"
    )
