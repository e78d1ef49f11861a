"""The message path's shortcuts of issue 12 (target 3) give what the long way gives.

The ack built in one place, the inbox put (against SimPy's own, over random interleavings), bids
routed straight to the product, and the unchanged declared baseline: each is put beside the general path
it replaces, so a shortcut that differed (a row, a payload, an event order, a baseline) fails here.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

import flech_sim.endpoint as endpoint_mod
from flech_sim.dispatcher import Dispatcher
from flech_sim.endpoint import Endpoint, _put
from flech_sim.messages import (
    PLATFORM,
    Acknowledgement,
    Bid,
    Direction,
    MarketRequest,
    Message,
    Rejected,
    from_json,
    to_json,
)
from flech_sim.products.validation import check_declared_baseline, finite_numbers


class Rows:
    """A persistor that keeps what it is given."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, tuple[Any, ...]]] = []

    def append(self, table: str, row: tuple[Any, ...]) -> None:
        self.rows.append((table, row))


def bid(sender: str, k: int, market_id: str = "m1", product_id: str = "SRP") -> Bid:
    return Bid(
        msg_id=f"{sender}-{k:06d}",
        sender=sender,
        recipient=PLATFORM,
        market_id=market_id,
        product_id=product_id,
        sent_at=0,
        bid_id=f"{sender}-b{k}",
        price=1.0,
        quantities_kw=(10.0,),
        baseline_kw=(100.0,),
    )


def test_the_ack_row_and_payload_are_those_of_the_general_delivery() -> None:
    env = simpy.Environment()
    fast, slow = Rows(), Rows()
    ep, ref = Endpoint(env, fast), Endpoint(env, slow)  # type: ignore[arg-type]
    ep.route = lambda msg: "ref-" + msg.msg_id
    conn, ref_conn = ep.connect("agg-a", "aggregator"), ref.connect("agg-a", "aggregator")
    for market in ("m1", "m2", "m1", "m-3"):  # a second ack of a market reuses its head
        before = len(fast.rows)
        conn.send(bid("agg-a", len(fast.rows), market_id=market))
        (_, bid_row), (table, ack_row) = fast.rows[before:]
        ack = conn.inbox.items[-1]
        assert table == "messages" and isinstance(ack, Acknowledgement)
        assert ack.ref_msg_id == bid_row.msg_id and ack.ref_id == "ref-" + bid_row.msg_id
        ref._record_in(bid_row.seq, from_json(bid_row.payload), ref_conn, "accepted", bid_row.payload)
        assert bid_row == slow.rows[-1][1]  # the accepted message's row, as _record_in writes it
        ref._seq = ack_row.seq - 1  # the general path, for the same ack, at the same place in the sequence
        ref._deliver(ref_conn, ack)
        assert ack_row == slow.rows[-1][1]
        assert ack_row.payload == to_json(ack) and ack_row.topic == ack.topic == f"flech/SRP/{market}/ack"
    assert ep.counts == {"in": 4, "out": 4, "rejected": 0}


def test_the_ack_heads_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(endpoint_mod, "_ACK_HEADS", 3)
    env = simpy.Environment()
    rows = Rows()
    ep = Endpoint(env, rows)  # type: ignore[arg-type]
    ep.route = lambda msg: "x"
    conn = ep.connect("agg-a", "aggregator")
    for k in range(10):
        conn.send(bid("agg-a", k, market_id=f"m{k}"))
        assert len(ep._ack_heads) <= 3
        assert rows.rows[-1][1].payload == to_json(conn.inbox.items[-1])


def _trace(use_put: bool, seed: int) -> list[tuple[float, str]]:
    """Random senders and getters on a few unbounded inboxes (as the platform's): what happens, in order."""
    rng = random.Random(seed)
    env = simpy.Environment()
    stores = [simpy.Store(env) for _ in range(3)]
    seen: list[tuple[float, str]] = []

    def sender(name: str) -> Any:
        for k in range(rng.randint(1, 12)):
            store = rng.randrange(len(stores))
            item = f"{name}:{k}"
            if use_put:
                stores[store].put(item)
            else:
                _put(stores[store], item)
            seen.append((env.now, f"{name} put {item} in {store}"))
            yield env.timeout(rng.choice((0, 0, 1, 2)))

    def getter(name: str, store: int) -> Any:
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.3:  # a get that may time out, as agents wait for answers
                get = stores[store].get()
                got = yield get | env.timeout(rng.choice((0, 1)))
                if get in got:
                    seen.append((env.now, f"{name} got {got[get]}"))
                else:
                    get.cancel()
                    seen.append((env.now, f"{name} timed out"))
            else:
                item = yield stores[store].get()
                seen.append((env.now, f"{name} got {item}"))
            yield env.timeout(rng.choice((0, 1)))

    def ticker() -> Any:
        for k in range(8):
            seen.append((env.now, f"tick {k}"))
            yield env.timeout(rng.choice((0, 1)))

    kinds = [sender, getter, ticker]
    for i in range(rng.randint(2, 8)):
        kind = kinds[rng.randrange(3)]
        env.process(kind(f"s{i}") if kind is sender else kind(f"g{i}", i % 3) if kind is getter else kind())
    env.run(until=40)
    return seen


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10**9))
def test_the_inbox_put_happens_as_store_put_does(seed: int) -> None:
    assert _trace(use_put=False, seed=seed) == _trace(use_put=True, seed=seed)


class _Product:
    """A target with a bid shortcut, counting which way each message came."""

    def __init__(self, own_handle: bool) -> None:
        self.calls: list[str] = []
        self.accept_bid = None if own_handle else self._accept_bid

    def handle(self, msg: Message) -> str:
        self.calls.append("handle")
        return "h"

    def _accept_bid(self, msg: Bid) -> str:
        self.calls.append("accept_bid")
        return "a"


def test_bids_go_straight_to_accept_bid_and_everything_else_through_handle() -> None:
    d = Dispatcher(lambda msg: None)
    plain, own = _Product(own_handle=False), _Product(own_handle=True)
    d.register("SRP", plain)  # type: ignore[arg-type]
    d.register("OWN", own)  # type: ignore[arg-type]
    req = MarketRequest(
        msg_id="dso-1",
        sender="dso",
        recipient=PLATFORM,
        market_id="m1",
        product_id="SRP",
        sent_at=0,
        location="f",
        direction=Direction.DOWN,
        gate_close=60,
        delivery_start=60,
        interval_minutes=60,
        need_kw=(1.0,),
        price_cap=1.0,
    )
    assert d.route(bid("agg-a", 1)) == "a" and d.route(req) == "h"
    assert d.route(bid("agg-a", 2, product_id="OWN")) == "h"
    assert plain.calls == ["accept_bid", "handle"] and own.calls == ["handle"]
    with pytest.raises(Rejected):
        d.route(bid("agg-a", 3, product_id="NOPE"))


def test_a_product_that_handles_messages_its_own_way_gets_no_shortcut() -> None:
    from flech_sim.products.base import Product
    from flech_sim.products.srp import SRPProduct

    class Own(SRPProduct):
        def handle(self, msg: Message) -> str:
            return super().handle(msg)

    assert Product.accept_bid.fget(Own.__new__(Own)) is None  # type: ignore[attr-defined]
    p = SRPProduct.__new__(SRPProduct)
    assert Product.accept_bid.fget(p) == p._accept_bid  # type: ignore[attr-defined]


REQ1 = MarketRequest(
    msg_id="d",
    sender="dso",
    recipient=PLATFORM,
    market_id="m1",
    product_id="SRP",
    sent_at=0,
    location="f",
    direction=Direction.DOWN,
    gate_close=60,
    delivery_start=60,
    interval_minutes=60,
    need_kw=(1.0, 2.0),
    price_cap=1.0,
)
values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 100.0]),
    st.integers(-1, 2),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
)


def _slow(baseline: Any, earlier: tuple[float, ...] | None) -> tuple[str, Any]:
    """check_declared_baseline without its fast path (what it was before)."""
    if len(baseline) != 2 or not finite_numbers(baseline):
        return "refused", None
    declared = tuple(map(float, baseline))
    if earlier is not None and earlier != declared:
        return "refused", None
    return "ok", declared


@settings(max_examples=400, deadline=None)
@given(
    baseline=st.one_of(st.lists(values, min_size=0, max_size=3).map(tuple), st.lists(values, min_size=2, max_size=2)),
    earlier=st.one_of(st.none(), st.sampled_from([(1.0, 2.0), (0.0, 0.0), (-0.0, 100.0), (1.0, 1.0)])),
)
def test_the_declared_baseline_fast_path_agrees_with_the_full_check(baseline: Any, earlier: Any) -> None:
    b = Bid(
        msg_id="x",
        sender="agg",
        recipient=PLATFORM,
        market_id="m1",
        product_id="SRP",
        sent_at=0,
        bid_id="b",
        price=1.0,
        quantities_kw=(1.0, 1.0),
        baseline_kw=baseline,
    )
    try:
        got: tuple[str, Any] = ("ok", check_declared_baseline("SRP", REQ1, b, earlier))
    except Rejected:
        got = ("refused", None)
    want = _slow(baseline, earlier)
    assert got[0] == want[0]
    if got[0] == "ok":  # the same values, signs of zero and types included
        assert [(type(x), repr(x)) for x in got[1]] == [(type(x), repr(x)) for x in want[1]]


def test_every_message_of_the_benchmark_is_persisted_and_answered() -> None:
    """The message benchmark's path: one messages row per message in and out, one bids row per bid,
    one ack per bid, each ack's row and payload as the general delivery writes them."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_messages
    finally:
        sys.path.pop(0)
    with tempfile.TemporaryDirectory() as tmp:
        n, _, _ = bench_messages.platform(300, 3, Path(tmp))
        messages = pq.read_table(Path(tmp) / "messages.parquet").to_pandas()
        bids = pq.read_table(Path(tmp) / "bids.parquet").to_pandas()
    per_seller = 300 // 3
    assert n == len(messages) == 2 + 3 + 2 * 3 * per_seller  # request + its ack, 3 bid requests, bids + acks
    assert len(bids) == 3 * per_seller and bids.bid_id.is_unique
    acks = messages[messages.kind == "ack"]
    assert len(acks) == 1 + 3 * per_seller and set(acks.verdict) == {"sent"}
    assert set(acks.ref_msg_id) == set(messages[messages.direction == "in"].msg_id)
    assert (acks.topic == "flech/SRP/m1/ack").all()
    assert sorted(messages.seq) == list(range(1, len(messages) + 1))
