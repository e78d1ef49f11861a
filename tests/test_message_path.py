"""The message path's shortcuts (issue 12) agree with the long way they replace.

Each shortcut is only taken where it gives the same answer as the checks or SimPy calls it skips:
these tests put the two side by side, over generated inputs where a rule is involved.
"""

from __future__ import annotations

import math

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from flech_sim.endpoint import Connection, Endpoint, _put
from flech_sim.messages import PLATFORM, Bid, Direction, MarketRequest, Rejected
from flech_sim.products.attrs import AttrSpec, check_attrs
from flech_sim.products.validation import bid_passes, check_bid

REQ = MarketRequest(
    msg_id="dso-1-000001",
    sender="dso-1",
    recipient=PLATFORM,
    market_id="m1",
    product_id="SRP",
    sent_at=0,
    location="f1",
    direction=Direction.DOWN,
    gate_close=60,
    delivery_start=60,
    interval_minutes=60,
    need_kw=(100.0, 50.0),
    price_cap=3.0,
)
SELLERS = ["agg-a", "agg-b"]
USED = {"used-bid"}

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.0, 3.0, 3.0000001, -1.0, 1e308]),
    st.integers(-3, 5),
    st.booleans(),
)


def bid(sender: str, bid_id: str, price: object, quantities: tuple[object, ...]) -> Bid:
    return Bid(
        msg_id="x-1",
        sender=sender,
        recipient=PLATFORM,
        market_id="m1",
        product_id="SRP",
        sent_at=0,
        bid_id=bid_id,
        price=price,  # type: ignore[arg-type]  # a Struct does not check types: the rules must not assume them
        quantities_kw=quantities,  # type: ignore[arg-type]
    )


def passes_check_bid(b: Bid) -> bool:
    try:
        check_bid(REQ, b, now=0, is_open=True, cancelled=False, sellers=SELLERS, bid_ids=USED)
    except Rejected:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(
    sender=st.sampled_from(["agg-a", "agg-z"]),
    bid_id=st.sampled_from(["b1", "", "used-bid"]),
    price=numbers,
    quantities=st.lists(numbers, min_size=0, max_size=3).map(tuple),
)
def test_the_one_pass_bid_test_never_lets_through_what_check_bid_refuses(sender, bid_id, price, quantities) -> None:  # type: ignore[no-untyped-def]
    b = bid(sender, bid_id, price, quantities)
    fast = bid_passes(REQ, b, sellers=SELLERS, bid_ids=USED)
    slow = passes_check_bid(b)
    if fast:
        assert slow
    # and it is taken for every ordinary bid: float price and quantities that check_bid accepts
    if slow and type(price) is float and all(type(q) is float for q in quantities):
        assert fast


def test_the_one_pass_bid_test_on_hand_picked_bids() -> None:
    ok = bid("agg-a", "b1", 1.5, (10.0, 0.0))
    assert bid_passes(REQ, ok, sellers=SELLERS, bid_ids=USED) and passes_check_bid(ok)
    for b in (
        bid("agg-z", "b1", 1.5, (10.0, 0.0)),  # not eligible
        bid("agg-a", "used-bid", 1.5, (10.0, 0.0)),  # duplicate
        bid("agg-a", "b1", 1.5, (10.0,)),  # one interval short
        bid("agg-a", "b1", 1.5, (0.0, 0.0)),  # nothing offered
        bid("agg-a", "b1", 1.5, (math.nan, 1.0)),
        bid("agg-a", "b1", 1.5, (True, 1.0)),
        bid("agg-a", "b1", 3.5, (10.0, 0.0)),  # above the cap
        bid("agg-a", "b1", math.inf, (10.0, 0.0)),
    ):
        assert not bid_passes(REQ, b, sellers=SELLERS, bid_ids=USED) and not passes_check_bid(b)
    # an int price is fine for check_bid; the one-pass test leaves it to check_bid
    b = bid("agg-a", "b1", 1, (10.0, 0.0))
    assert not bid_passes(REQ, b, sellers=SELLERS, bid_ids=USED) and passes_check_bid(b)


def test_attrs_without_fields_still_need_the_required_ones() -> None:
    spec = AttrSpec("availability_price", float, "DKK/kW", required=True)
    with pytest.raises(Rejected, match="SRP bids need availability_price"):
        check_attrs("SRP", (spec,), {}, n_intervals=1)
    assert check_attrs("SRP", (AttrSpec("x", float, "-"),), {}, n_intervals=1) == {}
    assert check_attrs("SRP", (), {}, n_intervals=1) == {}


def _schedule(use_put: bool) -> list[tuple[float, str]]:
    """Deliveries into two stores (one of them bounded) while getters wait, other events in between:
    the order in which everything happens, as (time, what)."""
    env = simpy.Environment()
    inbox, bounded = simpy.Store(env), simpy.Store(env, capacity=1)
    seen: list[tuple[float, str]] = []

    def deliver(store: simpy.Store, item: str) -> None:
        if use_put:
            store.put(item)
        else:
            _put(store, item)

    def getter(name: str, store: simpy.Store, n: int):  # type: ignore[no-untyped-def]
        for _ in range(n):
            item = yield store.get()
            seen.append((env.now, f"{name} got {item}"))

    def ticker():  # type: ignore[no-untyped-def]
        for k in range(6):
            seen.append((env.now, f"tick {k}"))
            yield env.timeout(0 if k % 2 else 1)

    def sender():  # type: ignore[no-untyped-def]
        for k in range(4):
            deliver(inbox, f"a{k}")
            deliver(bounded, f"b{k}")  # the second one waits for room: the ordinary put
            seen.append((env.now, f"sent {k}"))
            yield env.timeout(k % 2)

    env.process(getter("g1", inbox, 4))
    env.process(ticker())
    env.process(sender())
    env.process(getter("g2", bounded, 4))
    env.run()
    return seen


def test_the_inbox_put_keeps_every_event_in_its_place() -> None:
    assert _schedule(use_put=False) == _schedule(use_put=True)
    assert len(_schedule(use_put=False)) == 6 + 4 + 4 + 4  # everything happened


def test_message_ids_keep_their_format() -> None:
    env = simpy.Environment()
    ep = Endpoint(env, persistor=None)  # type: ignore[arg-type]  # IDs need no storage
    conn = Connection("agg-a", "aggregator", simpy.Store(env), ep)
    for n in (1, 41, 999_999, 1_000_000, 12_345_678):
        conn._counter, ep._platform_ids = n - 1, n - 1
        assert conn.next_id() == f"agg-a-{n:06d}"
        assert ep.new_msg_id() == f"{PLATFORM}-{n:07d}"
