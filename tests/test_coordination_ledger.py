"""The screen's kept ledger of commitments against a book built afresh from the committed prints.

The ledger is updated as awards are committed and expire, instead of summing every committed print
again at every screen; its contents must be exactly (bit for bit) what a fresh :class:`_Book` holds,
and the screen's outcomes exactly what they were with a fresh book.
"""

from __future__ import annotations

import numpy as np
import pytest

from flech_sim import coordination as co
from flech_sim.coordination import Footprint, _Book, _Ledger
from flech_sim.events import MarketCleared, MarketEnded
from flech_sim.messages import Direction

from .test_coordination import ROLES, SELLERS, FakeGrid, Log, Screen, _bid, _req
from .test_grid_profile_kernel import FEEDERS, random_print

DT = 15


def shifted(fp: Footprint, by: int) -> Footprint:
    return Footprint(fp.first_step + by, fp.kw, fp.rebound)


def assert_same_book(got: _Book, ref: _Book) -> None:
    """Same deliveries, same sorted rebound queues, same first step (the padding past each queue may differ)."""
    assert (got.origin, got.hi, got.feeders, got.first) == (ref.origin, ref.hi, ref.feeders, ref.first)
    np.testing.assert_array_equal(got.during, ref.during)
    assert not np.any(np.signbit(got.during) & (got.during == 0))  # no -0.0 the fresh sums would not have
    np.testing.assert_array_equal(got.counts, ref.counts)
    for r in range(len(ref.feeders)):
        c = int(ref.counts[r])
        for q in ("ends", "kwh", "shed"):
            np.testing.assert_array_equal(getattr(got, q)[r, :c], getattr(ref, q)[r, :c])


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_the_kept_ledger_equals_a_book_built_afresh_after_commits_expiries_and_screens(engine, monkeypatch) -> None:
    monkeypatch.setenv("FLECH_KERNELS", engine)
    rng = np.random.default_rng(21)
    ledger, kept = _Ledger(FEEDERS, DT), []
    now, expired, screens, overlapped = 1, 0, 0, 0
    for _ in range(1500):
        u = rng.random()
        if u < 0.45:  # a commitment, mostly ahead, now and then one already under way
            fp = shifted(random_print(rng), now - 20 + int(rng.integers(-5, 10)))
            ledger.add(fp)
            kept.append(fp)
        elif u < 0.65:  # time passes; what ended long enough ago is forgotten
            now += int(rng.integers(0, 4))
            keep_steps = int(rng.integers(0, 12))

            def keep(c: Footprint, now: int = now, k: int = keep_steps) -> bool:
                return c.end_step + k > now

            gone = [p for p in kept if not keep(p)]
            expired += len(gone)
            # an expired print's steps that a print left also delivers on are summed again, not subtracted
            overlapped += any(p.first_step < g.end_step and g.first_step < p.end_step for g in gone for p in kept)
            kept = [p for p in kept if keep(p)]
            assert ledger.expire(keep) == kept
        else:  # a screen: the book it starts from, then its own additions, which the ledger must not see
            screens += 1
            bids = [shifted(random_print(rng), now - 20) for _ in range(int(rng.integers(0, 3)))]
            origin = min([now - 1, *(p.first_step for p in kept + bids)])
            hi = now + int(rng.integers(1, 60))
            got, ref = ledger.book(origin, hi, engine), _Book(kept, FEEDERS, origin, hi, DT, engine=engine)
            assert_same_book(got, ref)
            for fp in bids:
                np.testing.assert_array_equal(got.matrix(now - 1), ref.matrix(now - 1))
                np.testing.assert_array_equal(got.matrix(now, fp), ref.matrix(now, fp))
                got.add(fp)
                ref.add(fp)
            assert_same_book(ledger.book(origin, hi, engine), _Book(kept, FEEDERS, origin, hi, DT, engine=engine))
    assert screens > 300 and expired > 200 and overlapped > 20


class Afresh(Screen):
    """The screen as it was: its book summed from every committed print at every screen."""

    def _kept(self) -> _Ledger:
        ledger = super()._kept()

        def book(origin: int, hi: int, engine: co.Engine | None = None) -> _Book:
            return _Book(ledger.prints, ledger.feeders, origin, hi, ledger.dt, engine=engine)

        ledger.book = book  # type: ignore[method-assign]
        return ledger


def random_screen(rng: np.random.Generator, now: int, market_id: str) -> tuple:
    """A TSO market from a few steps ahead and its bids: declared footprints, undeclared ones, blocks."""
    direction = Direction.DOWN if rng.random() < 0.6 else Direction.UP
    n = int(rng.integers(1, 5))
    req = _req(direction, (now + int(rng.integers(1, 6))) * DT, market_id, n)
    bids = []
    for i in range(int(rng.integers(1, 6))):
        seller = "agg-a" if rng.random() < 0.7 else "agg-b"
        qty = tuple((rng.choice([0.0, 1.0], p=[0.2, 0.8], size=n) * rng.uniform(50, 900)).tolist())
        attrs: dict = {}
        if seller == "agg-a" and rng.random() < 0.7:
            share = float(rng.uniform(0, 1))
            attrs = {"kw@f1": tuple(q * share for q in qty), "kw@f2": tuple(q - q * share for q in qty)}
            if direction is Direction.DOWN and rng.random() < 0.8:
                attrs["rebound_kwh@f1"] = float(rng.uniform(0, 300))
        bids.append(_bid(seller, f"{market_id}-b{i}", qty, attrs, price=float(rng.uniform(0, 1)),
                         market_id=market_id, block=bool(rng.random() < 0.15)))  # fmt: skip
    return req, bids


def test_screens_with_the_kept_ledger_equal_screens_with_a_fresh_book(monkeypatch) -> None:
    monkeypatch.setattr(co, "KEEP_STEPS", 6)  # commitments expire within the run
    rng = np.random.default_rng(4)
    grids = [FakeGrid(load={"f1": 2500.0, "f2": 1500.0}, limits={"f1": 3600.0, "f2": 2400.0}) for _ in range(2)]
    logs = [Log(), Log()]
    kept, fresh = Screen(grids[0], logs[0], 0.05), Afresh(grids[1], logs[1], 0.05)
    assert ROLES["tso-1"] == "tso" and "f1" in SELLERS["agg-a"]
    trimmed = cleared = 0
    for now in range(1, 160):
        measured = {"f1": float(rng.uniform(2000, 3200)), "f2": 1500.0}
        for g in grids:
            g.now_step, g.measured = now, measured
        req, bids = random_screen(rng, now, f"m{now}")
        out = [c.screen(req, bids) for c in (kept, fresh)]
        assert out[0] == out[1]
        trimmed += sum(b.quantities_kw != o.quantities_kw for o in out[0] for b in bids if b.bid_id == o.bid_id)
        events: list = []
        if out[0] and rng.random() < 0.8:  # cleared: part of each kept bid accepted
            taken = tuple((b.bid_id, tuple(q * float(rng.choice([1.0, 0.5, 0.0])) for q in b.quantities_kw))
                          for b in out[0])  # fmt: skip
            awarded = tuple(float(x) for x in np.sum([t[1] for t in taken], axis=0))
            events.append(MarketCleared("mFRR", req.market_id, "tso-1", "*", req.direction, req.delivery_start,
                                        15, awarded, taken))  # fmt: skip
            cleared += 1
        else:
            events.append(MarketEnded("mFRR", req.market_id, "cancelled"))
        if rng.random() < 0.2:  # a DSO purchase on f1: its rebound (down) or its load (up) is committed
            d = Direction.DOWN if rng.random() < 0.7 else Direction.UP
            start = (now + int(rng.integers(-2, 8))) * DT
            kw = (float(rng.uniform(50, 400)),)
            events.append(MarketCleared("SRP", f"dso-{now}", "dso-1", "f1", d, start, 60, kw))
        for ev in events:
            kept.bus.publish(ev)
            fresh.bus.publish(ev)
        assert [(p.first_step, p.end_step) for p in kept._committed] == [
            (p.first_step, p.end_step) for p in fresh._committed
        ]
    assert logs[0].rows == logs[1].rows
    assert trimmed > 30 and cleared > 50 and len(logs[0].rows) > 30
