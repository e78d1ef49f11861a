"""Regression checks: reference scenarios against their golden outcomes, and changes are caught.

The golden outcomes under tests/golden/reference/<scenario name>/ were written by the
command under test; after an intended change of outcomes, regenerate them with

    flech-sim run tests/reference_scenarios/<name>.yaml --out /tmp/<name>
    flech-sim check /tmp/<name> --against tests/golden/reference/<name> --accept

and review the CSV diff before committing it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flech_sim.cli import main
from flech_sim.regression import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    OUTCOMES,
    RegressionInputError,
    Tolerances,
    accept,
    compare_runs,
)
from flech_sim.scenario import load_scenario, scenario_from_dict
from flech_sim.simulation import run

from .conftest import REPO

REFERENCE = REPO / "tests" / "reference_scenarios"
GOLDEN = REPO / "tests" / "golden" / "reference"
SCENARIOS = sorted(REFERENCE.glob("*.yaml"))


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reference")
    runs = {}
    for path in SCENARIOS:
        result = run(load_scenario(path), root / path.stem)
        assert result.completed, result.error
        runs[path.stem] = result.out_dir
    return runs


@pytest.fixture(scope="module")
def fresh_golden(reference_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Goldens accepted from this checkout's own reference runs: the mechanism tests below edit copies of
    these, so they do not depend on the committed goldens being up to date."""
    root = tmp_path_factory.mktemp("fresh-golden")
    for name, run_dir in reference_runs.items():
        accept(run_dir, root / name)
    return {name: root / name for name in reference_runs}


def _golden_copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / f"golden-{src.name}"
    shutil.copytree(src, dst)
    return dst


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _edit_csv(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0])
    rows = edit(rows)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


# == the project's reference scenarios ===================================================
def test_every_reference_scenario_has_golden_outcomes() -> None:
    assert len(SCENARIOS) >= 2
    for path in SCENARIOS:
        assert load_scenario(path).name == path.stem, "golden directories are named after the scenario"
        expected = {f"{o.table}.csv" for o in OUTCOMES} | {"manifest.json"}
        assert expected <= {p.name for p in (GOLDEN / path.stem).iterdir()}
    assert {p.name for p in GOLDEN.iterdir() if p.is_dir()} == {p.stem for p in SCENARIOS}, "stale golden directory"


@pytest.mark.parametrize("name", [p.stem for p in SCENARIOS])
def test_reference_scenario_matches_its_golden_outcomes(name: str, reference_runs: dict[str, Path]) -> None:
    report = compare_runs(reference_runs[name], GOLDEN / name)
    assert report.ok, report.format()
    # real outcomes were compared, not empty tables
    assert report.rows_compared["markets"] == 2
    assert report.rows_compared["awards"] > 0 and report.rows_compared["settlements"] > 0
    assert min(report.rows_compared.values()) > 0


def test_reference_goldens_cover_the_interesting_cases() -> None:
    """The goldens exercise unmet need, an empty book (null clearing price) and settlement of both sides."""

    def rows(name: str, table: str) -> list[dict[str, str]]:
        return _csv_rows(GOLDEN / name / f"{table}.csv")

    assert {r["status"] for r in rows("srp_scarce_supply", "clearings")} == {"optimal", "empty"}
    assert any(float(r["unmet_kwh"]) > 0 for r in rows("srp_scarce_supply", "clearings"))
    assert any(r["clearing_price"] == "" for r in rows("srp_scarce_supply", "clearing_intervals"))
    assert {r["role"] for r in rows("srp_block_bids", "settlements")} == {"buyer", "seller"}
    assert {r["seller"] for r in rows("srp_block_bids", "awards")} == {"agg-a", "agg-b"}
    # CL with VCG pricing and BL with a platform baseline (here its recorded fallback), end to end
    states = {(r["product_id"], r["state"]) for r in rows("cl_bl_mix", "markets")}
    assert states == {("CL", "settled"), ("BL", "settled")}
    cl = next(r for r in rows("cl_bl_mix", "clearings") if r["product_id"] == "CL")
    assert float(cl["cost_dkk"]) > float(cl["objective_dkk"])  # VCG pays each winner its externality, above its bid
    manifest = json.loads((GOLDEN / "srp_block_bids" / "manifest.json").read_text())
    assert manifest["scenario_name"] == "srp_block_bids" and len(manifest["fingerprint"]) == 64


def test_bl_reference_records_its_baseline_fallback(reference_runs: dict[str, Path]) -> None:
    """One day of history is too little for X-of-Y: the fallback is used, recorded per interval,
    and the settled delivery is measured against it."""
    base = pd.read_parquet(reference_runs["cl_bl_mix"] / "baselines.parquet")
    assert set(base["method"]) == {"x_of_y"} and set(base["used"]) == {"meter_before_after"} and base["fallback"].all()
    st = pd.read_parquet(reference_runs["cl_bl_mix"] / "settlements.parquet")
    assert set(st["product_id"]) == {"CL", "BL"} and (st["delivered_kwh"] > 0).all()


# == a changed outcome is detected =======================================================
def test_changed_run_fails_the_check_with_a_readable_diff(
    fresh_golden: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load((REFERENCE / "srp_scarce_supply.yaml").read_text())
    raw["buyers"][0]["markets"][0]["need_kw"][0] = 30.0  # the DSO asks for less in the first interval
    changed = run(scenario_from_dict(raw), tmp_path / "changed")
    assert changed.completed
    golden = fresh_golden["srp_scarce_supply"]
    code = main(["check", str(changed.out_dir), "--against", str(golden)])
    out = capsys.readouterr().out
    assert code == 1
    assert "DIFFERENT" in out and "\nmarket dso-ref-SRP-0-d000\n" in out
    assert "note: the run's scenario differs from the golden one's" in out
    assert "market dso-ref-SRP-1-d000" not in out  # the other market did not change
    # one line per difference: table, field, where, golden, new, delta and relative delta
    lines = [ln.split() for ln in out.splitlines()]
    assert ["clearing_intervals", "need_kw", "interval=0", "120", "30", "-90", "(-75.00%)"] in lines
    need_lines = [ln for ln in lines if ln[:2] == ["clearing_intervals", "need_kw"]]
    assert len(need_lines) == 1  # only interval 0 changed its need
    golden_row = _csv_rows(golden / "clearing_intervals.csv")[0]
    new_row = pd.read_parquet(changed.out_dir / "clearing_intervals.parquet").iloc[0]
    g, n = float(golden_row["unmet_kw"]), float(new_row.unmet_kw)
    assert n != g  # less need, less unmet
    assert [
        "clearing_intervals",
        "unmet_kw",
        "interval=0",
        f"{g:.10g}",
        f"{n:.10g}",
        f"{n - g:+.6g}",
        f"({(n - g) / g:+.2%})",
    ] in lines


def test_edited_golden_values_and_rows_are_reported(
    reference_runs: dict[str, Path], fresh_golden: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = _golden_copy(fresh_golden["srp_block_bids"], tmp_path)
    p = float(_csv_rows(golden / "clearing_intervals.csv")[1]["clearing_price"])
    last_award = _csv_rows(golden / "awards.csv")[-1]
    first_statement = _csv_rows(golden / "settlements.csv")[0]

    def nudge(rows):  # type: ignore[no-untyped-def]
        rows[1]["clearing_price"] = repr(float(rows[1]["clearing_price"]) + 0.01)
        return rows

    _edit_csv(golden / "clearing_intervals.csv", nudge)
    _edit_csv(golden / "awards.csv", lambda rows: rows[:-1])  # the run has a row the golden lacks
    _edit_csv(
        golden / "settlements.csv",
        lambda rows: [{**r, "meter_gap": "true"} if i == 0 else r for i, r in enumerate(rows)],
    )
    report = compare_runs(reference_runs["srp_block_bids"], golden)
    assert not report.ok
    got = {(d.market_id, d.table, d.field, d.where): (d.golden, d.new) for d in report.differences}
    assert len(got) == 3
    assert got[("dso-ref-SRP-0-d000", "clearing_intervals", "clearing_price", "interval=1")] == (p + 0.01, p)
    where = f"seller={last_award['seller']} bid_id={last_award['bid_id']} interval={last_award['interval']}"
    assert got[(last_award["market_id"], "awards", "(row)", where)] == ("missing", "present")
    where = f"party={first_statement['party']} role={first_statement['role']} interval=0"
    assert got[("dso-ref-SRP-0-d000", "settlements", "meter_gap", where)] == (True, False)
    assert main(["check", str(reference_runs["srp_block_bids"]), "--against", str(golden)]) == 1
    out = capsys.readouterr().out
    assert "3 difference(s) in 2 market(s)" in out and "\nmarket dso-ref-SRP-0-d001\n" in out
    line = next(ln for ln in out.splitlines() if "clearing_price" in ln)
    assert line.split() == [
        "clearing_intervals",
        "clearing_price",
        "interval=1",
        f"{p + 0.01:.10g}",
        f"{p:.10g}",
        "-0.01",
        f"({-0.01 / (p + 0.01):+.2%})",
    ]


def test_tolerances_decide_what_counts_as_a_change(
    reference_runs: dict[str, Path], fresh_golden: dict[str, Path], tmp_path: Path
) -> None:
    golden = _golden_copy(fresh_golden["srp_scarce_supply"], tmp_path)
    run_dir = reference_runs["srp_scarce_supply"]

    def shift(delta: float):  # type: ignore[no-untyped-def]
        def edit(rows):  # type: ignore[no-untyped-def]
            rows[0]["payment_dkk"] = repr(float(rows[0]["payment_dkk"]) + delta)
            return rows

        return edit

    _edit_csv(golden / "awards.csv", shift(1e-9))  # well inside the defaults
    assert compare_runs(run_dir, golden).ok
    _edit_csv(golden / "awards.csv", shift(1e-3))
    report = compare_runs(run_dir, golden)
    assert [(d.table, d.field) for d in report.differences] == [("awards", "payment_dkk")]
    assert report.differences[0].delta == pytest.approx(-1e-3 - 1e-9)
    assert compare_runs(run_dir, golden, Tolerances(atol=0.01, rtol=0)).ok
    payment = float(_csv_rows(golden / "awards.csv")[0]["payment_dkk"])
    assert compare_runs(run_dir, golden, Tolerances(atol=0, rtol=2e-3 / payment)).ok
    assert main(["check", str(run_dir), "--against", str(golden), "--atol", "0.01"]) == 0
    assert main(["check", str(run_dir), "--against", str(golden), "--atol", "0", "--rtol", "1e-9"]) == 1
    assert (DEFAULT_ATOL, DEFAULT_RTOL) == (1e-6, 1e-6)


def test_missing_and_extra_markets_are_differences(
    reference_runs: dict[str, Path], fresh_golden: dict[str, Path]
) -> None:
    # the scarce-supply run against the block-bid golden: one market in common, one on each side only
    report = compare_runs(reference_runs["srp_scarce_supply"], fresh_golden["srp_block_bids"])
    markets = {(d.market_id, d.golden, d.new) for d in report.differences if d.field == "(market)"}
    assert markets == {("dso-ref-SRP-0-d001", "present", "missing"), ("dso-ref-SRP-1-d000", "missing", "present")}
    assert any(d.market_id == "dso-ref-SRP-0-d000" and d.field == "need_kw" for d in report.differences)


def test_two_runs_can_be_compared_directly(reference_runs: dict[str, Path], tmp_path: Path) -> None:
    again = run(load_scenario(REFERENCE / "srp_block_bids.yaml"), tmp_path / "again")
    report = compare_runs(again.out_dir, reference_runs["srp_block_bids"], Tolerances(0.0, 0.0))
    assert report.ok, report.format()
    assert any("fingerprints identical" in n for n in report.notes)


# == accepting ===========================================================================
def test_accept_writes_reviewable_golden_files_that_then_match(
    reference_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, golden = reference_runs["srp_scarce_supply"], tmp_path / "new-golden"
    assert main(["check", str(run_dir), "--against", str(golden), "--accept"]) == 0
    assert "accepted: wrote 6 files" in capsys.readouterr().out
    lines = (golden / "clearing_intervals.csv").read_text().splitlines()
    assert lines[0] == "market_id,product_id,interval,need_kw,accepted_kw,unmet_kw,clearing_price"
    assert lines[1].startswith("dso-ref-SRP-0-d000,SRP,0,120.0,")
    assert lines[-1] == "dso-ref-SRP-1-d000,SRP,1,40.0,0.0,40.0,"  # empty book: no clearing price
    manifest = json.loads((golden / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["summary"]["markets_cleared"] == 2
    assert "run_dir" not in manifest and "started_at" not in manifest  # nothing that changes on every accept
    assert main(["check", str(run_dir), "--against", str(golden), "--atol", "0", "--rtol", "0"]) == 0
    # accepting over an existing golden shows what changes, then replaces it
    assert main(["check", str(reference_runs["srp_block_bids"]), "--against", str(golden), "--accept"]) == 0
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "accepted" in out
    assert compare_runs(reference_runs["srp_block_bids"], golden).ok


def test_failed_run_is_a_difference_and_cannot_be_accepted(
    reference_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(reference_runs["srp_block_bids"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest.update(completed=False, error="RuntimeError: boom\ntraceback ...")
    (broken / "manifest.json").write_text(json.dumps(manifest))
    assert main(["check", str(broken), "--against", str(reference_runs["srp_block_bids"])]) == 1
    out = capsys.readouterr().out
    assert "the run did not complete: RuntimeError: boom" in out
    assert main(["check", str(broken), "--against", str(tmp_path / "g"), "--accept"]) == 2
    assert "did not complete" in capsys.readouterr().err
    with pytest.raises(RegressionInputError):
        accept(broken, tmp_path / "g")


# == bad input: exit code 2 with a clear message =========================================
def test_bad_input_exits_2(reference_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = reference_runs["srp_block_bids"]
    assert main(["check", str(tmp_path / "nope"), "--against", str(GOLDEN / "srp_block_bids")]) == 2
    assert "nope: no such run directory" in capsys.readouterr().err
    assert main(["check", str(run_dir), "--against", str(tmp_path / "nogolden")]) == 2
    err = capsys.readouterr().err
    assert "no golden outcomes there; create them with" in err and "--accept" in err
    (tmp_path / "empty").mkdir()
    assert main(["check", str(tmp_path / "empty"), "--against", str(GOLDEN / "srp_block_bids")]) == 2
    assert "not a flech-sim run or golden directory" in capsys.readouterr().err
    assert main(["check", str(run_dir), "--against", str(GOLDEN / "srp_block_bids"), "--atol", "-1"]) == 2
    assert "tolerances must be >= 0" in capsys.readouterr().err
