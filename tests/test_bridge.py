"""The bridge's clock and checks without a broker (LoopbackWire): waiting for answers, deadlines, limits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from flech_sim.bridge import Bridge, LoopbackWire, RateLimit
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run

from .mqtt_support import ME, SCENARIO, example


def test_a_silent_participant_holds_the_clock_only_until_its_deadline_then_the_market_goes_on(tmp_path: Path) -> None:
    asked: list[str] = []

    def silent(pid: str, text: str) -> list[str]:
        asked.append(json.loads(text)["kind"])
        return []

    bridge = Bridge(LoopbackWire(silent), frozenset({ME}), answer_timeout_s=0.2)
    result = run(scenario_from_dict(SCENARIO), tmp_path, transport=bridge)
    assert result.completed, result.error
    assert asked.count("bid_request") == 2 and bridge.stats.deadlines_passed == 2
    assert result.manifest["transport"]["deadlines_passed"] == 2
    assert result.manifest["transport"]["external"] == [ME]
    bids = pd.read_parquet(tmp_path / "bids.parquet")
    assert ME not in set(bids.seller) and len(bids) > 0  # the market cleared with the others' bids


def test_rate_limit_is_a_token_bucket() -> None:
    r = RateLimit(per_second=2.0, burst=3)
    assert [r.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert r.allow("b", 0.0)  # per participant
    assert not r.allow("a", 0.25) and r.allow("a", 0.5)  # 0.5 s at 2/s: one token back
    assert [r.allow("a", 10.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_in_process_run_of_the_example_strategy_records_its_bids_in_order(tmp_path: Path) -> None:
    strategy = example().FixedPriceStrategy(ME, 0.1, 30.0)
    bridge = Bridge(LoopbackWire(lambda pid, text: strategy(text)), frozenset({ME}))
    result = run(scenario_from_dict(SCENARIO), tmp_path, transport=bridge)
    assert result.completed, result.error
    msgs = pd.read_parquet(tmp_path / "messages.parquet").sort_values("seq")
    mine = msgs[(msgs.direction == "in") & (msgs.authenticated_as == ME)]
    assert mine.msg_id.tolist() == [f"{ME}-000001", f"{ME}-000002"]
    assert Counter(msgs[(msgs.direction == "out") & (msgs.recipient == ME)].kind) == strategy.received
    assert bridge.stats.deadlines_passed == 0 and bridge.stats.refused_rate == 0


def test_json_without_defaulted_fields_is_a_complete_message() -> None:
    """A client in another language omits fields with defaults; msgspec left them out of the instance's
    __dict__, and the endpoint's limits check (which reads vars()) then crashed the run on a valid bid."""
    from flech_sim.limits import check_message
    from flech_sim.messages import Bid, from_json, to_json

    text = json.dumps(
        {
            "kind": "bid",
            "msg_id": "a-1",
            "sender": "a",
            "recipient": "flech",
            "market_id": "m",
            "product_id": "SRP",
            "sent_at": 0,
            "bid_id": "b",
            "price": 1.0,
            "quantities_kw": [1.0],
        }
    )
    msg = from_json(text)
    assert isinstance(msg, Bid) and msg.location == "" and msg.baseline_kw == ()
    check_message(msg, 0)  # raised KeyError('location') before
    assert from_json(to_json(msg)) == msg
