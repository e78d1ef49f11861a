"""The persistor's row path: batches published at the batch size, every row kept in order, only row types."""

from __future__ import annotations

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
