"""docs/scenario.md and docs/scenario.schema.json are generated from the scenario models and must not go stale."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flech_sim.cli import main
from flech_sim.docs import _sections, scenario_json_schema, scenario_markdown
from flech_sim.scenario import Scenario, ScenarioError, scenario_from_dict

REPO = Path(__file__).resolve().parents[1]
FIX = "run `python scripts/gen_scenario_docs.py` (PYTHONPATH=. if not installed) and commit docs/"


def test_committed_scenario_docs_match_the_models() -> None:
    md = (REPO / "docs" / "scenario.md").read_text()
    schema = (REPO / "docs" / "scenario.schema.json").read_text()
    assert md == scenario_markdown(), f"docs/scenario.md is stale: {FIX}"
    assert schema == scenario_json_schema(), f"docs/scenario.schema.json is stale: {FIX}"
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_scenario_docs.py"), "--check"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert check.returncode == 0, check.stderr


def test_every_key_of_every_section_has_a_row_with_its_default() -> None:
    md = scenario_markdown()
    sections = _sections(Scenario, "")
    assert {p for p, _ in sections} >= {
        "",
        "solver",
        "feeders.<name>",
        "buyers[]",
        "buyers[].markets[]",
        "buyers[].balancing.imbalance",
        "aggregators[].bidding",
        "sweep",
    }
    for path, model in sections:
        block = md.split(f"## `{path}`\n" if path else "## Top level\n", 1)[1].split("\n## ", 1)[0]
        for name in model.model_fields:
            assert f"| `{name}` |" in block, f"{path}.{name} missing from docs/scenario.md"
    # key | type (bounds may grow) | default | unit
    assert re.search(r"\| `limit_kw` \| number[^|]* \| \*\*required\*\* \| kW \|", md)
    assert re.search(r"\| `time_limit_s` \| number[^|]* \| `30.0` \| s \|", md)
    assert re.search(r"\| `request_time` \| time \(HH:MM\)[^|]* \| `\"10:00\"` \| HH:MM \|", md)
    assert re.search(r"\| `sweep` \| section or null \| `null` \|", md)


def test_the_json_schema_accepts_the_bundled_scenarios_and_rejects_a_typo() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(scenario_json_schema())
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted((REPO / "scenarios").glob("*.yaml"))
    assert files
    for f in files:
        raw = json.loads(json.dumps(yaml.safe_load(f.read_text()), default=str))
        errors = [e.message for e in validator.iter_errors(raw)]
        assert not errors, f"{f.name}: {errors}"
    bad = json.loads(json.dumps(yaml.safe_load((REPO / "scenarios" / "default.yaml").read_text()), default=str))
    bad["solver"] = {"time_limit": 5}
    assert any("time_limit" in e.message for e in validator.iter_errors(bad))


def test_unknown_key_error_points_to_the_reference() -> None:
    raw = yaml.safe_load((REPO / "scenarios" / "default.yaml").read_text()) | {"colour": "blue"}
    with pytest.raises(ScenarioError, match=r"colour: unknown key .*docs/scenario\.md"):
        scenario_from_dict(raw)


def test_cli_keys_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys"]) == 0
    assert capsys.readouterr().out == scenario_markdown()
    assert main(["keys", "--json-schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Scenario"
