"""`flech-sim audit`: every market rebuilt from messages.parquet re-clears and re-settles to what the run recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flech_sim.audit import audit_run, audit_tables
from flech_sim.cli import main
from flech_sim.endpoint import Connection
from flech_sim.messages import Bid, to_json
from flech_sim.scenario import load_scenario
from flech_sim.simulation import run

from .conftest import REPO

REFERENCE = sorted((REPO / "tests" / "reference_scenarios").glob("*.yaml"))
AUDITED = ("awards", "clearings", "conflicts", "settlements", "markets")


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit-ref")
    out = {}
    for path in REFERENCE:
        s = load_scenario(path).model_copy(update={"twin": False})
        result = run(s, root / path.stem)
        assert result.completed, result.error
        out[path.stem] = result.out_dir
    return out


def _tables(run_dir: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], dict[str, Any]]:
    return (
        pd.read_parquet(run_dir / "messages.parquet"),
        {n: pd.read_parquet(run_dir / f"{n}.parquet") for n in AUDITED},
        json.loads((run_dir / "manifest.json").read_text()),
    )


@pytest.mark.parametrize("name", [p.stem for p in REFERENCE])
def test_every_reference_run_audits_clean(
    reference_runs: dict[str, Path], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = reference_runs[name]
    assert main(["audit", str(run_dir)]) == 0
    assert "OK" in capsys.readouterr().out
    audit = audit_run(run_dir)
    clearings = pd.read_parquet(run_dir / "clearings.parquet")
    settled = set(pd.read_parquet(run_dir / "settlements.parquet").market_id)
    # every cleared market was re-cleared, every settled one re-settled (none merely skipped)
    assert {m.market_id for m in audit.markets if m.status} == set(clearings.market_id)
    assert {m.market_id for m in audit.markets if m.resettled} == settled and settled


def test_json_output(reference_runs: dict[str, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    run_dir = reference_runs["products_mix"]
    assert main(["audit", str(run_dir), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and {m["product_id"] for m in doc["markets"]} == {"CRP", "mFRR"}
    assert all(m["ok"] and m["differences"] == [] for m in doc["markets"])


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tampered"
    shutil.copytree(src, dst)
    return dst


def test_a_tampered_award_is_found_and_the_market_named(
    reference_runs: dict[str, Path], tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    run_dir = _copy(reference_runs["srp_block_bids"], tmp_path)
    awards = pd.read_parquet(run_dir / "awards.parquet")
    i = awards.index[awards.accepted_kw > 0][0]
    market = str(awards.at[i, "market_id"])
    awards.at[i, "accepted_kw"] = awards.at[i, "accepted_kw"] + 1e-3
    awards.to_parquet(run_dir / "awards.parquet", index=False)
    assert main(["audit", str(run_dir)]) == 1
    out = capsys.readouterr().out
    assert f"{market} [SRP]" in out and "DIFFERS" in out and "awards table" in out
    bad = [m for m in audit_run(run_dir).markets if not m.ok]
    assert [m.market_id for m in bad] == [market] and len(bad[0].differences) == 1


def test_a_tampered_bid_payload_is_found(reference_runs: dict[str, Path], tmp_path: Path) -> None:
    """A cheaper price written into one accepted bid's recorded JSON: re-clearing no longer gives the record."""
    run_dir = _copy(reference_runs["srp_block_bids"], tmp_path)
    msgs = pd.read_parquet(run_dir / "messages.parquet")
    awards = pd.read_parquet(run_dir / "awards.parquet")
    awarded = set(awards[awards.accepted_kw > 0].bid_id)
    bids = msgs[(msgs.kind == "bid") & (msgs.verdict == "accepted")]
    i = next(j for j, p in zip(bids.index, bids.payload, strict=True) if json.loads(p)["bid_id"] in awarded)
    doc = json.loads(msgs.at[i, "payload"])
    doc["price"] = doc["price"] * 0.5
    msgs.at[i, "payload"] = json.dumps(doc)
    msgs.to_parquet(run_dir / "messages.parquet", index=False)
    audit = audit_run(run_dir)
    assert not audit.ok
    assert [m.market_id for m in audit.markets if not m.ok] == [doc["market_id"]]
    assert main(["audit", str(run_dir), "--json"]) == 1


def test_a_tampered_settlement_is_found(reference_runs: dict[str, Path], tmp_path: Path) -> None:
    run_dir = _copy(reference_runs["cl_bl_mix"], tmp_path)
    st = pd.read_parquet(run_dir / "settlements.parquet")
    i = st.index[st.role == "seller"][0]
    st.at[i, "penalty_dkk"] = st.at[i, "penalty_dkk"] + 0.01
    st.to_parquet(run_dir / "settlements.parquet", index=False)
    audit = audit_run(run_dir)
    bad = [m for m in audit.markets if not m.ok]
    assert [m.market_id for m in bad] == [st.at[i, "market_id"]]
    assert all(d.startswith("settlements table") and "penalty_dkk" in d for d in bad[0].differences)


def test_a_run_that_received_bad_messages_audits_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Malformed text, refused bids and an at-least-once redelivery are all rows of messages.parquet;
    none of them enters a rebuilt book, and the audit still matches the run."""
    send = Connection.send
    injected: list[str] = []

    def noisy(self: Connection, msg: Any) -> None:
        send(self, msg)
        if self.participant_id == "agg-b" and isinstance(msg, Bid) and not injected:
            injected.append(msg.msg_id)
            send(self, msg)  # redelivery
            send(self, "{not json")  # malformed
            send(
                self,
                to_json(
                    Bid(**{**_fields(msg), "msg_id": msg.msg_id + "-x", "bid_id": msg.bid_id + "-x", "price": -1.0})
                ),
            )  # out of range
            send(
                self,
                Bid(
                    **{
                        **_fields(msg),
                        "msg_id": msg.msg_id + "-y",
                        "bid_id": msg.bid_id + "-y",
                        "market_id": "no-such-market",
                    }
                ),
            )  # unknown market
            send(self, Bid(**{**_fields(msg), "msg_id": msg.msg_id + "-z", "sender": "agg-a"}))  # impersonation

    monkeypatch.setattr(Connection, "send", noisy)
    s = load_scenario(REPO / "tests" / "reference_scenarios" / "srp_block_bids.yaml").model_copy(update={"twin": False})
    result = run(s, tmp_path / "noisy")
    assert result.completed, result.error
    msgs = pd.read_parquet(tmp_path / "noisy" / "messages.parquet")
    ins = msgs[msgs.direction == "in"]
    assert (ins.kind == "malformed").sum() == 1
    assert (ins.verdict == "rejected").sum() >= 4 and (ins.verdict == "redelivery").sum() == 1
    audit = audit_run(tmp_path / "noisy")
    assert audit.ok, [m.differences for m in audit.markets]
    assert sum(m.resettled for m in audit.markets) >= 1


def _fields(msg: Bid) -> dict[str, Any]:
    return {f: getattr(msg, f) for f in msg.__struct_fields__}


@pytest.fixture(scope="module")
def competition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .test_competition import CONGESTED  # the bundled study is sized to rare overload: congest it for conflicts

    s = load_scenario(REPO / "scenarios" / "tso_dso_competition.yaml").model_copy(
        update={"horizon_hours": 56, "twin": False, "coordination": "dso_prevails", **CONGESTED}
    )
    result = run(s, tmp_path_factory.mktemp("audit-comp") / "c")
    assert result.completed, result.error
    return result.out_dir


def test_coordination_refusals_are_applied_to_the_rebuilt_book(competition: Path) -> None:
    msgs, tables, manifest = _tables(competition)
    refused = tables["conflicts"][tables["conflicts"].action == "refused"]
    assert len(refused) > 0
    audit = audit_tables(msgs, tables, manifest)
    assert audit.ok, [(m.market_id, m.differences) for m in audit.markets if not m.ok]
    screened = {m.market_id for m in audit.markets if any("TSO/DSO coordination" in n for n in m.notes)}
    assert screened == set(refused.market_id)
    # without the recorded refusals the books are different: the screen is what the audit replays
    blind = audit_tables(msgs, {**tables, "conflicts": tables["conflicts"].iloc[0:0]}, manifest)
    assert {m.market_id for m in blind.markets if not m.ok} <= screened and not blind.ok


def test_not_a_run_directory(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["audit", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_an_unparsable_recorded_payload_is_a_finding_not_a_crash(
    reference_runs: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = _copy(reference_runs["srp_block_bids"], tmp_path)
    msgs = pd.read_parquet(run_dir / "messages.parquet")
    i = msgs.index[(msgs.kind == "bid") & (msgs.verdict == "accepted")][0]
    market = str(msgs.at[i, "market_id"])
    msgs.at[i, "payload"] = msgs.at[i, "payload"][:-5]
    msgs.to_parquet(run_dir / "messages.parquet", index=False)
    bad = [m for m in audit_run(run_dir).markets if not m.ok]
    assert [m.market_id for m in bad] == [market]
    assert any("does not parse" in d for d in bad[0].differences)
