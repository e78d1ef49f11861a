"""Typed, frozen messages exchanged through the FLECH communication endpoint.

Every message is a frozen :class:`msgspec.Struct` that carries its routing metadata
(ID, sender, recipient, market, product, simulated send time) and an MQTT-style
topic, and round-trips through JSON unchanged, so a real broker could carry
it. Agents never share objects: a message is the only thing that crosses
from one participant to another. Structs rather than frozen dataclasses because
the message path builds, encodes and decodes millions of them: a bid is built in
0.2 us instead of 3.4 us, and encoded and type-checked in C (issue 12). A copy
with some fields changed is :func:`replace` (``dataclasses.replace`` does not
apply); a plug-in's message type subclasses one of these with
``frozen=True, kw_only=True`` and is registered with :func:`register_message_type`.

Units: quantities in kW (average power per interval), prices in DKK/kWh,
money in DKK, times in whole simulated minutes since the scenario start.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

import msgspec

PLATFORM = "flech"
"""Participant ID of the platform itself (recipient of every request and bid)."""


AttrValue = str | bool | int | float | tuple[float, ...]
"""A product-specific field's value: a scalar, or one number per interval (a JSON list; a tuple in Python)."""


class Direction(StrEnum):
    """Sign of the requested re-profiling, seen from the grid."""

    DOWN = "down"  # consume less (or produce more) than the baseline
    UP = "up"  # consume more than the baseline


class RejectReason(StrEnum):
    """Reason codes of a rejection; one place, so tables and tests agree."""

    MALFORMED = "malformed"  # not parseable, wrong types or fields
    UNAUTHORISED = "unauthorised"  # sender is not who it claims, or its role may not send this
    UNKNOWN_PRODUCT = "unknown_product"
    UNKNOWN_MARKET = "unknown_market"
    DUPLICATE = "duplicate"  # message, market or bid ID already used
    GATE_CLOSED = "gate_closed"  # late: the market's gate has closed (or the market ended)
    OUT_OF_RANGE = "out_of_range"  # values outside the product's limits
    INVALID_TIMES = "invalid_times"  # inconsistent gate/delivery times in a request
    NOT_ELIGIBLE = "not_eligible"  # seller not eligible for this market
    TOO_LARGE = "too_large"  # a message, list, ID or text beyond the size bounds of flech_sim.limits
    RATE_LIMITED = "rate_limited"  # a participant sent faster than its transport allows (flech_sim.bridge)


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Common envelope. Subclasses add the payload fields."""

    kind: ClassVar[str] = "message"

    msg_id: str
    sender: str
    recipient: str
    market_id: str
    product_id: str
    sent_at: int  # simulated minute

    @property
    def topic(self) -> str:
        """MQTT-style topic: ``flech/<product>/<market>/<kind>``."""
        return f"flech/{self.product_id}/{self.market_id or '-'}/{self.kind}"

    def payload(self) -> dict[str, Any]:
        """Fields beyond the envelope, as JSON-ready values."""
        d = to_dict(self)
        for k in _ENVELOPE:
            d.pop(k, None)
        d.pop("kind", None)
        d.pop("topic", None)
        return d


_ENVELOPE = ("msg_id", "sender", "recipient", "market_id", "product_id", "sent_at")


class MarketRequest(Message, frozen=True, kw_only=True):
    """Buyer -> platform: open a market for a product (the seed's market open request)."""

    kind: ClassVar[str] = "market_request"
    location: str  # feeder / grid area the flexibility must come from ("*" = anywhere)
    direction: Direction
    gate_close: int  # bids must arrive strictly before this minute
    delivery_start: int
    interval_minutes: int
    need_kw: tuple[float, ...]  # requested flexibility per interval
    price_cap: float  # DKK/kWh; unmet need is valued at this price
    penalty_price: float | None = None  # DKK/kWh of shortfall; None = product default
    params: dict[str, str | float | int | bool] = {}

    @property
    def n_intervals(self) -> int:
        return len(self.need_kw)

    @property
    def delivery_end(self) -> int:
        return self.delivery_start + self.interval_minutes * len(self.need_kw)


class BidRequest(Message, frozen=True, kw_only=True):
    """Platform -> eligible sellers: a market is open; here are its terms."""

    kind: ClassVar[str] = "bid_request"
    buyer: str
    location: str
    direction: Direction
    gate_close: int
    delivery_start: int
    interval_minutes: int
    need_kw: tuple[float, ...]
    price_cap: float
    params: dict[str, str | float | int | bool] = {}
    penalty_price: float | None = None  # DKK/kWh of shortfall, so sellers can price their risk


class Bid(Message, frozen=True, kw_only=True):
    """Seller -> platform: an offer of flexibility per interval at one energy price."""

    kind: ClassVar[str] = "bid"
    bid_id: str
    price: float  # DKK/kWh
    quantities_kw: tuple[float, ...]  # offered per interval
    block: bool = False  # all-or-nothing over all intervals
    baseline_kw: tuple[float, ...] = ()  # seller's declared portfolio baseline per interval
    location: str = ""  # feeder the flexibility comes from, for system-wide markets ("" = pooled)
    attrs: dict[str, AttrValue] = {}
    """Product-specific fields (e.g. CRP's ``availability_price``), checked against the product's declared
    :class:`flech_sim.products.attrs.AttrSpec` list; unknown keys are refused."""


class Acknowledgement(Message, frozen=True, kw_only=True):
    """Platform -> sender: the referenced message was accepted."""

    kind: ClassVar[str] = "ack"
    ref_msg_id: str
    ref_id: str = ""  # the bid or market ID that was accepted


class Rejection(Message, frozen=True, kw_only=True):
    """Platform -> sender: the referenced message was refused, and why."""

    kind: ClassVar[str] = "rejection"
    ref_msg_id: str
    reason: RejectReason
    detail: str


class MarketCancellation(Message, frozen=True, kw_only=True):
    """Buyer -> platform (and platform -> bidders): withdraw a market before gate closure."""

    kind: ClassVar[str] = "market_cancellation"
    reason: str = ""


class MarketClosed(Message, frozen=True, kw_only=True):
    """Platform -> buyer and bidders: the gate has closed; clearing follows."""

    kind: ClassVar[str] = "market_closed"
    n_bids: int


class ClearingResult(Message, frozen=True, kw_only=True):
    """Platform -> buyer: the outcome of clearing its market."""

    kind: ClassVar[str] = "clearing_result"
    status: str
    objective_dkk: float
    cost_dkk: float  # what the buyer will pay for the accepted bids
    accepted_kw: tuple[float, ...]
    unmet_kw: tuple[float, ...]
    clearing_price: tuple[float | None, ...]  # DKK/kWh per interval (marginal accepted price)
    n_bids: int
    n_accepted: int
    detail: str = ""


class Award(Message, frozen=True, kw_only=True):
    """Platform -> bidder: what of one bid was accepted (a non-award has all zeros)."""

    kind: ClassVar[str] = "award"
    bid_id: str
    accepted_kw: tuple[float, ...]
    prices: tuple[float, ...]  # DKK/kWh paid per interval (the bid's price if pay-as-bid)
    payment_dkk: float
    delivery_start: int
    interval_minutes: int
    direction: Direction
    attrs: dict[str, AttrValue] = {}
    """Product-specific award fields (e.g. CRP's ``availability_dkk``, CL's ``cap_kw``), as the product declares."""

    @property
    def awarded(self) -> bool:
        return any(q > 0 for q in self.accepted_kw)


class Activation(Message, frozen=True, kw_only=True):
    """Buyer -> platform -> seller: call an option (CRP) or regulating power (mFRR)."""

    kind: ClassVar[str] = "activation"
    activation_id: str
    start: int
    interval_minutes: int
    quantities_kw: tuple[float, ...]  # kW per market interval from ``start`` on
    seller: str = ""  # the seller called ("" from the buyer: the platform splits it over the reserved sellers)


class MeterData(Message, frozen=True, kw_only=True):
    """Data provider -> platform: metered average power per interval of one metering point.

    ``None`` in ``consumption_kw`` is a gap: the meter reading is missing.
    """

    kind: ClassVar[str] = "meter_data"
    metering_point: str  # "<seller>@<location>"
    start: int
    interval_minutes: int
    consumption_kw: tuple[float | None, ...]


class SettlementStatement(Message, frozen=True, kw_only=True):
    """Platform -> buyer / seller: what was ordered, delivered, paid and penalised, per interval."""

    kind: ClassVar[str] = "settlement"
    party_role: str  # "buyer" or "seller"
    counterparty: str
    interval_start: tuple[int, ...]
    ordered_kwh: tuple[float, ...]
    delivered_kwh: tuple[float, ...]
    payment_dkk: tuple[float, ...]  # positive = money this party receives for delivery
    penalty_dkk: tuple[float, ...]  # positive = money this party pays (seller) / gets back (buyer)
    net_dkk: tuple[float, ...]  # money in for this party (negative = pays)
    meter_gap: tuple[bool, ...] = ()  # per interval: settled by the gap rule


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.kind: cls
    for cls in (
        MarketRequest,
        BidRequest,
        Bid,
        Acknowledgement,
        Rejection,
        MarketCancellation,
        MarketClosed,
        ClearingResult,
        Award,
        Activation,
        MeterData,
        SettlementStatement,
    )
}


def register_message_type(cls: type[Message]) -> type[Message]:
    """Let a plug-in product add its own message kinds without editing this module."""
    if not (isinstance(cls, type) and issubclass(cls, Message)):
        raise TypeError(f"{cls!r} is not a Message subclass (a frozen msgspec Struct)")
    MESSAGE_TYPES[cls.kind] = cls
    return cls


M = TypeVar("M", bound=Message)


def replace(msg: M, **changes: Any) -> M:
    """A copy of ``msg`` with some fields changed (what ``dataclasses.replace`` was for dataclasses)."""
    return msgspec.structs.replace(msg, **changes)


def fields_of(msg: Message) -> dict[str, Any]:
    """The message's fields by name, in declaration order (what ``vars`` gave for a dataclass)."""
    return {name: getattr(msg, name) for name in msg.__struct_fields__}


def _numpy_scalar(obj: Any) -> Any:
    """numpy scalars (what numeric code naturally produces) are written as the Python number."""
    if hasattr(obj, "item") and hasattr(obj, "dtype"):
        return obj.item()
    raise NotImplementedError(f"cannot carry {type(obj).__name__} in a message")


_ENCODER = msgspec.json.Encoder(enc_hook=_numpy_scalar)
_HEADS: dict[type[Message], bytes] = {}


def _encode(msg: Message, topic: str | None = None) -> bytes:
    """``{"kind": ..., "topic": ..., <fields in order>}`` as UTF-8: the Struct is encoded in C and
    the two derived keys are put in front of its fields (a Struct always has the envelope fields)."""
    cls = type(msg)
    head = _HEADS.get(cls)
    if head is None:
        head = _HEADS[cls] = b'{"kind":' + _ENCODER.encode(cls.kind) + b',"topic":'
    body = _ENCODER.encode(msg)
    return b"".join((head, _ENCODER.encode(topic or msg.topic), b",", body[1:]))


def to_dict(msg: Message) -> dict[str, Any]:
    """JSON-ready dict with ``kind`` and ``topic`` (lists for tuples, str for enums)."""
    return json.loads(_encode(msg))


def to_json(msg: Message, topic: str | None = None) -> str:
    """Compact JSON; tuples become lists and StrEnums their values (msgspec, about 0.5 us a message).

    msgspec writes NaN and infinity as null, so :func:`check_finite` is applied to what
    participants send before it is encoded.
    """
    return _encode(msg, topic).decode()


class MalformedMessage(ValueError):
    """Raised by :func:`from_json` / :func:`check_finite`; its text says what is wrong."""


def check_finite(msg: Message) -> None:
    """JSON has no NaN or infinity: a message carrying one could not cross a broker.

    Fast path: ``x - x`` is 0 for every finite number and NaN otherwise; a tuple is summed
    in C first (a sum overflowing to infinity, i.e. values near 1e308, is refused too).
    """
    total: float
    for name in msg.__struct_fields__:
        v = getattr(msg, name)
        if isinstance(v, tuple):
            try:
                total = sum(v)
            except TypeError:  # gaps (None) or text in the tuple
                total = sum(x for x in v if isinstance(x, int | float))
        elif isinstance(v, dict):
            total = sum(x for x in v.values() if isinstance(x, int | float))
        elif isinstance(v, float):
            total = v
        else:
            continue
        if total - total != 0:
            raise MalformedMessage(f"{msg.kind}.{name}: NaN or infinity cannot be carried as JSON")


def from_dict(data: Any) -> Message:
    """Validate a decoded payload into its message type (msgspec checks every field's type)."""
    if not isinstance(data, dict):
        raise MalformedMessage(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MalformedMessage(f"unknown message kind {_brief(kind)}")
    body = {k: v for k, v in data.items() if k not in ("kind", "topic")}
    try:
        msg = msgspec.convert(body, type=cls)
    except msgspec.ValidationError as exc:
        raise MalformedMessage(f"{kind}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - whatever else a hostile payload provokes
        raise MalformedMessage(f"{kind}: {type(exc).__name__}: {_brief(str(exc))}") from None
    topic = data.get("topic")
    if topic is not None and topic != msg.topic:
        raise MalformedMessage(f"topic {_brief(topic)} does not match message (expected {_brief(msg.topic)})")
    return msg


def from_json(text: str | bytes) -> Message:
    """Parse untrusted JSON into a message. Raises only :class:`MalformedMessage`, whatever the input:
    invalid UTF-8 or a lone surrogate, nesting too deep to decode, numbers out of range, a non-text value."""
    if not isinstance(text, str | bytes | bytearray | memoryview):
        raise MalformedMessage(f"expected JSON text, got {type(text).__name__}")
    try:
        data = msgspec.json.decode(text)
    except msgspec.MsgspecError as exc:
        raise MalformedMessage(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedMessage("not valid JSON: nested too deeply") from None
    except (UnicodeError, ValueError, TypeError) as exc:  # a str with a lone surrogate cannot be UTF-8
        raise MalformedMessage(f"not valid JSON: {type(exc).__name__}: {_brief(str(exc))}") from None
    return from_dict(data)


_DECODERS: dict[type[Message], msgspec.json.Decoder[Any]] = {}


def checked_copy(msg: Message) -> tuple[Message, str]:
    """Type-check a message built in-process as if it had crossed a broker: ``(copy, json)``.

    A Struct's constructor checks no types, so the message is encoded and decoded into its own
    type: it is checked exactly as JSON from outside is (an int sender, ``None`` quantities or a
    text meter value are refused), and what the platform goes on with is the decoded copy: plain,
    immutable values of the declared types (tuples, floats, enums), never objects the sender
    still holds. About 1.5 us for a bid, in C. NaN and infinity (written as null by msgspec) are
    caught by :func:`flech_sim.limits.check_message`, which is run on the original. Raises only
    :class:`MalformedMessage`.
    """
    cls = type(msg)
    decoder = _DECODERS.get(cls)
    if decoder is None:
        if MESSAGE_TYPES.get(getattr(cls, "kind", None)) is not cls:  # type: ignore[arg-type]
            raise MalformedMessage(f"{cls.__name__} is not a registered message type")
        decoder = _DECODERS[cls] = msgspec.json.Decoder(cls)
    try:
        data = _encode(msg, msg.topic)
    except Exception as exc:  # noqa: BLE001 - an object JSON cannot carry, a lone surrogate, ...
        raise MalformedMessage(
            f"{cls.kind}: not serialisable as JSON: {type(exc).__name__}: {_brief(str(exc))}"
        ) from None
    try:
        return decoder.decode(data), data.decode()
    except msgspec.ValidationError as exc:
        try:  # msgspec wrote NaN or infinity as null: say so rather than "got null"
            check_finite(msg)
        except MalformedMessage:
            raise
        except Exception:  # noqa: BLE001 - other bad values: the type error below says it
            pass
        raise MalformedMessage(f"{cls.kind}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - untrusted input
        raise MalformedMessage(f"{cls.kind}: {type(exc).__name__}: {_brief(str(exc))}") from None


def _brief(x: Any, n: int = 60) -> str:
    """A bounded repr of untrusted input, for an error text."""
    try:
        text = repr(x)
    except Exception:  # noqa: BLE001 - RecursionError, an int of more than 4,300 digits, ...
        return f"<{type(x).__name__}>"
    return text if len(text) <= n else f"{text[:n]}..."


class Rejected(Exception):
    """Raised by a checker (endpoint, dispatcher, product) to refuse an incoming message.

    The endpoint turns it into a :class:`Rejection` sent back to the sender;
    it is the one place a rejection is made.
    """

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
