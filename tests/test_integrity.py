"""Market integrity (issue 13): no participant can harm another through message IDs or redeliveries,
and no input -- huge numbers, deep JSON, surrogates, wrong types, implausible sizes -- escapes the
endpoint or wipes the run's records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd
import pytest

from flech_sim import limits
from flech_sim.endpoint import Connection
from flech_sim.messages import (
    PLATFORM,
    Bid,
    MeterData,
    Rejection,
    RejectReason,
    to_json,
)
from flech_sim.scenario import load_scenario
from flech_sim.simulation import run

from .conftest import REPO
from .test_endpoint import finish, open_market, rejections_of


def answers(h, who: str) -> list[Any]:  # type: ignore[no-untyped-def]
    return [m for m in h.people[who].inbox if m.kind in ("ack", "rejection")]


def next_msg_id(h, who: str) -> str:  # type: ignore[no-untyped-def]
    conn = h.people[who].conn
    return f"{who}-{conn.sent + 1:06d}"


def meter_data(h, who: str = "datahub", **kw: Any) -> MeterData:  # type: ignore[no-untyped-def]
    fields = {
        "metering_point": "agg-b@feeder-1",
        "start": 0,
        "interval_minutes": 15,
        "consumption_kw": (1.0, 2.0),
        **kw,
    }
    return MeterData(**h.people[who].env_fields("", "METER", int(h.env.now)), **fields)


# -- 1. message-ID squatting ------------------------------------------------------------------------
@pytest.mark.parametrize("victim", ["dso-1", "datahub", "agg-b"])
@pytest.mark.parametrize("squat", ["rejected", "accepted", "forged"])
def test_another_participants_message_cannot_make_mine_a_duplicate(harness, victim: str, squat: str) -> None:
    """agg-a uses the victim's next (predictable) message ID first: in a message of its own that is
    rejected (unknown market) or accepted (a real bid), or forged in the victim's name. The victim's
    real message -- a DSO's market request, the data provider's meter data, a bid -- is accepted."""
    h = harness
    if victim != "dso-1":
        open_market(h)
    stolen = next_msg_id(h, victim)

    def squat_it() -> None:
        if squat == "forged":
            bid = h.bid("agg-a", "x", 1.0, (10.0, 10.0))
            msg = msgspec.structs.replace(bid, msg_id=stolen, sender=victim)
        else:
            bid = h.bid("agg-a", "x", 1.0, (10.0, 10.0), market_id="m1" if squat == "accepted" else "nope")
            msg = msgspec.structs.replace(bid, msg_id=stolen)
        h.send("agg-a", msg)

    def real() -> None:
        if victim == "dso-1":
            msg: Any = h.request("m1", need=(100.0, 50.0))
        elif victim == "datahub":
            msg = meter_data(h)
        else:
            msg = h.bid("agg-b", "b-real", 1.0, (10.0, 10.0))
        assert msg.msg_id == stolen
        h.send(victim, msg)

    h.at(1 if victim == "dso-1" else 5, squat_it)
    h.at(2 if victim == "dso-1" else 6, real)
    h.run(30)
    assert [m.kind for m in answers(h, victim)][-1] == "ack", rejections_of(h, victim)
    assert not rejections_of(h, victim)
    agg_a = [m.kind for m in answers(h, "agg-a")]
    accepted = squat == "accepted" and victim != "dso-1"  # no market m1 to bid in before the DSO opens it
    assert agg_a == (["ack"] if accepted else ["rejection"])
    t = finish(h)
    if victim == "agg-b":
        assert "b-real" in set(t["bids"].bid_id)


# -- 4. redelivery is idempotent --------------------------------------------------------------------------
def test_redelivered_rejected_message_gets_the_same_rejection(harness) -> None:
    h = harness
    open_market(h)
    late = h.bid("agg-a", "late", 1.0, (10.0, 10.0))
    h.at(60, lambda: h.send("agg-a", late))
    h.at(61, lambda: h.send("agg-a", late))
    h.run(62)
    first, again = rejections_of(h, "agg-a")
    assert (again.reason, again.detail, again.ref_msg_id) == (first.reason, first.detail, first.ref_msg_id)
    assert first.reason is RejectReason.GATE_CLOSED
    t = finish(h)
    assert t["messages"][t["messages"].direction == "in"].verdict.tolist() == ["accepted", "rejected", "redelivery"]


def test_a_different_message_under_a_used_id_names_neither_and_drops_nothing(harness) -> None:
    h = harness
    open_market(h)
    bid = h.bid("agg-b", "b1", 1.0, (10.0, 10.0))
    h.at(5, lambda: h.send("agg-b", bid))
    h.at(6, lambda: h.send("agg-b", msgspec.structs.replace(bid, price=0.5)))  # same ID, another payload
    h.run(200)
    rej = rejections_of(h, "agg-b")
    assert [r.reason for r in rej] == [RejectReason.DUPLICATE]
    assert rej[0].ref_msg_id != bid.msg_id
    t = finish(h)
    assert set(t["bids"].price) == {1.0}  # the first one, unchanged
    awards = [m for m in h.people["agg-b"].inbox if m.kind == "award"]
    assert [a.bid_id for a in awards] == ["b1"] and awards[0].accepted_kw == (10.0, 10.0)


def _outcomes(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every award row (without its message ID) and every party's net settlement per market."""
    awards = pd.read_parquet(out / "awards.parquet").drop(columns=["msg_id"])
    awards = awards.sort_values(list(awards.columns)).reset_index(drop=True)
    net = pd.read_parquet(out / "settlements.parquet").groupby(["party", "market_id"])["net_dkk"].sum()
    return awards, net.reset_index()


@pytest.mark.parametrize("old_platform", [False, True])
def test_at_least_once_redelivery_leaves_every_outcome_unchanged(tmp_path, monkeypatch, old_platform: bool) -> None:
    """A broker delivers agg-b's first bid twice. With ``old_platform`` the aggregator is also told, as
    the platform once did, that the copy is a duplicate naming the accepted bid: it must not drop it."""
    scenario = load_scenario(REPO / "tests" / "reference_scenarios" / "srp_block_bids.yaml")
    honest = run(scenario, tmp_path / "honest")
    assert honest.completed, honest.error
    send = Connection.send
    redelivered: list[Bid] = []

    def at_least_once(self: Connection, msg: Any) -> None:
        send(self, msg)
        if self.participant_id == "agg-b" and isinstance(msg, Bid) and not redelivered:
            redelivered.append(msg)
            send(self, msg)
            if old_platform:
                self.inbox.put(
                    Rejection(
                        msg_id="flech-old",
                        sender=PLATFORM,
                        recipient="agg-b",
                        market_id=msg.market_id,
                        product_id=msg.product_id,
                        sent_at=msg.sent_at,
                        ref_msg_id=msg.msg_id,
                        reason=RejectReason.DUPLICATE,
                        detail="message ID already used",
                    )
                )

    monkeypatch.setattr(Connection, "send", at_least_once)
    twice = run(scenario, tmp_path / "twice")
    assert twice.completed, twice.error
    assert redelivered
    aw_h, net_h = _outcomes(tmp_path / "honest")
    aw_t, net_t = _outcomes(tmp_path / "twice")
    assert (aw_h.accepted_kw > 0).any() and len(net_h) > 0
    pd.testing.assert_frame_equal(aw_h, aw_t)
    pd.testing.assert_frame_equal(net_h, net_t)
    msgs = pd.read_parquet(tmp_path / "twice" / "messages.parquet")
    again = msgs[msgs.verdict == "redelivery"]
    assert again.msg_id.tolist() == [redelivered[0].msg_id]
    acks = msgs[(msgs.kind == "ack") & (msgs.ref_msg_id == redelivered[0].msg_id)]
    assert len(acks) == 2


# -- 5. times beyond any timestamp -------------------------------------------------------------------------
@pytest.mark.parametrize("value", [2**63, 2**62, 2**64 - 1, 2**70, 10**300, -1, limits.MAX_MINUTE + 1])
@pytest.mark.parametrize("field", ["sent_at", "gate_close", "delivery_start"])
def test_huge_times_are_rejected_and_the_record_survives(harness, field: str, value: int) -> None:
    h = harness
    req = h.request("m1")
    data = json.loads(to_json(req))
    data[field] = value
    raw = json.dumps(data)
    h.at(0, lambda: h.send("dso-1", raw))
    h.at(0, lambda: h.send("dso-1", msgspec.structs.replace(h.request("m2"), **{field: value})))
    h.run(10)
    rej = rejections_of(h, "dso-1")
    assert [r.reason for r in rej] == [RejectReason.INVALID_TIMES] * 2, rej
    assert field in rej[0].detail
    t = finish(h)  # closes the persistor: every table is readable
    ins = t["messages"][t["messages"].direction == "in"]
    assert len(ins) == 2 and (ins.verdict == "rejected").all()
    assert str(value) in ins.payload.iloc[0]  # the raw value is kept in the payload
    lo = pd.Timestamp("2026-01-12")
    hi = lo + pd.Timedelta(minutes=limits.MAX_MINUTE)
    assert ins.sent_at.between(lo, hi).all()  # clamped, never wrapped


# -- 6. hostile JSON ---------------------------------------------------------------------------------------
HOSTILE: list[Any] = [
    "[" * 1000 + "]" * 1000,
    '{"kind": "bid", "x": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"kind": "bid", "sender": "\ud800"}',  # a lone surrogate in the text itself
    '{"kind": "bid", "sender": "\\ud800"}',  # ... and as an escape
    b'{"kind": "bid", "sender": "\xff\xfe"}',
    b"\x00\x01\x02",
    "9" * 5000,
    12345,
    None,
    {"kind": "bid"},
    ["not", "text"],
    object(),
    "x" * (limits.MAX_MESSAGE_BYTES + 1),
]


@pytest.mark.parametrize("raw", HOSTILE, ids=lambda r: f"{type(r).__name__}:{repr(r)[:20]}")
def test_hostile_payload_becomes_a_recorded_rejection(harness, raw: Any) -> None:
    h = harness
    h.at(1, lambda: h.send("agg-a", raw))
    h.run(5)
    rej = rejections_of(h, "agg-a")
    too_large = isinstance(raw, str) and len(raw) > limits.MAX_MESSAGE_BYTES
    assert [r.reason for r in rej] == [RejectReason.TOO_LARGE if too_large else RejectReason.MALFORMED]
    t = finish(h)
    bad = t["messages"][t["messages"].direction == "in"]
    assert bad.kind.tolist() == ["malformed"] and bad.msg_id.tolist() == [rej[0].ref_msg_id]
    assert len(bad.payload.iloc[0]) <= limits.MAX_MESSAGE_BYTES + 100
    assert t["rejections"].ref_msg_id.tolist() == [rej[0].ref_msg_id]


# -- 7. plausibility bounds --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"need": (10.0,) * 100_000}, RejectReason.TOO_LARGE, "need_kw"),
        ({"need": (10.0,) * 1000, "interval_minutes": 60}, RejectReason.TOO_LARGE, "window"),
        ({"gate_close": 10**12, "delivery_start": 10**12}, RejectReason.INVALID_TIMES, "gate_close"),
        ({"gate_close": 60, "delivery_start": limits.MAX_LEAD_MINUTES}, RejectReason.INVALID_TIMES, "ahead"),
        ({"need": (1e308,)}, RejectReason.OUT_OF_RANGE, "need_kw[0]"),
        ({"need": (float("nan"),)}, RejectReason.MALFORMED, "need_kw"),  # as JSON: null, not a float
        ({"cap": 1e6}, RejectReason.OUT_OF_RANGE, "price_cap"),
        ({"interval_minutes": 10_000}, RejectReason.OUT_OF_RANGE, "interval_minutes"),
        ({"market_id": "m" * 10_000}, RejectReason.TOO_LARGE, "market_id"),
        ({"location": "f" * 500}, RejectReason.TOO_LARGE, "location"),
        ({"params": {f"k{i}": i for i in range(1000)}}, RejectReason.TOO_LARGE, "params"),
        ({"params": {"note": "x" * 100_000}}, RejectReason.TOO_LARGE, "params"),
        ({"params": {"k": 1e300}}, RejectReason.OUT_OF_RANGE, "params"),
    ],
)
@pytest.mark.parametrize("path", ["typed", "json"])
def test_implausible_requests_are_refused_with_a_specific_reason(
    harness, change: dict[str, Any], reason: RejectReason, field: str, path: str
) -> None:
    h = harness
    change = dict(change)
    market_id = change.pop("market_id", "m1")
    req = h.request(market_id, **change)
    msg: Any = to_json(req) if path == "json" else req
    h.at(0, lambda: h.send("dso-1", msg))
    h.run(5)
    rej = rejections_of(h, "dso-1")
    assert [r.reason for r in rej] == [reason], rej
    assert field in rej[0].detail
    assert not h.people["agg-a"].of("bid_request")  # nothing reached a product, no forecast was asked for
    t = finish(h)
    assert t["markets"].empty and len(t["messages"]) == 2


def test_bounds_do_not_touch_honest_messages(harness) -> None:
    h = harness
    h.at(
        0,
        lambda: h.send(
            "dso-1",
            h.request(
                "m1", need=(100.0,) * 96, interval_minutes=15, delivery_start=120, params={"dispatch": "on_award"}
            ),
        ),
    )
    h.at(1, lambda: h.send("datahub", meter_data(h, consumption_kw=(1.0, None) * 48)))
    h.run(5)
    assert [m.kind for m in answers(h, "dso-1")] == ["ack"]
    assert [m.kind for m in answers(h, "datahub")] == ["ack"]


# -- 8. typed messages are type-checked like JSON -----------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "make"),
    [
        ("agg-a", lambda h: msgspec.structs.replace(h.bid("agg-a", "x", 1.0, (10.0, 10.0)), msg_id=None)),
        ("agg-a", lambda h: msgspec.structs.replace(h.bid("agg-a", "x", 1.0, (10.0, 10.0)), sender=17)),
        ("agg-a", lambda h: msgspec.structs.replace(h.bid("agg-a", "x", 1.0, (10.0, 10.0)), quantities_kw=None)),
        ("agg-a", lambda h: msgspec.structs.replace(h.bid("agg-a", "x", 1.0, (10.0, 10.0)), quantities_kw=(1.0, "2"))),
        ("agg-a", lambda h: msgspec.structs.replace(h.bid("agg-a", "x", 1.0, (10.0, 10.0)), block="yes")),
        ("agg-a", lambda h: msgspec.structs.replace(h.bid("agg-a", "x", 1.0, (10.0, 10.0)), price=object())),
        ("agg-a", lambda h: msgspec.structs.replace(h.bid("agg-a", "x", 1.0, (10.0, 10.0)), bid_id="\ud800")),
        ("datahub", lambda h: meter_data(h, consumption_kw=(1.0, "12.5"))),
        ("datahub", lambda h: meter_data(h, start="0")),
        ("dso-1", lambda h: msgspec.structs.replace(h.request("m1"), direction="sideways")),
    ],
)
def test_wrongly_typed_inprocess_messages_are_malformed_and_recorded(harness, who: str, make: Any) -> None:
    h = harness
    open_market(h)
    h.at(5, lambda: h.send(who, make(h)))
    h.run(10)
    rej = [r for r in rejections_of(h, who)]
    assert [r.reason for r in rej] == [RejectReason.MALFORMED], rej
    t = finish(h)
    assert t["bids"].empty and t["meter_data"].empty if "meter_data" in t else t["bids"].empty
    assert t["messages"][t["messages"].kind == "malformed"].msg_id.tolist() == [rej[0].ref_msg_id]


def test_the_checked_copy_is_what_the_product_books(harness) -> None:
    """In-process values are normalised as if they had crossed a broker: a list becomes a tuple, an
    int a float, and the sender's own objects never reach the platform."""
    h = harness
    open_market(h)
    quantities = [10, 10]
    bid = msgspec.structs.replace(h.bid("agg-a", "b1", 1, (10.0, 10.0)), quantities_kw=quantities)
    h.at(5, lambda: h.send("agg-a", bid))
    h.run(6)
    booked = h.core.products["SRP"].markets["m1"].bids[0]
    assert booked == msgspec.structs.replace(bid, quantities_kw=(10.0, 10.0), price=1.0)
    assert booked.quantities_kw is not quantities and type(booked.price) is float
