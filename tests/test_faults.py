"""A run stopped at any moment leaves readable tables and a manifest saying how far it got (issue 13, 14-15).

The signal tests start a real ``flech-sim run`` in a subprocess (with small batches, so that
parts are published early), wait until it has published some, and then kill or stop it.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from flech_sim import persistor as persistor_mod
from flech_sim.cli import main
from flech_sim.persistor import PARTS_SUFFIX, Persistor, part_files
from flech_sim.regression import compare_runs
from flech_sim.results import IncompleteRunWarning, open_run
from flech_sim.scenario import scenario_from_dict
from flech_sim.schema import TABLES
from flech_sim.simulation import run

from .conftest import REPO, scenario_dict

LONG = {
    "name": "longrun",
    "seed": 7,
    "start": "2026-01-12T00:00:00",
    "horizon_hours": 4000,
    "feeders": {"feeder-1": {"limit_kw": 400}},
    "buyers": [
        {
            "id": "dso-1",
            "markets": [
                {"product": "SRP", "location": "feeder-1", "count": 160, "need_kw": [60, 90], "price_cap": 3.0}
            ],
        }
    ],
    "aggregators": [{"id": "agg-a", "households": {"feeder-1": 40}}],
}
CHILD = (
    "import sys, flech_sim.persistor as p; p.DEFAULT_BATCH_ROWS = 300\n"
    "from flech_sim.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    scenario = tmp_path / "long.yaml"
    scenario.write_text(yaml.safe_dump(LONG))
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, "run", str(scenario), "--out", str(out), "--no-progress"],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return proc, out


def _wait_for_parts(proc: subprocess.Popen[bytes], out: Path, n: int = 3) -> None:
    """Until the run has published parts of at least ``n`` tables and a progress manifest."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        published = [t for t in TABLES if part_files(out, t)]
        if len(published) >= n and (out / "manifest.json").exists():
            m = json.loads((out / "manifest.json").read_text())
            if m["simulated_until_minute"] > 0:
                return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run published no parts within 60 s")


def test_sigkill_leaves_every_published_part_readable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc, out = _start(tmp_path)
    _wait_for_parts(proc, out)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["completed"] is False
    assert 0 < manifest["simulated_until_minute"] < manifest["horizon_minute"] == 4000 * 60
    # nothing under a final table name is half-written: a killed run has only finished parts
    assert not list(out.glob("*.parquet"))
    rows_in_parts = {}
    for name in TABLES:
        rows_in_parts[name] = sum(pq.read_table(p).num_rows for p in part_files(out, name))  # each part reads
    assert sum(rows_in_parts.values()) > 0
    for name, n in manifest["row_counts"].items():  # the manifest never claims more than was published
        assert n <= rows_in_parts[name]
    with pytest.warns(IncompleteRunWarning, match="killed or still running at simulated minute"):
        r = open_run(out)
    assert not r.complete
    for name in TABLES:  # the results API reads the parts
        assert r.count(name) == rows_in_parts[name]
        assert len(r.table(name)) == rows_in_parts[name]
    report = compare_runs(out, out)
    assert not report.ok and any("INCOMPLETE RUN" in n for n in report.notes)
    assert main(["check", str(out), "--against", str(out)]) == 1
    assert "the run did not complete: killed or still running" in capsys.readouterr().out


@pytest.mark.parametrize(("signum", "label"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")])
def test_sigterm_and_sigint_flush_and_write_the_manifest(tmp_path: Path, signum: int, label: str) -> None:
    proc, out = _start(tmp_path)
    _wait_for_parts(proc, out)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert f"interrupted by {label}" in err.decode() and "Traceback" not in err.decode()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["completed"] is False
    assert manifest["error"].startswith(f"interrupted by {label} at simulated minute")
    assert 0 < manifest["simulated_until_minute"] < 4000 * 60
    # every table was flushed and joined into its final file, parts removed
    assert not list(out.glob(f"*{PARTS_SUFFIX}"))
    for name in TABLES:
        assert pq.read_table(out / f"{name}.parquet").num_rows == manifest["row_counts"][name]
    assert manifest["row_counts"]["messages"] > 0
    with pytest.warns(IncompleteRunWarning, match=f"interrupted by {label}"):
        open_run(out)


def test_complete_run_has_no_parts_and_opens_quietly(tmp_path: Path) -> None:
    result = run(scenario_from_dict(scenario_dict(horizon_hours=56)), tmp_path / "r")
    assert result.completed and result.manifest["status"] == "completed"
    assert not list((tmp_path / "r").glob(f"*{PARTS_SUFFIX}")) and not list((tmp_path / "r").glob(".*"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert open_run(tmp_path / "r").complete


def test_small_batches_give_the_same_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts joined at close are the same rows as one streamed file: the fingerprint cannot tell."""
    s = scenario_from_dict(scenario_dict(horizon_hours=56))
    a = run(s, tmp_path / "a")
    monkeypatch.setattr(persistor_mod, "DEFAULT_BATCH_ROWS", 50)
    b = run(s, tmp_path / "b")
    assert a.manifest["fingerprint"] == b.manifest["fingerprint"] and a.manifest["fingerprint"]
    assert pq.ParquetFile(tmp_path / "b" / "feeder_load.parquet").num_row_groups > 1  # it was written in parts


def test_one_unwritable_table_loses_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = Persistor._close_table

    def failing(self: Persistor, table: Any) -> None:
        if table.name == "awards":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, table)

    monkeypatch.setattr(Persistor, "_close_table", failing)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario_dict(horizon_hours=56)))
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "could not write table(s): awards (OSError: [Errno 28] No space left on device)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["completed"] is False and set(manifest["write_errors"]) == {"awards"}
    for name in TABLES:
        if name != "awards":
            assert (tmp_path / "r" / f"{name}.parquet").exists(), name
    assert pq.read_table(tmp_path / "r" / "messages.parquet").num_rows == manifest["row_counts"]["messages"] > 0


def test_disk_full_during_the_run_is_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Persistor._flush

    def full(self: Persistor, name: str) -> None:
        if name == "feeder_load" and self._parts[name]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name)

    monkeypatch.setattr(Persistor, "_flush", full)
    monkeypatch.setattr(persistor_mod, "DEFAULT_BATCH_ROWS", 100)
    result = run(scenario_from_dict(scenario_dict(horizon_hours=56)), tmp_path / "r")
    assert not result.completed and "No space left on device" in (result.error or "")
    m = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert m["status"] == "failed" and m["simulated_until_minute"] < 30 * 60
    assert pq.read_table(tmp_path / "r" / "messages.parquet").num_rows == m["row_counts"]["messages"]


def test_out_naming_a_file_or_an_unwritable_place(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario_dict(horizon_hours=56)))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["run", str(path), "--out", str(a_file), "--no-progress"]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    # the run directory cannot be created (its parent is a file): one line, no traceback
    assert main(["run", str(path), "--out", str(a_file / "sub"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no manifest could be written" in err and "NotADirectoryError" in err and "Traceback" not in err
    assert a_file.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario_dict(horizon_hours=56)))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert main(["run", str(path), "--out", str(ro), "--no-progress"]) == 1
        assert "Traceback" not in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_stale_parts_of_an_earlier_run_do_not_mix_in(tmp_path: Path) -> None:
    out = tmp_path / "r"
    stale = out / f"awards{PARTS_SUFFIX}"
    stale.mkdir(parents=True)
    (stale / "part-000001.parquet").write_bytes(b"not parquet")
    result = run(scenario_from_dict(scenario_dict(horizon_hours=56)), out)
    assert result.completed, result.error
    assert not stale.exists()
