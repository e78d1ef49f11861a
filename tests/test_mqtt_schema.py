"""docs/messages.schema.json: current, and every payload a run sends or accepts validates against it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flech_sim.bridge import Bridge, LoopbackWire
from flech_sim.bridge.schema import OUT, messages_schema
from flech_sim.messages import MESSAGE_TYPES
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run

from .mqtt_support import ME, REPO, SCENARIO, example


def test_committed_message_schema_is_current() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "flech_sim.bridge.schema", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    refs = {r["$ref"].rsplit("/", 1)[1] for r in json.loads(OUT.read_text())["oneOf"]}
    assert refs == {c.__name__ for c in MESSAGE_TYPES.values() if c.__module__ == "flech_sim.messages"}


def test_every_message_of_a_run_validates_and_broken_ones_do_not(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    strategy = example().FixedPriceStrategy(ME, 0.1, 30.0)
    result = run(
        scenario_from_dict(SCENARIO),
        tmp_path,
        transport=Bridge(LoopbackWire(lambda pid, text: strategy(text)), frozenset({ME})),
    )
    assert result.completed, result.error
    msgs = pd.read_parquet(tmp_path / "messages.parquet")
    ok = msgs[msgs.verdict.isin(["sent", "accepted"])]
    validator = jsonschema.Draft202012Validator(messages_schema())
    kinds = set()
    for text in ok.payload:
        payload = json.loads(text)
        validator.validate(payload)
        kinds.add(payload["kind"])
    assert {"market_request", "bid_request", "bid", "ack", "award", "settlement", "meter_data"} <= kinds
    bid = json.loads(ok[ok.kind == "bid"].payload.iloc[0])
    for broken in (bid | {"price": "cheap"}, bid | {"surprise": 1}, {k: v for k, v in bid.items() if k != "bid_id"}):
        assert not validator.is_valid(broken)
