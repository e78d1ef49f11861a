"""Result fingerprint: same seed -> same hash; any real change -> another hash; encoding does not matter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import flech_sim.fingerprint as fp_module
from flech_sim.fingerprint import canonical_floats, fingerprint, outcome_tables
from flech_sim.scenario import load_scenario
from flech_sim.schema import TABLES
from flech_sim.simulation import run

from .conftest import REPO

SCENARIO = REPO / "tests" / "reference_scenarios" / "srp_scarce_supply.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fp")
    scenario = load_scenario(SCENARIO)
    out = {}
    for name, seed in (("a", 5), ("b", 5), ("other", 6)):
        result = run(scenario.model_copy(update={"seed": seed}), root / name)
        assert result.completed, result.error
        out[name] = result.out_dir
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(path: Path, table: pa.Table, **kw) -> None:  # type: ignore[no-untyped-def]
    pq.write_table(table, path, **kw)


def test_same_seed_same_fingerprint_other_seed_differs(runs: dict[str, Path]) -> None:
    a, b, other = (fingerprint(runs[k]) for k in ("a", "b", "other"))
    assert len(a) == 64 and int(a, 16) >= 0
    assert a == b
    assert a != other


def test_manifest_fingerprint_is_this_one_when_stored(runs: dict[str, Path]) -> None:
    manifest = json.loads((runs["a"] / "manifest.json").read_text())
    if "fingerprint" not in manifest:
        pytest.skip("simulation.run does not store the fingerprint in the manifest yet")
    assert manifest["fingerprint"] == fingerprint(runs["a"])


def test_only_deterministic_tables_count(runs: dict[str, Path], tmp_path: Path) -> None:
    assert [t.name for t in outcome_tables()] == [n for n, t in TABLES.items() if t.deterministic]
    assert "solver_timings" not in {t.name for t in outcome_tables()}
    d = _copy(runs["a"], tmp_path / "d")
    timings = pq.read_table(d / "solver_timings.parquet")
    _rewrite(d / "solver_timings.parquet", timings.set_column(3, "solve_time_s", pa.array([9.9] * timings.num_rows)))
    (d / "manifest.json").write_text("{}")  # nor does the manifest
    assert fingerprint(d) == fingerprint(runs["a"])


def test_independent_of_parquet_encoding(runs: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(runs["a"], tmp_path / "d")
    for name in TABLES:
        t = pq.read_table(d / f"{name}.parquet")
        # other codec, one-row row groups, dictionary encoding off, string columns as large_string
        t = t.cast(
            pa.schema(
                [pa.field(f.name, pa.large_string() if f.type == pa.string() else f.type, f.nullable) for f in t.schema]
            )
        )
        _rewrite(d / f"{name}.parquet", t, compression="gzip", row_group_size=1, use_dictionary=False)
    assert fingerprint(d) == fingerprint(runs["a"])


def test_independent_of_the_batches_it_is_read_in(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables are hashed in batches (constant memory for a year-long run); where the batches
    end must not matter."""
    whole = fingerprint(runs["a"])
    monkeypatch.setattr(fp_module, "BATCH_ROWS", 7)
    assert fingerprint(runs["a"]) == whole


def test_float_noise_below_nine_digits_is_ignored_real_changes_are_not(runs: dict[str, Path], tmp_path: Path) -> None:
    def perturbed(rel: float) -> str:
        d = tmp_path / f"d{rel}"
        shutil.copytree(runs["a"], d, dirs_exist_ok=True)
        t = pq.read_table(d / "portfolio_load.parquet")
        i = t.schema.get_field_index("load_kw")
        _rewrite(d / "portfolio_load.parquet", t.set_column(i, "load_kw", pc.multiply(t["load_kw"], 1 + rel)))
        return fingerprint(d)

    base = fingerprint(runs["a"])
    assert perturbed(1e-13) == base  # last-bit noise
    assert perturbed(1e-6) != base  # a real change of the physics


@pytest.mark.parametrize(
    "table,column,value",
    [
        ("awards", "seller", "someone-else"),
        ("clearings", "status", "infeasible"),
        ("clearing_intervals", "interval", 7),
        ("markets", "cleared_at", None),
        ("settlements", "meter_gap", True),
        ("messages", "payload", "{}"),
    ],
)
def test_any_changed_cell_changes_it(
    runs: dict[str, Path], tmp_path: Path, table: str, column: str, value: object
) -> None:
    d = _copy(runs["a"], tmp_path / "d")
    t = pq.read_table(d / f"{table}.parquet")
    values = t[column].to_pylist()
    values[0] = value
    i = t.schema.get_field_index(column)
    _rewrite(d / f"{table}.parquet", t.set_column(i, t.schema.field(i), pa.array(values, t.schema.field(i).type)))
    assert fingerprint(d) != fingerprint(runs["a"])


def test_dropped_row_and_moved_string_boundary_change_it(runs: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(runs["a"], tmp_path / "d")
    t = pq.read_table(d / "awards.parquet")
    _rewrite(d / "awards.parquet", t.slice(1))
    assert fingerprint(d) != fingerprint(runs["a"])
    # "ab" + "c" must not hash like "a" + "bc"
    d2 = _copy(runs["a"], tmp_path / "d2")
    prints = []
    for pair in (["ab", "c"], ["a", "bc"]):
        t = pq.read_table(runs["a"] / "markets.parquet")
        notes = t["note"].to_pylist()
        notes[0], notes[1] = pair
        i = t.schema.get_field_index("note")
        _rewrite(d2 / "markets.parquet", t.set_column(i, "note", pa.array(notes)))
        prints.append(fingerprint(d2))
    assert prints[0] != prints[1]


def test_missing_table_is_an_error(runs: dict[str, Path], tmp_path: Path) -> None:
    d = _copy(runs["a"], tmp_path / "d")
    (d / "awards.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"awards\.parquet"):
        fingerprint(d)


def test_canonical_floats() -> None:
    x = np.array(
        [
            0.0,
            -0.0,
            1e-10,
            -1e-10,
            1.0,
            0.1,
            1 / 3,
            -2 / 3,
            63.019999999999996,
            63.02,
            9.9999999996,
            999999999.7,
            1e35,
            np.nan,
            np.inf,
            -np.inf,
            123456789.5,
            123456788.5,
        ]
    )
    code, m, e = canonical_floats(x)
    got = list(zip(code.tolist(), m.tolist(), e.tolist(), strict=True))
    zero, finite, nan, pinf, ninf = 1, 2, 3, 4, 5
    assert got[:4] == [(zero, 0, 0)] * 4  # signed zero and dust are zero
    assert got[4:8] == [
        (finite, 100000000, 0),
        (finite, 100000000, -1),
        (finite, 333333333, -1),
        (finite, -666666667, -1),
    ]
    assert got[8] == got[9] == (finite, 630200000, 1)  # repr noise of a sum rounds away
    assert got[10] == (finite, 100000000, 1) and got[11] == (finite, 100000000, 9)  # rounding carries a digit
    assert got[12] == (finite, 100000000, 35)
    assert got[13:16] == [(nan, 0, 0), (pinf, 0, 0), (ninf, 0, 0)]
    assert got[16:] == [(finite, 123456790, 8), (finite, 123456788, 8)]  # ties to even
    # agrees with Python's correctly rounded formatting away from decimal ties
    rng = np.random.default_rng(3)
    y = rng.normal(size=20_000) * 10.0 ** rng.integers(-8, 15, size=20_000)
    code, m, e = canonical_floats(y)
    assert (code[np.abs(y) < 1e-9] == zero).all()
    for v, mi, ei in zip(y.tolist(), m.tolist(), e.tolist(), strict=True):
        if abs(v) < 1e-9:
            continue
        mant, exp = f"{v:.8e}".split("e")
        digits = int(mant.replace(".", "").replace("-", ""))
        assert (digits if v >= 0 else -digits, int(exp)) == (mi, ei) or abs(abs(v) * 10.0 ** (8 - ei) % 1 - 0.5) < 1e-6
