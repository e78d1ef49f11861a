"""Bids in, result out: each product's public ``clear_market``, ties by arrival, and the events products publish.

Every expected number is worked by hand in the comment above it (60-min intervals: kW = kWh).
"""

from __future__ import annotations

import pytest

from flech_sim.clearing import SolverOptions
from flech_sim.events import MarketCleared, MarketEnded
from flech_sim.messages import Award, Bid, Direction, MarketRequest, replace
from flech_sim.products import bl, cl, crp, mfrr, srp
from tests.products_support import activation, all_products_scenario, bid, received, table


@pytest.fixture
def make_scenario():  # type: ignore[no-untyped-def]
    return all_products_scenario


def test_readme_example_clears_an_srp_book_without_a_simulation() -> None:
    # -- the README example, as is --------------------------------------------------------
    from flech_sim.messages import Bid, Direction, MarketRequest
    from flech_sim.products import srp

    env = dict(recipient="flech", product_id="SRP", market_id="m1", sent_at=0)
    request = MarketRequest(
        msg_id="r1",
        sender="dso-1",
        **env,
        location="feeder-1",
        direction=Direction.DOWN,
        gate_close=60,
        delivery_start=120,
        interval_minutes=60,
        need_kw=(100.0,),
        price_cap=3.0,
    )
    bids = [  # in arrival order: ties at equal price go to the earlier
        Bid(msg_id="b1", sender="agg-a", **env, bid_id="A1", price=0.5, quantities_kw=(60.0,), baseline_kw=(500.0,)),
        Bid(msg_id="b2", sender="agg-b", **env, bid_id="B1", price=0.8, quantities_kw=(60.0,), baseline_kw=(400.0,)),
    ]
    result = srp.clear_market(request, bids)  # optional: SolverOptions(method=..., time_limit_s=..., mip_gap=...)
    print(result.status, result.clearing_price, result.cost_dkk)  # optimal (0.8,) 62.0
    for a in result.awards:
        print(a.bid_id, a.accepted_kw, a.prices, a.payment_dkk)  # A1 (60.0,) (0.5,) 30.0 | B1 (40.0,) (0.8,) 32.0
    # -- what it must print ----------------------------------------------------------------
    # need 100: A1 60 @0.5 (30 DKK) + 40 of B1 @0.8 (32 DKK) = 62 DKK; marginal price 0.8.
    assert (result.status, result.clearing_price, result.cost_dkk) == ("optimal", (0.8,), pytest.approx(62.0))
    assert [(a.bid_id, a.accepted_kw, a.prices) for a in result.awards] == [
        ("A1", (60.0,), (0.5,)),
        ("B1", (40.0,), (0.8,)),
    ]


def _req(product: str, need: tuple[float, ...], minutes: int = 60, **kw) -> MarketRequest:  # type: ignore[no-untyped-def]
    return MarketRequest(
        msg_id="r",
        sender="dso-1",
        recipient="flech",
        market_id="m1",
        product_id=product,
        sent_at=0,
        location=kw.pop("location", "feeder-1"),
        direction=Direction.DOWN,
        gate_close=60,
        delivery_start=120,
        interval_minutes=minutes,
        need_kw=need,
        price_cap=3.0,
        **kw,
    )


def _bid(product: str, bid_id: str, seller: str, price: float, qty: tuple[float, ...], **kw) -> Bid:  # type: ignore[no-untyped-def]
    return Bid(
        msg_id=bid_id,
        sender=seller,
        recipient="flech",
        market_id="m1",
        product_id=product,
        sent_at=0,
        bid_id=bid_id,
        price=price,
        quantities_kw=qty,
        baseline_kw=kw.pop("baseline_kw", (500.0,) * len(qty)),
        **kw,
    )


def test_every_builtin_product_clears_a_book_from_messages() -> None:
    # SRP / BL: need 50, A 40 @1.0, B 40 @2.0 -> A 40, B 10; pay-as-bid 40 + 20 = 60.
    for mod, pid in ((srp, "SRP"), (bl, "BL")):
        r = mod.clear_market(_req(pid, (50.0,)), [_bid(pid, "A", "a", 1.0, (40.0,)), _bid(pid, "B", "b", 2.0, (40.0,))])
        assert {a.bid_id: a.accepted_kw for a in r.awards} == {"A": (40.0,), "B": (10.0,)}, pid
        assert r.cost_dkk == pytest.approx(60.0)
    # CL under VCG: need 50; A 40 @1.0 (E 100), B 40 @2.0 (E 100). Without A: B 40 + 10 unmet at 3 = 110;
    # others' cost with A = B's 10 x 2 = 20 -> A paid 90 (2.25/kWh). Without B: A 40 + 10 x 3 = 70; others with
    # B = A's 40 -> B paid 30 (3.0/kWh, the cap). cap_kw: A 100 - 40 = 60, B 90.
    r = cl.clear_market(
        _req("CL", (50.0,), params={"pricing": "vcg"}),
        [
            _bid("CL", "A", "a", 1.0, (40.0,), baseline_kw=(100.0,)),
            _bid("CL", "B", "b", 2.0, (40.0,), baseline_kw=(100.0,)),
        ],
    )
    got = r.by_bid()
    assert got["A"].payment_dkk == pytest.approx(90.0) and got["B"].payment_dkk == pytest.approx(30.0)
    assert got["A"].attrs["cap_kw"] == (60.0,) and got["B"].attrs["cap_kw"] == (90.0,)
    # CRP: need 100 over 2 h, share 0.2: e(A) = 0.5/2 + 0.2 x 1.0 = 0.45, e(B) = 0.3/2 + 0.4 = 0.55 -> A 60, B 40;
    # availability A 0.5 x 60 = 30, B 0.3 x 40 = 12.
    r = crp.clear_market(
        _req("CRP", (100.0, 100.0)),
        [
            _bid("CRP", "A", "a", 1.0, (60.0, 60.0), attrs={"availability_price": 0.5}),
            _bid("CRP", "B", "b", 2.0, (60.0, 60.0), attrs={"availability_price": 0.3}),
        ],
    )
    got = r.by_bid()
    assert got["A"].payment_dkk == pytest.approx(30.0) and got["B"].payment_dkk == pytest.approx(12.0)
    assert got["B"].attrs["availability_dkk"] == pytest.approx((6.0, 6.0)) and got["A"].prices == (1.0, 1.0)
    # mFRR: need 3000 per 15 min; 1000 @0.3, 1000 @0.45, 1000 of 1500 @0.6: uniform 0.6, 3000 x 0.25 x 0.6 = 450.
    r = mfrr.clear_market(
        _req("mFRR", (3000.0,), 15, location="*"),
        [
            _bid("mFRR", "A", "a", 0.30, (1000.0,)),
            _bid("mFRR", "B", "b", 0.45, (1000.0,)),
            _bid("mFRR", "C", "c", 0.60, (1500.0,)),
        ],
        SolverOptions(),
    )
    assert r.clearing_price == (0.6,) and r.cost_dkk == pytest.approx(450.0)
    assert all(a.prices == (0.6,) for a in r.awards)


def test_a_backdated_bid_does_not_win_a_tie(harness) -> None:  # type: ignore[no-untyped-def]
    """need 50; A (minute 5) and B (minute 10, claiming minute 0) both 40 @1.0: A arrived first, A 40, B 10."""
    h = harness
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(50.0,))))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 1.0, (40.0,), product="SRP")))
    h.at(10, lambda: h.send("agg-b", replace(bid(h, "agg-b", "B", 1.0, (40.0,), product="SRP"), sent_at=0)))
    h.run(61)
    got = {m.bid_id: m for p in ("agg-a", "agg-b") for m in received(h, p, Award)}
    assert got["A"].accepted_kw == (40.0,) and got["B"].accepted_kw == (10.0,)


def test_activation_draws_the_earlier_arrival_at_equal_price(harness) -> None:  # type: ignore[no-untyped-def]
    """CRP, need 100, A (minute 5) and B (minute 8, claiming minute 0) both 50 kW @ activation 1.0, availability 0.5:
    both reserved; an activation of 30 kW is drawn from A (earlier arrival), never from the backdated B."""
    h = harness
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(100.0,), product="CRP")))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 1.0, (50.0,), product="CRP", availability_price=0.5)))
    h.at(
        8,
        lambda: h.send(
            "agg-b",
            replace(bid(h, "agg-b", "B", 1.0, (50.0,), product="CRP", availability_price=0.5), sent_at=0),
        ),
    )
    h.at(70, lambda: h.send("dso-1", activation(h, "dso-1", "act", 120, (30.0,))))
    h.run(80)
    rows = table(h, "activations")
    assert [(r["bid_id"], r["quantity_kw"]) for r in rows] == [("A", 30.0)]


def test_products_publish_cleared_and_ended_events(harness) -> None:  # type: ignore[no-untyped-def]
    h = harness
    seen: list[object] = []
    bus = h.core.products["SRP"].s.events
    bus.subscribe(MarketCleared, seen.append)
    bus.subscribe(MarketEnded, seen.append)
    h.at(0, lambda: h.send("dso-1", h.request("m1", need=(50.0, 30.0), interval_minutes=60)))
    h.at(0, lambda: h.send("dso-1", h.request("m2")))
    h.at(5, lambda: h.send("agg-a", bid(h, "agg-a", "A", 1.0, (40.0, 40.0), product="SRP")))
    h.at(10, lambda: h.send("dso-1", _cancel(h, "m2")))
    h.run(61)
    cleared = [e for e in seen if isinstance(e, MarketCleared)]
    assert [(e.market_id, e.awarded_kw, e.location) for e in cleared] == [("m1", (40.0, 30.0), "feeder-1")]
    assert MarketEnded("SRP", "m2", "cancelled") in seen


def _cancel(h, market_id):  # type: ignore[no-untyped-def]
    from flech_sim.messages import MarketCancellation

    return MarketCancellation(**h.people["dso-1"].env_fields(market_id, "SRP", int(h.env.now)), reason="test")


def test_a_buyer_cannot_take_another_buyers_market_id(harness) -> None:  # type: ignore[no-untyped-def]
    """dso-2 asks first for 'dso-1-d001' (in dso-1's namespace): refused, so dso-1's own request still opens it;
    'dso-1x-d001' is not dso-1's (a namespace ends at '-'), and un-namespaced IDs stay first come."""
    from flech_sim.messages import Rejection
    from tests.conftest import Participant

    h = harness
    dso2 = Participant(h.core.endpoint.connect("dso-2", "dso"))
    h.people["dso-2"] = dso2
    h.env.process(_drain(h, dso2))
    h.at(0, lambda: h.send("dso-2", h.request("dso-1-d001", buyer="dso-2")))
    h.at(1, lambda: h.send("dso-1", h.request("dso-1-d001")))
    h.at(2, lambda: h.send("dso-2", h.request("dso-2-d001", buyer="dso-2")))
    h.run(3)
    (rej,) = [m for m in dso2.inbox if isinstance(m, Rejection)]
    assert rej.reason == "unauthorised" and "dso-1's namespace" in rej.detail
    assert not [m for m in h.people["dso-1"].inbox if isinstance(m, Rejection)]
    assert set(h.core.products["SRP"].markets) == {"dso-1-d001", "dso-2-d001"}
    assert h.core.products["SRP"].markets["dso-1-d001"].request.sender == "dso-1"
    from flech_sim.products.validation import namespace_owner

    assert namespace_owner("dso-1x-d001", {"dso-1"}.__contains__) is None
    assert namespace_owner("dso-ref-SRP-0", {"dso", "dso-ref"}.__contains__) == "dso-ref"  # the longest owns it
    assert namespace_owner("m1", {"dso-1"}.__contains__) is None


def _drain(h, part):  # type: ignore[no-untyped-def]
    while True:
        msg = yield part.conn.inbox.get()
        part.inbox.append(msg)
