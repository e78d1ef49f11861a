"""The persistor's row path: batches published at the batch size, every row kept in order, only row types."""

from __future__ import annotations

import errno
import hashlib
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import flech_sim.persistor as persistor_mod
from flech_sim.persistor import Persistor, part_files
from flech_sim.schema import row


def _rejection(i: int) -> tuple[object, ...]:
    return row(
        "rejections",
        msg_id=f"flech-{i:07d}",
        ref_msg_id=f"agg-{i}",
        ref_kind="bid",
        participant="agg-a",
        market_id="m1",
        product_id="SRP",
        reason="malformed",
        detail=f"row {i}",
        at=i,
    )


@pytest.mark.parametrize("convert_rows", [1, 4, 10, 4096])
def test_rows_are_published_in_batches_and_all_kept_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, convert_rows: int
) -> None:
    monkeypatch.setattr(persistor_mod, "CONVERT_ROWS", convert_rows)
    p = Persistor(tmp_path, datetime(2026, 1, 12), batch_rows=10)
    for i in range(25):
        p.append("rejections", _rejection(i))
        assert p.row_counts["rejections"] == i + 1
        assert p.published_rows["rejections"] <= 10 * ((i + 1) // 10)  # never claimed before it is written
        p.sync()  # the writer thread has written what it was handed
        assert p.published_rows["rejections"] == 10 * ((i + 1) // 10)  # a part exactly at each full batch
    assert [pq.read_metadata(f).num_rows for f in part_files(tmp_path, "rejections")] == [10, 10]
    assert p.close() == {}
    t = pq.read_table(tmp_path / "rejections.parquet")
    assert t.column("detail").to_pylist() == [f"row {i}" for i in range(25)]
    assert t.column("at").to_pylist() == [datetime(2026, 1, 12) + timedelta(minutes=i) for i in range(25)]
    assert p.published_rows["rejections"] == 25 and part_files(tmp_path, "rejections") == []


def test_bulk_columns_and_rows_share_one_batch(tmp_path: Path) -> None:
    p = Persistor(tmp_path, datetime(2026, 1, 12), batch_rows=10)
    for i in range(3):
        p.append("rejections", _rejection(i))
    names = _rejection(0)._fields  # type: ignore[attr-defined]
    cols = {name: [getattr(_rejection(i), name) for i in range(3, 9)] for name in names}
    p.append_columns("rejections", cols)
    assert p.published_rows["rejections"] == 0  # 9 rows: no batch yet
    p.append("rejections", _rejection(9))
    p.sync()
    assert p.published_rows["rejections"] == 10
    p.close()
    assert pq.read_table(tmp_path / "rejections.parquet").column("msg_id").to_pylist() == [
        f"flech-{i:07d}" for i in range(10)
    ]


def test_only_the_tables_row_type_is_taken(tmp_path: Path) -> None:
    p = Persistor(tmp_path, datetime(2026, 1, 12))
    with pytest.raises(TypeError, match=r"schema\.row"):
        p.append("rejections", tuple(_rejection(0)))  # the same values, positionally: refused
    with pytest.raises(TypeError, match=r"schema\.row"):
        p.append("messages", _rejection(0))  # another table's row
    assert p.row_counts["rejections"] == 0 and p.row_counts["messages"] == 0


def _digests(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.glob("*.parquet"))}


def test_write_behind_files_are_the_bytes_one_thread_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread writes exactly what writing inline does."""

    def fill(p: Persistor) -> None:
        for i in range(95):
            p.append("rejections", _rejection(i))
        assert p.close() == {}

    fill(Persistor(tmp_path / "threaded", datetime(2026, 1, 12), batch_rows=20))
    inline = Persistor(tmp_path / "inline", datetime(2026, 1, 12), batch_rows=20)
    monkeypatch.setattr(inline._writer, "submit", lambda task: task())  # each part written in this thread
    fill(inline)
    assert pq.ParquetFile(tmp_path / "inline" / "rejections.parquet").num_row_groups == 5
    assert _digests(tmp_path / "threaded") == _digests(tmp_path / "inline") and _digests(tmp_path / "inline")


def test_a_failed_part_write_is_raised_at_the_next_append_and_its_rows_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pq.write_table
    fail = threading.Event()

    def write_table(data: object, where: object, **kw: object) -> None:
        if fail.is_set() and threading.current_thread().name == "flech-persistor-writer":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(data, where, **kw)

    monkeypatch.setattr(pq, "write_table", write_table)
    p = Persistor(tmp_path, datetime(2026, 1, 12), batch_rows=10)
    for i in range(10):
        p.append("rejections", _rejection(i))
    p.sync()
    fail.set()
    for i in range(10, 20):  # part 2 is handed over and fails in the writer
        p.append("rejections", _rejection(i))
    p._writer.wait()
    with pytest.raises(OSError, match="No space left"):  # raised where the simulation runs, once
        p.append("rejections", _rejection(20))
    for i in range(21, 30):  # part 3: must not be published after the gap
        p.append("rejections", _rejection(i))
    p._writer.wait()
    assert [pq.read_metadata(f).num_rows for f in part_files(tmp_path, "rejections")] == [10]
    p.sync()
    assert p.published_rows["rejections"] == 10
    fail.clear()
    for i in range(30, 33):
        p.append("rejections", _rejection(i))
    assert p.close() == {}  # already raised: the table is complete at close, nothing to report twice
    t = pq.read_table(tmp_path / "rejections.parquet")
    assert t.column("detail").to_pylist() == [f"row {i}" for i in range(33)]


def test_a_failed_part_write_found_only_at_close_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pq.write_table

    def write_table(data: object, where: object, **kw: object) -> None:
        if threading.current_thread().name == "flech-persistor-writer":
            raise OSError(errno.EIO, "Input/output error")
        real(data, where, **kw)

    monkeypatch.setattr(pq, "write_table", write_table)
    p = Persistor(tmp_path, datetime(2026, 1, 12), batch_rows=10)
    for i in range(10):
        p.append("rejections", _rejection(i))
    errors = p.close()
    assert set(errors) == {"rejections"} and "Input/output error" in errors["rejections"]
    assert pq.read_table(tmp_path / "rejections.parquet").num_rows == 10  # its rows are in the final file
