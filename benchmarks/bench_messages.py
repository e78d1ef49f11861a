"""Benchmark the message path: messages/s through endpoint -> dispatcher -> product -> persistor.

    python benchmarks/bench_messages.py [--bids 100000] [--sellers 10] [--repeat 5] [--breakdown] [--profile]

Platform path: a buyer opens one long-open SRP market; scripted sellers send
bids as fast as they can, each waiting for its acknowledgement (the way a
participant talks to the platform). Every bid is unmarshalled/authenticated
by the endpoint, routed by the dispatcher, checked and booked by the SRP
product (one ``bids`` row), acknowledged (an ack put into the seller's
inbox, a SimPy Store), and both messages are persisted (two ``messages``
rows, with their JSON). The Parquet flush at the end is included.
Messages/s counts both directions (bid in, ack out), as the endpoint does.

Beside it, in the same process: raw SimPy Store put/get between two
processes (one message = one put + one get), and a raw request/reply over
two stores (the same shape as bid -> ack, without the platform).

Target (issues 6 and 12): >= 1/3 of raw Store put/get in the same process, and >= 100,000 messages/s
where raw Store runs >= 300,000/s. Figures are medians over the (interleaved) repeats.
``--profile`` prints a cProfile of the platform path (top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import simpy

from flech_sim.messages import PLATFORM, Bid, Direction, MarketRequest
from flech_sim.persistor import Persistor
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import build_core, relaxed_gc

FAR = 10**5  # minutes (~70 days): the market stays open for the whole benchmark, within limits.MAX_LEAD_MINUTES


class Timer:
    """Wall and CPU time of a block (CPU time is what to compare on a machine shared with other work)."""

    def __enter__(self) -> Timer:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c


def raw_store(n: int) -> tuple[int, float, float]:
    env = simpy.Environment()
    store = simpy.Store(env)
    payload = object()

    def producer() -> Generator[Any, Any, None]:
        for _ in range(n):
            yield store.put(payload)

    def consumer() -> Generator[Any, Any, None]:
        for _ in range(n):
            yield store.get()

    env.process(producer())
    env.process(consumer())
    with Timer() as t:
        env.run()
    return n, t.wall, t.cpu


def raw_request_reply(n: int) -> tuple[int, float, float]:
    env = simpy.Environment()
    requests, replies = simpy.Store(env), simpy.Store(env)

    def client() -> Generator[Any, Any, None]:
        for i in range(n):
            yield requests.put(i)
            yield replies.get()

    def server() -> Generator[Any, Any, None]:
        while True:
            i = yield requests.get()
            yield replies.put(i)

    env.process(client())
    env.process(server())
    with Timer() as t:
        env.run()
    return 2 * n, t.wall, t.cpu


def platform(n_bids: int, n_sellers: int, out_dir: Path) -> tuple[int, float, float]:
    sellers = [f"agg-{i:03d}" for i in range(n_sellers)]
    scenario = scenario_from_dict(
        {
            "name": "bench-messages",
            "horizon_hours": 1,
            "feeders": {"feeder-1": {"limit_kw": 1e6}},
            "buyers": [{"id": "dso-1"}],
            "aggregators": [{"id": s, "households": {"feeder-1": 1}} for s in sellers],
        }
    )
    env = simpy.Environment()
    persistor = Persistor(out_dir, scenario.start)
    core = build_core(
        env,
        persistor,
        scenario,
        {s: frozenset({"feeder-1"}) for s in sellers},
        frozenset(f"{s}@feeder-1" for s in sellers),
    )
    buyer = core.endpoint.connect("dso-1", "dso")
    conns = [core.endpoint.connect(s, "aggregator") for s in sellers]
    per_seller = n_bids // n_sellers

    def seller(conn: Any) -> Generator[Any, Any, None]:
        request = yield conn.inbox.get()  # the bid request of the market
        sid = conn.participant_id
        for k in range(per_seller):
            conn.send(
                Bid(
                    msg_id=conn.next_id(),
                    sender=sid,
                    recipient=PLATFORM,
                    market_id=request.market_id,
                    product_id="SRP",
                    sent_at=int(env.now),
                    bid_id=f"{sid}-{k}",
                    price=1.0,
                    quantities_kw=(10.0,),
                    baseline_kw=(100.0,),
                )
            )
            ack = yield conn.inbox.get()
            assert ack.kind == "ack", ack

    buyer.send(
        MarketRequest(
            msg_id=buyer.next_id(),
            sender="dso-1",
            recipient=PLATFORM,
            market_id="m1",
            product_id="SRP",
            sent_at=0,
            location="feeder-1",
            direction=Direction.DOWN,
            gate_close=FAR,
            delivery_start=FAR,
            interval_minutes=60,
            need_kw=(100.0,),
            price_cap=3.0,
        )
    )
    for conn in conns:
        env.process(seller(conn))
    with Timer() as t, relaxed_gc():  # as flech_sim.simulation.run does
        env.run(until=1)
        persistor.close()
    counts = dict(core.endpoint.counts)
    assert counts["rejected"] == 0 and counts["in"] == per_seller * n_sellers + 1, counts
    return counts["in"] + counts["out"], t.wall, t.cpu


@dataclass
class Rates:
    """Rates of each repeat, by wall time and by CPU time; reported as medians (the machine is shared)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def add(self, n: int, wall: float, cpu: float) -> None:
        self.wall.append(n / wall)
        self.cpu.append(n / cpu)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def median_ratio(a: list[float], b: list[float]) -> float:
    """Median of the per-repeat ratios a/b: each pair was measured side by side, so load hits both alike."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def measure(bids: int, sellers: int, repeat: int, tmp: Path) -> dict[str, Rates]:
    """Raw Store, raw request/reply and the platform, interleaved so that load from elsewhere hits all alike."""
    rates = {"store": Rates(), "reqrep": Rates(), "platform": Rates()}
    for r in range(repeat):
        rates["store"].add(*raw_store(2 * bids))
        rates["reqrep"].add(*raw_request_reply(bids))
        rates["platform"].add(*platform(bids, sellers, tmp / f"run{r}"))
    return rates


class _NoJson:
    """Stands in for the endpoint's msgspec encoder: the ack's JSON body, stubbed out."""

    def encode(self, obj: object) -> bytes:
        return b"{}"


@contextmanager
def stubbed(what: str) -> Iterator[None]:
    """Replace one stage of the platform path by a no-op, to see what it costs (``--breakdown``)."""
    import flech_sim.endpoint as endpoint_mod
    from flech_sim.products.base import Product

    saved: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    if what in ("json", "all"):  # the JSON of what the platform sends (an incoming message's is its type check)
        patch(endpoint_mod, "_encode", lambda msg, topic=None: b"")
        patch(endpoint_mod, "_ENCODER", _NoJson())  # the ack's body (endpoint._ack)
    if what in ("persistor", "all"):
        patch(Persistor, "append", lambda self, table, row: None)
    if what in ("product", "all"):
        patch(Product, "_accept_bid", lambda self, bid: bid.bid_id)
    try:
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def breakdown(bids: int, sellers: int, repeat: int, tmp: Path) -> list[tuple[str, float]]:
    """CPU microseconds per bid round trip (bid in + ack out) with each stage stubbed out."""
    out = []
    for what, label in (
        ("none", "whole path"),
        ("json", "without JSON encoding of the ack (endpoint._encode, _ENCODER)"),
        ("persistor", "without persistor.append (no rows)"),
        ("product", "without the product (_accept_bid: checks + bids row)"),
        ("all", "without all three (endpoint, dispatcher, Store, message objects)"),
    ):
        r = Rates()
        with stubbed(what):
            for i in range(repeat):
                n, wall, cpu = platform(bids, sellers, tmp / f"bd-{what}-{i}")
                r.add(n, wall, cpu)
        out.append((label, 2e6 / r.median_cpu))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bids", type=int, default=100_000)
    ap.add_argument("--sellers", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile one platform run")
    ap.add_argument("--breakdown", action="store_true", help="time the path with stages stubbed out")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rates = measure(a.bids, a.sellers, a.repeat, tmp)
        stages = breakdown(a.bids, a.sellers, max(2, a.repeat // 2), tmp) if a.breakdown else []
        if a.profile:
            prof = cProfile.Profile()
            prof.enable()
            platform(a.bids, a.sellers, tmp / "profiled")
            prof.disable()
    st, rr, pf = rates["store"], rates["reqrep"], rates["platform"]
    print(
        f"message path: {a.bids:,} bids from {a.sellers} sellers = {2 * a.bids:,} messages; median of {a.repeat}, "
        f"interleaved; by wall time (by CPU time of this process); load average {os.getloadavg()[0]:.2f}"
    )
    print(f"  raw SimPy Store put/get            {st.median_wall:10,.0f} msg/s  ({st.median_cpu:,.0f})")
    print(f"  raw request/reply over 2 Stores    {rr.median_wall:10,.0f} msg/s  ({rr.median_cpu:,.0f})")
    print(
        f"  platform end to end                {pf.median_wall:10,.0f} msg/s  ({pf.median_cpu:,.0f})"
        f"   = {pf.median_wall / 2:,.0f} bids acknowledged/s"
    )
    print(
        f"  platform / raw Store               {median_ratio(pf.wall, st.wall):10.3f}        "
        f"({median_ratio(pf.cpu, st.cpu):.3f})   target >= 0.333"
    )
    print(f"  platform / 100,000 msg/s target    {pf.median_wall / 1e5:10.3f}        ({pf.median_cpu / 1e5:.3f})")
    print(f"  per message: platform {1e6 / pf.median_cpu:.2f} us, raw Store {1e6 / st.median_cpu:.2f} us (CPU)")
    if stages:
        print("breakdown, CPU us per bid round trip (bid in, ack out):")
        whole = stages[0][1]
        for label, us in stages:
            print(f"  {label:68s} {us:7.2f}" + ("" if us == whole else f"   (stage costs {whole - us:5.2f})"))
    if a.profile:
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(30)
        print(text.getvalue())


if __name__ == "__main__":
    main()
