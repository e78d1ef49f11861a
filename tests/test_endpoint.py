"""The communication endpoint refuses bad input with the right reason, and records it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flech_sim.endpoint import DUPLICATE_WINDOW_MINUTES
from flech_sim.messages import PLATFORM, Rejection, RejectReason, replace, to_json


def finish(h) -> dict[str, pd.DataFrame]:  # type: ignore[no-untyped-def]
    for p in h.core.products.values():
        p.finalize()
    h.persistor.close()
    return {
        name: pd.read_parquet(h.persistor.out_dir / f"{name}.parquet")
        for name in ("messages", "rejections", "bids", "markets")
    }


def rejections_of(h, who: str) -> list[Rejection]:  # type: ignore[no-untyped-def]
    return [m for m in h.people[who].inbox if isinstance(m, Rejection)]


def open_market(h) -> None:  # type: ignore[no-untyped-def]
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(100.0, 50.0))))


def test_late_bid_is_rejected_as_gate_closed(harness) -> None:
    h = harness
    open_market(h)
    h.at(59, lambda: h.send("agg-a", h.bid("agg-a", "on-time", 1.0, (10.0, 10.0))))
    h.at(60, lambda: h.send("agg-a", h.bid("agg-a", "late", 1.0, (10.0, 10.0))))
    h.run(200)
    rej = rejections_of(h, "agg-a")
    assert [r.reason for r in rej] == [RejectReason.GATE_CLOSED]
    assert "gate closed at minute 60" in rej[0].detail
    t = finish(h)
    assert set(t["bids"].bid_id) == {"on-time"}
    late = t["messages"][(t["messages"].kind == "bid") & (t["messages"].verdict == "rejected")]
    assert len(late) == 1 and json.loads(late.payload.iloc[0])["bid_id"] == "late"
    assert t["rejections"].reason.tolist() == ["gate_closed"]
    assert t["rejections"].ref_msg_id.tolist() == late.msg_id.tolist()


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: h.bid("agg-a", "x", 1.0, (10.0, 10.0), market_id="nope"), RejectReason.UNKNOWN_MARKET),
        (lambda h: h.bid("agg-a", "x", 1.0, (10.0, 10.0), product="XYZ"), RejectReason.UNKNOWN_PRODUCT),
        (lambda h: h.bid("agg-a", "x", 5.0, (10.0, 10.0)), RejectReason.OUT_OF_RANGE),  # above the cap
        (lambda h: h.bid("agg-a", "x", 1.0, (10.0,)), RejectReason.OUT_OF_RANGE),  # wrong length
        (lambda h: h.bid("agg-a", "x", 1.0, (-1.0, 10.0)), RejectReason.OUT_OF_RANGE),
        (lambda h: h.bid("agg-a", "x", float("nan"), (1.0, 10.0)), RejectReason.MALFORMED),  # JSON has no NaN
        (lambda h: h.bid("agg-a", "x", 1.0, (1.0, 1.0), baseline=()), RejectReason.OUT_OF_RANGE),  # SRP needs baseline
        (lambda h: h.bid("agg-c", "x", 1.0, (1.0, 1.0)), RejectReason.NOT_ELIGIBLE),  # no portfolio on feeder-1
    ],
)
def test_bad_bids_are_rejected_with_reason(harness, mutate, reason) -> None:  # type: ignore[no-untyped-def]
    h = harness
    open_market(h)
    sender = "agg-c" if reason is RejectReason.NOT_ELIGIBLE else "agg-a"
    h.at(10, lambda: h.send(sender, mutate(h)))
    h.run(30)
    rej = rejections_of(h, sender)
    assert [r.reason for r in rej] == [reason], rej
    t = finish(h)
    assert t["bids"].empty
    assert t["rejections"].reason.tolist() == [str(reason)]


def test_participant_posing_as_another_is_unauthorised(harness) -> None:
    h = harness
    open_market(h)
    forged = h.bid("agg-b", "forged", 1.0, (10.0, 10.0))  # claims to be agg-b ...
    h.at(10, lambda: h.send("agg-a", forged))  # ... but comes through agg-a's connection
    h.run(30)
    rej = rejections_of(h, "agg-a")
    assert [r.reason for r in rej] == [RejectReason.UNAUTHORISED]
    assert "authenticated as 'agg-a'" in rej[0].detail
    assert not rejections_of(h, "agg-b")
    t = finish(h)
    row = t["messages"][t["messages"].msg_id == forged.msg_id].iloc[0]
    assert (row.sender, row.authenticated_as, row.verdict) == ("agg-b", "agg-a", "rejected")


def test_role_may_not_send_kind(harness) -> None:
    h = harness
    h.at(0, lambda: h.send("agg-a", h.request("m9", buyer="agg-a")))  # an aggregator opening a market
    h.run(10)
    assert [r.reason for r in rejections_of(h, "agg-a")] == [RejectReason.UNAUTHORISED]


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"kind": "teleport"}),
        json.dumps(
            {
                "kind": "bid",
                "msg_id": "agg-a-9",
                "sender": "agg-a",
                "recipient": PLATFORM,
                "market_id": "m1",
                "product_id": "SRP",
                "sent_at": 0,
                "bid_id": "b",
                "price": "cheap",
                "quantities_kw": [1, 2],
            }
        ),
    ],
)
def test_malformed_payload_is_rejected_and_kept_verbatim(harness, raw: str) -> None:
    h = harness
    open_market(h)
    h.at(5, lambda: h.send("agg-a", raw))
    h.run(10)
    rej = rejections_of(h, "agg-a")
    assert [r.reason for r in rej] == [RejectReason.MALFORMED]
    t = finish(h)
    bad = t["messages"][t["messages"].kind == "malformed"]
    assert bad.payload.tolist() == [raw]
    assert bad.msg_id.tolist() == [rej[0].ref_msg_id]
    assert bad.authenticated_as.tolist() == ["agg-a"]


def test_json_path_accepts_a_wellformed_bid(harness) -> None:
    h = harness
    open_market(h)
    h.at(5, lambda: h.send("agg-a", to_json(h.bid("agg-a", "via-json", 1.0, (10.0, 10.0)))))
    h.run(10)
    assert [m.kind for m in h.people["agg-a"].inbox if m.kind in ("ack", "rejection")] == ["ack"]


def answers_of(h, who: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(kind, ref_msg_id) of every ack and rejection a participant received, in order."""
    return [(m.kind, m.ref_msg_id) for m in h.people[who].inbox if m.kind in ("ack", "rejection")]


def test_duplicate_ids_are_rejected_and_redeliveries_answered_again(harness) -> None:
    h = harness
    open_market(h)
    b = h.bid("agg-a", "b1", 1.0, (10.0, 10.0))
    other = replace(h.bid("agg-a", "b2", 1.0, (10.0, 10.0)), msg_id=b.msg_id)
    h.at(5, lambda: h.send("agg-a", b))
    h.at(6, lambda: h.send("agg-a", b))  # the same message again (a broker's redelivery): acknowledged again
    h.at(7, lambda: h.send("agg-a", h.bid("agg-a", "b1", 1.0, (10.0, 10.0))))  # new message, same bid ID
    h.at(8, lambda: h.send("agg-a", other))  # another message under a used message ID
    h.at(8, lambda: h.send("dso-1", h.request("m1")))  # same market ID again
    h.run(10)
    rej = rejections_of(h, "agg-a")
    assert [r.reason for r in rej] == [RejectReason.DUPLICATE] * 2
    assert [k for k, ref in answers_of(h, "agg-a")] == ["ack", "ack", "rejection", "rejection"]
    assert answers_of(h, "agg-a")[:2] == [("ack", b.msg_id)] * 2
    assert rej[1].ref_msg_id != b.msg_id and rej[1].ref_msg_id.startswith(f"{PLATFORM}-duplicate-")
    assert [r.reason for r in rejections_of(h, "dso-1")] == [RejectReason.DUPLICATE]
    t = finish(h)
    assert t["bids"].bid_id.unique().tolist() == ["b1"] and len(t["bids"]) == 2  # booked once (two intervals)
    ins = t["messages"][t["messages"].direction == "in"].set_index("seq")
    assert ins.verdict.tolist() == ["accepted", "accepted", "redelivery", "rejected", "rejected", "rejected"]
    assert rej[1].ref_msg_id in set(ins.msg_id)  # the refused copy is on record under its own ID


def test_duplicate_ids_are_remembered_for_a_week_then_caught_downstream(harness) -> None:
    """Message IDs are kept for one to two weeks (two rotating generations), not for ever;
    an older replay still cannot do harm: its market has closed."""
    h = harness
    open_market(h)
    b = h.bid("agg-a", "b1", 1.0, (10.0, 10.0))
    week = DUPLICATE_WINDOW_MINUTES
    h.at(5, lambda: h.send("agg-a", b))
    h.at(week + 10, lambda: h.send("agg-a", b))  # rotated once: still remembered, answered as the first time
    h.at(2 * week + 10, lambda: h.send("agg-a", b))  # rotated twice: forgotten by the endpoint
    h.run(2 * week + 20)
    assert [k for k, _ in answers_of(h, "agg-a")] == ["ack", "ack", "rejection"]
    assert [r.reason for r in rejections_of(h, "agg-a")] == [RejectReason.GATE_CLOSED]
    ep = h.core.endpoint
    remembered = [i for gen in (ep._seen, ep._seen_before) for ids in gen.values() for i in ids]
    assert remembered == [b.msg_id]  # only the last one


def test_invalid_market_times_and_cancellation(harness) -> None:
    h = harness
    h.at(0, lambda: h.send("dso-1", h.request("bad", gate_close=100, delivery_start=50)))
    h.at(0, lambda: h.send("dso-1", h.request("m2")))
    h.at(1, lambda: h.send("agg-a", h.bid("agg-a", "b1", 1.0, (10.0,), market_id="m2")))
    from flech_sim.messages import MarketCancellation

    cancel = MarketCancellation(**h.people["dso-1"].env_fields("m2", "SRP", 2), reason="forecast changed")
    h.at(2, lambda: h.send("dso-1", cancel))
    h.at(3, lambda: h.send("agg-b", h.bid("agg-b", "b2", 1.0, (10.0,), market_id="m2")))
    h.run(300)
    assert [r.reason for r in rejections_of(h, "dso-1")] == [RejectReason.INVALID_TIMES]
    assert [r.reason for r in rejections_of(h, "agg-b")] == [RejectReason.GATE_CLOSED]
    assert [m.kind for m in h.people["agg-a"].inbox if m.market_id == "m2"] == [
        "bid_request",
        "ack",
        "market_cancellation",
    ]
    t = finish(h)
    m2 = t["markets"].set_index("market_id").loc["m2"]
    assert (m2.state, m2.note) == ("cancelled", "forecast changed")
    assert t["messages"][t["messages"].kind == "clearing_result"].empty
