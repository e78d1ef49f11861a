"""Every message kind round-trips through JSON unchanged and carries its topic."""

from __future__ import annotations

from typing import ClassVar

import pytest

from flech_sim.limits import check_message
from flech_sim.messages import (
    MESSAGE_TYPES,
    Acknowledgement,
    Activation,
    Award,
    Bid,
    BidRequest,
    ClearingResult,
    Direction,
    MalformedMessage,
    MarketCancellation,
    MarketClosed,
    MarketRequest,
    MeterData,
    Rejected,
    Rejection,
    RejectReason,
    SettlementStatement,
    checked_copy,
    from_json,
    register_message_type,
    replace,
    to_json,
)

ENV = {"msg_id": "x-1", "sender": "a", "recipient": "flech", "market_id": "m1", "product_id": "SRP", "sent_at": 17}

SAMPLES = [
    MarketRequest(
        **ENV,
        location="feeder-1",
        direction=Direction.DOWN,
        gate_close=60,
        delivery_start=120,
        interval_minutes=60,
        need_kw=(1.5, 2.0),
        price_cap=3.0,
        params={"note": "x", "k": 2},
    ),
    BidRequest(
        **ENV,
        buyer="dso",
        location="f",
        direction=Direction.UP,
        gate_close=60,
        delivery_start=120,
        interval_minutes=15,
        need_kw=(1.0,),
        price_cap=2.0,
    ),
    Bid(**ENV, bid_id="b1", price=0.75, quantities_kw=(1.0, 0.0), block=True, baseline_kw=(3.0, 3.5)),
    Acknowledgement(**ENV, ref_msg_id="y-1", ref_id="b1"),
    Rejection(**ENV, ref_msg_id="y-2", reason=RejectReason.GATE_CLOSED, detail="late"),
    MarketCancellation(**ENV, reason="no congestion"),
    MarketClosed(**ENV, n_bids=3),
    ClearingResult(
        **ENV,
        status="optimal",
        objective_dkk=10.0,
        cost_dkk=9.5,
        accepted_kw=(1.0, 2.0),
        unmet_kw=(0.0, 0.5),
        clearing_price=(0.7, None),
        n_bids=3,
        n_accepted=2,
    ),
    Award(
        **ENV,
        bid_id="b1",
        accepted_kw=(1.0, 0.0),
        prices=(0.75, 0.75),
        payment_dkk=0.75,
        delivery_start=120,
        interval_minutes=60,
        direction=Direction.DOWN,
    ),
    Activation(**ENV, activation_id="a1", start=120, interval_minutes=15, quantities_kw=(2.0,), seller="agg"),
    MeterData(**ENV, metering_point="agg@f", start=0, interval_minutes=15, consumption_kw=(1.0, None, 2.5)),
    SettlementStatement(
        **ENV,
        party_role="seller",
        counterparty="dso",
        interval_start=(120,),
        ordered_kwh=(1.0,),
        delivered_kwh=(0.5,),
        payment_dkk=(0.75,),
        penalty_dkk=(0.5,),
        net_dkk=(0.25,),
        meter_gap=(False,),
    ),
]


def test_samples_cover_every_kind() -> None:
    assert {type(m) for m in SAMPLES} == set(MESSAGE_TYPES.values())


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_json_round_trip_is_exact(msg) -> None:  # type: ignore[no-untyped-def]
    back = from_json(to_json(msg))
    assert back == msg and type(back) is type(msg)
    assert to_json(back) == to_json(msg)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_topic_and_frozen(msg) -> None:  # type: ignore[no-untyped-def]
    assert msg.topic == f"flech/SRP/m1/{msg.kind}"
    with pytest.raises(AttributeError):
        msg.sender = "someone else"  # type: ignore[misc]


def test_malformed_texts_name_the_problem() -> None:
    with pytest.raises(MalformedMessage, match="not valid JSON"):
        from_json("{")
    with pytest.raises(MalformedMessage, match="unknown message kind 'x'"):
        from_json('{"kind": "x"}')
    with pytest.raises(MalformedMessage, match=r"bid: Expected `float`, got `str` - at `\$\.price`"):
        from_json(to_json(SAMPLES[2]).replace('"price":0.75', '"price":"abc"'))
    with pytest.raises(MalformedMessage, match="topic"):
        from_json(to_json(SAMPLES[2]).replace("flech/SRP/m1/bid", "flech/SRP/m2/bid"))


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("[" * 1000 + "]" * 1000, "not valid JSON"),  # too deep for the decoder: RecursionError inside
        ('{"kind": "bid", "sender": "\ud800"}', "not valid JSON"),  # a str that cannot be UTF-8
        ('{"kind": "bid", "sender": "\\udc00"}', "not valid JSON"),  # a lone surrogate escape
        (b"\xff\xfe{}", "not valid JSON"),
        ("1" * 5000, "not valid JSON"),
        ('{"kind": "bid", "price": 1e400}', "not valid JSON"),
        (17, "expected JSON text, got int"),
        (None, "expected JSON text, got NoneType"),
        ({"kind": "bid"}, "expected JSON text, got dict"),
        ('{"kind": "' + "x" * 100_000 + '"}', "unknown message kind"),
    ],
)
def test_from_json_raises_only_malformed_message(raw, why: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MalformedMessage, match=why) as exc:
        from_json(raw)
    assert len(str(exc.value)) < 300  # bounded, whatever came in


def test_checked_copy_types_inprocess_messages_like_json() -> None:
    bid = SAMPLES[2]
    copy, text = checked_copy(replace(bid, quantities_kw=[1, 0], price=1))
    assert copy == replace(bid, quantities_kw=(1.0, 0.0), price=1.0) and type(copy.price) is float
    assert text == to_json(replace(bid, quantities_kw=[1, 0], price=1))
    for bad, match in [
        ({"sender": 5}, r"Expected `str`, got `int` - at `\$\.sender`"),
        ({"msg_id": None}, r"got `null` - at `\$\.msg_id`"),
        ({"quantities_kw": None}, r"at `\$\.quantities_kw`"),
        ({"quantities_kw": (float("inf"), 1.0)}, "NaN or infinity"),
        ({"price": object()}, "not serialisable as JSON"),
        ({"bid_id": "\ud800"}, "not serialisable as JSON"),
    ]:
        with pytest.raises(MalformedMessage, match=match):
            checked_copy(replace(bid, **bad))
    # NaN in an optional field is written as null, i.e. None: the endpoint's bounds check, run on
    # the original, refuses it
    req = SAMPLES[0]
    nan = replace(req, penalty_price=float("nan"))
    assert checked_copy(nan)[0].penalty_price is None
    with pytest.raises(Rejected, match="NaN or infinity") as rej:
        check_message(nan, 0)
    assert rej.value.reason is RejectReason.MALFORMED
    meter = SAMPLES[10]
    with pytest.raises(MalformedMessage, match=r"consumption_kw\[1\]"):
        checked_copy(replace(meter, consumption_kw=(1.0, "2.5")))


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: m.kind)
def test_every_kind_has_bounds_and_the_samples_are_within_them(msg) -> None:  # type: ignore[no-untyped-def]
    check_message(msg, 0)


def test_json_text_is_kind_topic_then_the_fields_in_order() -> None:
    """The persisted payload (and so the runs' fingerprints) is the same text as with the former dataclasses."""
    bid = Bid(
        msg_id="a-1",
        sender="a",
        recipient="flech",
        market_id="m1",
        product_id="SRP",
        sent_at=3,
        bid_id="b",
        price=1.5,
        quantities_kw=(10.0, 0.0),
    )
    assert to_json(bid) == (
        '{"kind":"bid","topic":"flech/SRP/m1/bid","msg_id":"a-1","sender":"a","recipient":"flech","market_id":"m1",'
        '"product_id":"SRP","sent_at":3,"bid_id":"b","price":1.5,"quantities_kw":[10.0,0.0],"block":false,'
        '"baseline_kw":[],"location":"","attrs":{}}'
    )
    assert to_json(bid, "flech/x/y/bid").startswith('{"kind":"bid","topic":"flech/x/y/bid","msg_id":"a-1",')


class _PluginOffer(Bid, frozen=True, kw_only=True):
    """A plug-in's own message type: a Struct subclass of Bid."""

    kind: ClassVar[str] = "test_plugin_offer"
    ramp_kw_per_min: float = 0.0


def test_a_plugin_message_type_registers_round_trips_and_is_checked() -> None:
    register_message_type(_PluginOffer)
    try:
        bid = next(m for m in SAMPLES if m.kind == "bid")
        offer = _PluginOffer(**{k: getattr(bid, k) for k in Bid.__struct_fields__}, ramp_kw_per_min=2)
        copy, text = checked_copy(offer)
        assert type(copy) is _PluginOffer and copy.ramp_kw_per_min == 2.0 and type(copy.ramp_kw_per_min) is float
        assert from_json(text) == copy and replace(copy, price=0.5).price == 0.5
        with pytest.raises(MalformedMessage):
            checked_copy(replace(offer, ramp_kw_per_min="fast"))  # type: ignore[arg-type]
    finally:
        MESSAGE_TYPES.pop(_PluginOffer.kind)
    with pytest.raises(TypeError):
        register_message_type(dict)  # type: ignore[arg-type]
