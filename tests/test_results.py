"""The results API reads back exactly what a run wrote, lazily and filtered; many runs concatenate exactly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from flech_sim.docs import tables_markdown
from flech_sim.results import NotARunError, Run, open_run, open_runs
from flech_sim.scenario import load_scenario, scenario_from_dict
from flech_sim.schema import TABLES
from flech_sim.simulation import run

from .conftest import REPO, scenario_dict


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results") / "default-run"
    result = run(load_scenario(REPO / "scenarios" / "default.yaml"), out)
    assert result.completed, result.error
    return out


def test_every_table_reads_back_as_written(run_dir: Path) -> None:
    r = open_run(run_dir)
    assert r.run_id == "default-run" and r.manifest["completed"] is True
    for name, table in TABLES.items():
        df = r.table(name)
        raw = pd.read_parquet(run_dir / f"{name}.parquet")
        assert list(df.columns) == list(table.names), name
        assert len(df) == len(raw) == r.manifest["row_counts"][name] == r.count(name), name
        for c in table.columns:
            if c.type == "time":
                assert pd.api.types.is_datetime64_any_dtype(df[c.name]), (name, c.name)
                assert (df[c.name].isna() == raw[c.name].isna()).all()
                assert (df[c.name].dropna() == raw[c.name].dropna().astype("datetime64[ns]")).all()
            else:
                pd.testing.assert_series_equal(df[c.name], raw[c.name], check_dtype=False, check_names=False)


def test_columns_and_filters_are_applied_while_reading(run_dir: Path) -> None:
    r = open_run(run_dir)
    bids = r.table("bids")
    seller = bids.seller.iloc[0]
    expected = bids[(bids.seller == seller) & bids.interval.isin([0, 2])][["bid_id", "interval", "quantity_kw"]]
    got = r.table("bids", columns=["bid_id", "interval", "quantity_kw"], filter={"seller": seller, "interval": [0, 2]})
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected.reset_index(drop=True))
    # tuples, timestamps given as text, and pyarrow expressions
    cut = bids.interval_start.sort_values().iloc[len(bids) // 2]
    later = r.table("bids", filter=[("interval_start", ">=", str(cut)), ("seller", "!=", seller)])
    assert len(later) == ((bids.interval_start >= cut) & (bids.seller != seller)).sum() > 0
    expr = r.table("bids", filter=pc.field("price") > bids.price.median())
    assert len(expr) == (bids.price > bids.price.median()).sum()
    assert r.count("bids", {"seller": seller}) == (bids.seller == seller).sum()


def test_dataset_is_lazy_and_filterable(run_dir: Path) -> None:
    dset = open_run(run_dir).dataset("portfolio_load")
    assert isinstance(dset, ds.Dataset)
    part = dset.to_table(columns=["load_kw"], filter=pc.field("location") == "feeder-2")
    full = pd.read_parquet(run_dir / "portfolio_load.parquet")
    assert part.num_rows == (full.location == "feeder-2").sum() > 0
    assert part.column_names == ["load_kw"]


def test_unknown_names_are_clear_errors(run_dir: Path) -> None:
    r = open_run(run_dir)
    with pytest.raises(KeyError) as exc:
        r.table("bid")
    assert "unknown table 'bid'" in str(exc.value) and "bids" in str(exc.value) and "settlements" in str(exc.value)
    with pytest.raises(KeyError, match="no column"):
        r.table("bids", columns=["nope"])
    with pytest.raises(KeyError, match="unknown column"):
        r.table("bids", filter={"nope": 1})
    with pytest.raises(NotARunError, match="not a run directory"):
        open_run(run_dir.parent)


def test_a_table_missing_from_an_older_run_reads_empty(run_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    (old / "activations.parquet").unlink()
    df = open_run(old).table("activations")
    assert df.empty and list(df.columns) == list(TABLES["activations"].names)


def _small_runs(root: Path, n: int) -> list[Path]:
    """n runs of a short scenario with different seeds (different bids and loads), about 0.05 s each."""
    paths = []
    for i in range(n):
        doc = scenario_dict(seed=i, horizon_hours=60, name="tiny")
        doc["buyers"][0]["markets"][0]["count"] = 1
        out = root / f"run-{i:02d}"
        assert run(scenario_from_dict(doc), out).completed
        paths.append(out)
    return paths


def test_twenty_runs_concatenate_to_the_sum_of_their_rows(tmp_path: Path) -> None:
    paths = _small_runs(tmp_path / "sweep", 20)
    runs = open_runs(tmp_path / "sweep")
    assert len(runs) == 20 and runs.run_ids == [p.name for p in paths]
    for name in TABLES:
        each = [open_run(p).table(name) for p in paths]
        combined = runs.table(name)
        assert (
            len(combined) == sum(len(df) for df in each) == sum(Run(p).manifest["row_counts"][name] for p in paths)
        ), name
        assert list(combined.columns) == ["run_id", *TABLES[name].names]
        assert combined.run_id.value_counts().reindex([p.name for p in paths]).fillna(0).tolist() == [
            len(df) for df in each
        ], name
    # the same runs opened by glob and by list
    assert open_runs(str(tmp_path / "sweep" / "run-1*")).run_ids == [f"run-1{i}" for i in range(10)]
    assert len(open_runs(paths[:3]).table("markets")) == sum(len(open_run(p).table("markets")) for p in paths[:3])
    m = runs.manifests()
    assert m.run_id.tolist() == runs.run_ids and m.completed.all()


def test_run_ids_stay_unique_when_directory_names_repeat(tmp_path: Path) -> None:
    src = _small_runs(tmp_path / "src", 1)[0]
    for a in ("a", "b"):
        shutil.copytree(src, tmp_path / "sweep" / a / "seed0")
    runs = open_runs(tmp_path / "sweep")
    assert sorted(runs.run_ids) == ["a/seed0", "b/seed0"]
    assert runs.table("markets").run_id.nunique() == 2


def test_table_docs_are_generated_from_the_schema() -> None:
    committed = (REPO / "docs" / "tables.md").read_text()
    assert committed == tables_markdown(), "docs/tables.md is stale: run python scripts/gen_table_docs.py"
    for name, table in TABLES.items():
        assert f"`{name}.parquet`" in committed
        assert all(f"| `{c.name}` |" in committed for c in table.columns)
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_table_docs.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
