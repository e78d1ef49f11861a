"""Whatever file or value a scenario names, the answer is one clear error naming it -- never a traceback or a hang
(issue 13, items 9-13)."""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flech_sim.cli import main
from flech_sim.registry import resolve_product
from flech_sim.scenario import (
    SCENARIO_MAX_BYTES,
    YAML_MAX_DEPTH,
    Scenario,
    ScenarioError,
    load_scenario,
    read_scenario_file,
    scenario_from_dict,
)

from .conftest import scenario_dict


def _error(path: Path) -> str:
    with pytest.raises(ScenarioError) as exc:
        read_scenario_file(path)
    return str(exc.value)


def _one_line(text: str, path: Path) -> None:
    assert "\n" not in text and str(path) in text and "Traceback" not in text, text


# == the file itself ======================================================================
def test_a_directory(tmp_path: Path) -> None:
    msg = _error(tmp_path)
    _one_line(msg, tmp_path)
    assert "is a directory" in msg


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"name: caf\xe9\n", "not UTF-8 text (byte 9"),
        ("name: x\n".encode("utf-16"), "UTF-16; save it as UTF-8"),
        (b"name: x\x00\n", "not valid YAML"),
        (b"name: [unclosed\n", "not valid YAML"),
    ],
)
def test_undecodable_or_broken_text(tmp_path: Path, data: bytes, expected: str) -> None:
    p = tmp_path / "s.yaml"
    p.write_bytes(data)
    msg = _error(p)
    _one_line(msg, p)
    assert expected in msg


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(scenario_dict()).encode())
    assert load_scenario(p).name == "unit"


def test_symlink_loop(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.symlink_to(b)
    b.symlink_to(a)
    msg = _error(a)
    _one_line(msg, a)
    assert "cannot open" in msg


def test_device_and_fifo_are_refused_without_hanging(tmp_path: Path) -> None:
    assert "not a regular file" in _error(Path("/dev/zero"))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(_error(fifo)), daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "reading a FIFO hung"
    assert "not a regular file" in result[0]


def test_size_cap_before_parsing(tmp_path: Path) -> None:
    p = tmp_path / "big.yaml"
    p.write_bytes(b"#" * (SCENARIO_MAX_BYTES + 1))
    assert f"at most {SCENARIO_MAX_BYTES}" in _error(p)


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: a\nseed: 1\nseed: 2\n")
    msg = _error(p)
    _one_line(msg, p)
    assert f"{p}:3:1" in msg and "duplicate key 'seed'" in msg
    p.write_text("name: a\nbuyers:\n  - id: x\n    id: y\n")
    assert "duplicate key 'id'" in _error(p)


def test_deep_yaml(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: " + "[" * 100_000 + "]" * 100_000 + "\n")
    msg = _error(p)
    _one_line(msg, p)
    assert f"nested deeper than {YAML_MAX_DEPTH}" in msg


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("name: *a9")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    msg = _error(p)
    assert time.perf_counter() - t0 < 5
    _one_line(msg, p)
    assert "aliases expanded" in msg
    assert main(["validate", str(p)]) == 2


def test_recursive_alias(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("name: &x [*x]\n")
    assert "not valid YAML" in _error(p)


def test_small_aliases_still_work(tmp_path: Path) -> None:
    d = scenario_dict()
    text = yaml.safe_dump(d).replace("bidding:", "bidding: &b", 1)
    p = tmp_path / "s.yaml"
    p.write_text(text)
    assert load_scenario(p).name == "unit"


# == numbers ==============================================================================
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(horizon_hours=math.inf), "horizon_hours"),
        (lambda d: d.update(horizon_hours=math.nan), "horizon_hours"),
        (lambda d: d.update(horizon_hours=0.001), "horizon_hours"),
        (lambda d: d.update(horizon_hours=100 * 365 * 24), "horizon_hours"),
        (lambda d: d.update(start="9999-12-31T00:00:00"), "start"),
        (lambda d: d.update(seed=2**64), "seed"),
        (lambda d: d["aggregators"][0]["households"].update({"feeder-1": 10**8}), "aggregators.0.households.feeder-1"),
        (lambda d: d["buyers"][0]["markets"][0].update(count=10**8), "buyers.0.markets.0.count"),
        (lambda d: d["buyers"][0]["markets"][0].update(need_kw=[math.inf]), "buyers.0.markets.0.need_kw.0"),
        (lambda d: d["buyers"][0]["markets"][0].update(need_kw=[1.0] * 100_000), "buyers.0.markets.0.need_kw"),
        (lambda d: d["buyers"][0]["markets"][0].update(price_cap=math.inf), "buyers.0.markets.0.price_cap"),
        (lambda d: d["buyers"][0]["markets"][0].update(params={"x": math.nan}), "buyers.0.markets.0.params"),
        (lambda d: d["feeders"]["feeder-1"].update(limit_kw=1e308), "feeders.feeder-1.limit_kw"),
        (lambda d: d.update(solver={"time_limit_s": 1e9}), "solver.time_limit_s"),
    ],
)
def test_numbers_are_bounded(change, field: str) -> None:  # type: ignore[no-untyped-def]
    d = scenario_dict()
    change(d)
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(d, source="s.yaml")
    assert f"  - {field}: " in str(exc.value), str(exc.value)


def test_total_households_are_bounded() -> None:
    d = scenario_dict(aggregators=[{"id": f"agg-{i}", "households": {"feeder-1": 900_000}} for i in range(2)])
    with pytest.raises(ScenarioError, match="households: 1800000 in total"):
        scenario_from_dict(d)


def test_yaml_inf_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(scenario_dict()).replace("horizon_hours: 96", "horizon_hours: .inf"))
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "horizon_hours: Input should be a finite number" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# == identities ===========================================================================
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d["aggregators"][0].update(id="unaggregated"), "aggregators.0.id: 'unaggregated' is reserved"),
        (lambda d: d["aggregators"][0].update(id="flech"), "aggregators.0.id: 'flech' is reserved"),
        (lambda d: d.update(data_provider={"id": "FLECH"}), "data_provider.id: 'FLECH' is reserved"),
        (lambda d: d.update(data_provider={"id": ""}), "data_provider.id: String should match pattern"),
        (lambda d: d.update(data_provider={"id": "../../x y"}), "data_provider.id: String should match pattern"),
        (lambda d: d["buyers"][0].update(id="a/b"), "buyers.0.id: String should match pattern"),
        (lambda d: d.update(name=".."), "name: String should match pattern"),
        (lambda d: d.update(name="a/../../b"), "name: String should match pattern"),
        (
            lambda d: d.update(products={"SRP": "builtin", "METER": "builtin"}),
            "products.METER: the product ID 'METER' is reserved",
        ),
        (lambda d: d.update(products={"SRP": "builtin", "X": ".x:Y"}), "products.X: '.x:Y' is not 'builtin'"),
        (
            lambda d: d.update(products={"SRP": "builtin", "X": "flech_sim.products.base:Product"}),
            "products.X: 'flech_sim.products.base:Product' is abstract",
        ),
        (lambda d: d.update(products={"SRP": "builtin", "X": "os:system"}), "is not a subclass"),
    ],
)
def test_identities(change, expected: str) -> None:  # type: ignore[no-untyped-def]
    d = scenario_dict()
    change(d)
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(d, source="s.yaml")
    assert expected in str(exc.value), str(exc.value)


# == CSV inputs ===========================================================================
def _with_csv(field: str, path: str) -> dict[str, Any]:
    d = scenario_dict()
    if field == "weather":
        d["households"] = {"weather_csv": path}
    elif field == "base_load":
        d["households"] = {"base_load_csv": path}
    elif field == "spot":
        d["spot"] = {"csv": path}
    else:
        d["buyers"].append({"id": "tso-1", "role": "tso", "balancing": {"imbalance": {"csv": path}}})
        d["products"] = {"SRP": "builtin", "mFRR": "builtin"}
    return d


WHERE = {
    "weather": "households.weather_csv",
    "base_load": "households.base_load_csv",
    "spot": "spot.csv",
    "imbalance": "buyers.1.balancing.imbalance.csv",
}


@pytest.mark.parametrize("field", sorted(WHERE))
def test_csv_paths_are_checked_at_validation(tmp_path: Path, field: str) -> None:
    bad = {
        "missing": (str(tmp_path / "none.csv"), "no such CSV file"),
        "directory": (str(tmp_path), "is a directory"),
        "binary": (str(tmp_path / "bin.csv"), "not a readable CSV file"),
        "columns": (str(tmp_path / "cols.csv"), "missing column(s)"),
        "text": (str(tmp_path / "text.csv"), "not numeric"),
    }
    (tmp_path / "bin.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 50)
    (tmp_path / "cols.csv").write_text("when,value\n2026-01-12,1\n")
    cols = {
        "weather": "outdoor_temp_c,irradiance_w_m2",
        "base_load": "p1",
        "spot": "price_dkk_per_kwh",
        "imbalance": "imbalance_kw",
    }[field]
    (tmp_path / "text.csv").write_text(f"timestamp,{cols}\n2026-01-12," + ",".join(["x"] * len(cols.split(","))) + "\n")
    for case, (path, expected) in bad.items():
        with pytest.raises(ScenarioError) as exc:
            scenario_from_dict(_with_csv(field, path), source="s.yaml")
        text = str(exc.value)
        assert f"  - {WHERE[field]}: {path}" in text and expected in text, (case, text)
    good = tmp_path / "good.csv"
    good.write_text(f"timestamp,{cols}\n2026-01-12T00:00,1" + ",1" * (len(cols.split(",")) - 1) + "\n")
    assert scenario_from_dict(_with_csv(field, str(good))).name == "unit"


# == code named by a scenario =============================================================
def test_validate_imports_nothing_run_imports_and_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = tmp_path / "plug_pkg"
    pkg.mkdir()
    marker = tmp_path / "imported"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('pkg ')\n")
    (pkg / "mod.py").write_text(f"open({str(marker)!r}, 'a').write('mod ')\nclass NotAProduct: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    d = scenario_dict(products={"SRP": "builtin", "PLUG": "plug_pkg.mod:NotAProduct"})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    assert main(["validate", str(p)]) == 0
    assert "located it without running it" in capsys.readouterr().out
    assert not marker.exists() and "plug_pkg" not in sys.modules
    # a missing module is still found out without running anything
    with pytest.raises(LookupError, match=r"no module named 'plug_pkg\.nope'"):
        resolve_product("X", "plug_pkg.nope:C", load=False)
    assert not marker.exists()
    # run: the code is imported (that is what loading a plug-in means) and refused before anything is written
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "products.PLUG: 'plug_pkg.mod:NotAProduct' is not a subclass" in err
    assert marker.read_text() == "pkg mod " and not (tmp_path / "o").exists()
    for name in ("plug_pkg", "plug_pkg.mod"):
        sys.modules.pop(name, None)


# == fuzz =================================================================================
KEYS = [
    "name",
    "seed",
    "start",
    "horizon_hours",
    "feeders",
    "buyers",
    "aggregators",
    "products",
    "households",
    "id",
    "need_kw",
    "limit_kw",
    "&a",
    "*a",
    "<<",
    "!!python/object:os.system",
    "- ",
    ": ",
    "{",
    "}",
    "[",
    "]",
    "\n",
    "  ",
    ".inf",
    "-.nan",
    "0x1F",
    "1e400",
    "~",
    "'",
    '"',
    "\\",
    "\t",
    "%YAML 1.1",
    "---",
    "...",
    "#",
]
yamlish = st.lists(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), max_size=60).map("".join)


def _check_reader(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(data)
    t0 = time.perf_counter()
    try:
        s = load_scenario(p)
    except ScenarioError as exc:
        assert str(exc).startswith(str(p)) and "Traceback" not in str(exc)
        first = str(exc).splitlines()[0]
        assert len(first) < 2000
    else:
        assert isinstance(s, Scenario) and len(s.digest()) == 64
    assert time.perf_counter() - t0 < 5


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=yamlish)
def test_fuzz_yamlish_text(tmp_path: Path, text: str) -> None:
    _check_reader(tmp_path, text.encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_fuzz_bytes(tmp_path: Path, data: bytes) -> None:
    _check_reader(tmp_path, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edit=st.dictionaries(
        st.sampled_from(
            ["seed", "horizon_hours", "start", "name", "feeders", "buyers", "aggregators", "unaggregated", "products"]
        ),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=5),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
        ),
        max_size=3,
    )
)
def test_fuzz_values_of_a_valid_scenario(tmp_path: Path, edit: dict[str, Any]) -> None:
    d = scenario_dict() | edit
    _check_reader(tmp_path, yaml.safe_dump(d, allow_unicode=True).encode())


def test_params_are_checked_by_key() -> None:
    d = scenario_dict()
    d["buyers"][0]["markets"][0]["params"] = {"ok": 1, "fine": "text", "yes": True, "huge": 1e12}
    with pytest.raises(ScenarioError, match=r"buyers.0.markets.0.params: huge: must be text"):
        scenario_from_dict(d)
    d["buyers"][0]["markets"][0]["params"] = {"ok": 1, "fine": "text", "yes": True, "x": 2.5}
    assert scenario_from_dict(d).buyers[0].markets[0].params == {"ok": 1, "fine": "text", "yes": True, "x": 2.5}
