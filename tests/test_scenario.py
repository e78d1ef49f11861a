"""Scenario mistakes are reported as one clear message naming the field -- never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flech_sim.cli import main
from flech_sim.scenario import ScenarioError, load_scenario, scenario_from_dict

from .conftest import REPO, scenario_dict


def test_bundled_scenarios_are_valid() -> None:
    for path in sorted((REPO / "scenarios").glob("*.yaml")):
        assert load_scenario(path).name


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(horizon_hourz=5), "horizon_hourz: unknown key"),
        (lambda d: d.update(horizon_hours=-5), "horizon_hours: Input should be greater than or equal to 0.25 (got -5)"),
        (lambda d: d.update(seed="many"), "seed: Input should be a valid integer"),
        (
            lambda d: d["buyers"][0]["markets"][0].update(product="XRP"),
            "buyers.0.markets.0.product: unknown product ID 'XRP'",
        ),
        (
            lambda d: d["buyers"][0]["markets"][0].update(location="feeder-9"),
            "buyers.0.markets.0.location: unknown feeder 'feeder-9'",
        ),
        (
            lambda d: d["buyers"][0]["markets"][0].update(need_kw="lots"),
            "buyers.0.markets.0.need_kw: Input should be a valid list",
        ),
        (
            lambda d: d["aggregators"][1]["bidding"].update(steps=0),
            "aggregators.1.bidding.steps: Input should be greater than or equal to 1",
        ),
        (lambda d: d.update(products={"SRP": "builtin", "ZZZ": "builtin"}), "products.ZZZ: no built-in product 'ZZZ'"),
        (
            lambda d: d.update(products={"SRP": "no.such.module:Thing"}),
            "products.SRP: cannot load 'no.such.module:Thing'",
        ),
        (
            lambda d: d["buyers"][0]["markets"][0].update(gate_close_time="09:00"),
            "gate_close_time: must be after request_time",
        ),
        (
            lambda d: d["aggregators"][0]["households"].update({"nowhere": 5}),
            "aggregators.0.households.nowhere: unknown feeder",
        ),
    ],
)
def test_mistakes_name_the_path(change, expected: str) -> None:  # type: ignore[no-untyped-def]
    d = scenario_dict()
    change(d)
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(d, source="s.yaml")
    assert expected in str(exc.value), str(exc.value)
    assert str(exc.value).startswith("s.yaml: ")


def test_cli_reports_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = scenario_dict(horizon_hours=-1, colour="blue")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "colour: unknown key" in err and "horizon_hours" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "x.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(p)
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "missing.yaml")


def test_digest_is_stable_and_defaults_are_filled() -> None:
    a, b = scenario_from_dict(scenario_dict()), scenario_from_dict(scenario_dict())
    assert a.digest() == b.digest()
    assert a.solver.time_limit_s == 30.0  # the one home of defaults
    assert scenario_from_dict(scenario_dict(seed=8)).digest() != a.digest()
