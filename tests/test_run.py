"""A whole run: every message persisted, every record traceable, money conserved, runs repeatable."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from flech_sim.cli import main
from flech_sim.scenario import load_scenario
from flech_sim.schema import TABLES
from flech_sim.simulation import run

from .conftest import REPO


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("default") / "run"
    result = run(load_scenario(REPO / "scenarios" / "default.yaml"), out)
    assert result.completed, result.error
    tables = {name: pd.read_parquet(out / f"{name}.parquet") for name in TABLES}
    return result, tables


def test_every_message_is_a_row(default_run) -> None:  # type: ignore[no-untyped-def]
    result, t = default_run
    msgs = t["messages"]
    assert len(msgs) == result.summary["messages"]
    assert sorted(msgs.seq) == list(range(1, len(msgs) + 1))  # arrival order; a reply may be written first
    assert msgs.msg_id.is_unique
    # every kind of the life cycle occurred
    assert {
        "market_request",
        "bid_request",
        "bid",
        "ack",
        "market_closed",
        "clearing_result",
        "award",
        "meter_data",
        "settlement",
    } <= set(msgs.kind)
    # each incoming message got exactly one answer (ack or rejection)
    incoming = msgs[msgs.direction == "in"]
    answers = msgs[msgs.kind.isin(["ack", "rejection"])]
    assert sorted(answers.ref_msg_id) == sorted(incoming.msg_id)


def test_records_trace_back_to_messages(default_run) -> None:  # type: ignore[no-untyped-def]
    _, t = default_run
    msgs = t["messages"].set_index("msg_id")
    for table, kind in [
        ("bids", "bid"),
        ("awards", "award"),
        ("settlements", "settlement"),
        ("meter_data", "meter_data"),
        ("clearings", "clearing_result"),
    ]:
        df = t[table]
        assert len(df) > 0, table
        assert (msgs.loc[df.msg_id.unique(), "kind"] == kind).all(), table
    # a bid row equals what its message said
    row = t["bids"].iloc[0]
    payload = json.loads(msgs.loc[row.msg_id, "payload"])
    assert payload["bid_id"] == row.bid_id and payload["price"] == row.price
    assert payload["quantities_kw"][row.interval] == row.quantity_kw
    # every award refers to an acknowledged bid
    assert set(t["awards"].bid_id) <= set(t["bids"].bid_id)


def test_markets_settle_and_money_is_conserved(default_run) -> None:  # type: ignore[no-untyped-def]
    result, t = default_run
    assert t["markets"].state.tolist() == ["settled", "settled"]
    s = t["settlements"]
    buyers, sellers = s[s.role == "buyer"], s[s.role == "seller"]
    assert buyers.net_dkk.sum() == pytest.approx(-sellers.net_dkk.sum())
    assert (sellers.net_dkk == sellers.payment_dkk - sellers.penalty_dkk).all()
    # SRP's rule delivered_plus_penalty: the awards' payment pro rata of the energy delivered
    award = t["awards"].groupby(["market_id", "seller", "interval"]).payment_dkk.sum()
    key = list(zip(sellers.market_id, sellers.party, sellers.interval, strict=True))
    share = (sellers.delivered_kwh / sellers.ordered_kwh).where(sellers.ordered_kwh > 0, 0.0).to_numpy()
    expected = award.loc[key].to_numpy() * share
    assert sellers.payment_dkk.to_numpy() == pytest.approx(expected)
    assert set(sellers.rule) == {"delivered_plus_penalty"}
    assert (s.delivered_kwh <= s.ordered_kwh + 1e-9).all()
    # accepted energy in clearings equals the awards
    assert t["clearings"].accepted_kwh.sum() == pytest.approx(t["awards"].accepted_kw.sum())
    assert result.summary["procured_kwh"] == pytest.approx(t["awards"].accepted_kw.sum())


def test_aggregators_never_offer_more_than_their_portfolio(default_run) -> None:  # type: ignore[no-untyped-def]
    _, t = default_run
    offered = t["bids"].groupby(["market_id", "seller", "interval"]).quantity_kw.sum()
    assert (offered > 0).all()
    load = t["portfolio_load"]
    assert len(load) > 0 and (load.load_kw > 0).all()


def test_manifest(default_run) -> None:  # type: ignore[no-untyped-def]
    result, t = default_run
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["completed"] is True and manifest["error"] is None
    assert manifest["seed"] == 42 and len(manifest["scenario_hash"]) == 64
    assert manifest["row_counts"] == {name: len(df) for name, df in t.items()}
    assert manifest["packages"]["highspy"]


def test_same_seed_same_tables_other_seed_differs(tmp_path: Path) -> None:
    scenario = load_scenario(REPO / "scenarios" / "default.yaml")
    runs = [run(scenario, tmp_path / name) for name in ("a", "b")]
    other = run(scenario.model_copy(update={"seed": 43}), tmp_path / "c")
    for name, table in TABLES.items():
        a, b = (pd.read_parquet(r.out_dir / f"{name}.parquet") for r in runs)
        if table.deterministic:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
            if name != "solver_timings":
                first, second = (r.out_dir / f"{name}.parquet" for r in runs)
                assert first.read_bytes() == second.read_bytes(), name
        else:
            assert len(a) == len(b)
    c = pd.read_parquet(other.out_dir / "portfolio_load.parquet")
    assert not c.equals(pd.read_parquet(runs[0].out_dir / "portfolio_load.parquet"))


def test_cli_run_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(REPO / "scenarios" / "default.yaml"), "--out", str(tmp_path / "r"), "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert "markets opened    2" in out and str(tmp_path / "r") in out
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["seed"] == 3
