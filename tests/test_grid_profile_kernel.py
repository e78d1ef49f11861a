"""The screen's compiled rebound placement and its incremental profiles against the pure-Python reference.

Both compute the same IEEE operations in the same order, so they are compared for exact equality
(``assert_array_equal``) on many random cases: the screen's outcomes must not move by a bit.
"""

from __future__ import annotations

import bisect

import numpy as np
import pytest

from flech_sim import coordination as co
from flech_sim.coordination import Footprint, _Book, _placed, footprint, grid_profiles
from flech_sim.messages import Direction

FEEDERS = ("f0", "f1", "f2", "f3")
pytestmark = pytest.mark.skipif(not co.HAVE_NUMBA, reason="numba not installed")


def random_queue(rng: np.random.Generator, base: int, n: int) -> list[tuple[int, float, float]]:
    """Rebounds due before, inside and after the span, some at the same step (their order then matters)."""
    ends = rng.integers(base - 5, base + n + 5, size=int(rng.integers(0, 8))).tolist()
    ends += ends[: int(rng.integers(0, 3))]
    return [(int(e), float(rng.choice([0.0, rng.uniform(0, 400)])), float(rng.uniform(0, 900))) for e in ends]


def random_during(rng: np.random.Generator, n: int) -> np.ndarray:
    """Runs of shedding (negative), of added load and of nothing."""
    d = np.zeros(n)
    for _ in range(int(rng.integers(0, 5))):
        a = int(rng.integers(0, n))
        d[a : a + int(rng.integers(1, 8))] += rng.choice([-1.0, 1.0]) * rng.uniform(0, 1200)
    return d


def arrays(queue):
    return (
        np.array([q[0] for q in queue], dtype=np.int64),
        np.array([q[1] for q in queue], dtype=float),
        np.array([q[2] for q in queue], dtype=float),
    )


def test_compiled_placement_equals_the_python_reference_bit_for_bit() -> None:
    rng = np.random.default_rng(12)
    drawn = 0
    for _ in range(3000):
        n, base = int(rng.integers(1, 120)), int(rng.integers(-3, 50))
        dt, peak = int(rng.choice([5, 15, 60])), float(rng.choice([1.0, 2.0, 3.5]))
        during, queue = random_during(rng, n), sorted(random_queue(rng, base, n))
        ref = _placed(during, list(queue), base, dt, peak)
        drawn += int(np.any(ref != during))
        for place in (co._place_into, co._place_into.py_func):  # compiled, and the loop it compiles
            out = during.copy()
            place(during, out, *arrays(queue), len(queue), base, *co._consts(dt, peak))
            np.testing.assert_array_equal(out, ref)
        # several feeders in one call, an extra rebound inserted into some queues where bisect.insort puts it
        x = random_queue(rng, base, n)[:1] or [(base + 2, 50.0, 100.0)]
        has = rng.random(3) < 0.6
        rows = [sorted(random_queue(rng, base, n)) for _ in range(3)]
        cap = max(len(q) for q in rows) + 1
        ends, kwh, shed = np.zeros((3, cap), dtype=np.int64), np.zeros((3, cap)), np.zeros((3, cap))
        for r, q in enumerate(rows):
            ends[r, : len(q)], kwh[r, : len(q)], shed[r, : len(q)] = arrays(q) if q else ([], [], [])
        d = np.stack([random_during(rng, n) for _ in range(2)])
        counts = np.array([len(q) for q in rows], dtype=np.int64)
        got = co._placed_rows(
            d, ends, kwh, shed, counts, np.array([2, 0]), x[0][0], np.full(3, x[0][1]), np.full(3, x[0][2]), has,
            base, *co._consts(dt, peak),
        )  # fmt: skip
        for i, r in enumerate((2, 0)):
            q = list(rows[r])
            if has[r]:
                bisect.insort(q, x[0])
            np.testing.assert_array_equal(got[i], _placed(d[i], q, base, dt, peak))
    assert drawn > 1000  # most cases place a rebound: the comparison is not between untouched copies


def test_inserting_rebounds_keeps_each_queue_in_tuple_order() -> None:
    rng = np.random.default_rng(3)
    ends, kwh, shed = np.zeros((2, 40), dtype=np.int64), np.zeros((2, 40)), np.zeros((2, 40))
    counts = np.zeros(2, dtype=np.int64)
    ref: list[list[tuple[int, float, float]]] = [[], []]
    for _ in range(30):
        end, e, p = int(rng.integers(0, 6)), float(rng.choice([1.0, 2.0])), float(rng.choice([3.0, 4.0]))
        co._insert_rows(ends, kwh, shed, counts, np.array([0, 1]), end, np.array([e, 2.0]), np.array([p, p]))
        bisect.insort(ref[0], (end, e, p))
        bisect.insort(ref[1], (end, 2.0, p))
    for r in range(2):
        got = list(zip(ends[r, :30].tolist(), kwh[r, :30].tolist(), shed[r, :30].tolist(), strict=True))
        assert counts[r] == 30 and got == ref[r]


def random_print(rng: np.random.Generator) -> Footprint:
    """A bid's or a DSO purchase's footprint on a few feeders (one the grid does not know), maybe scaled."""
    direction = Direction.DOWN if rng.random() < 0.7 else Direction.UP
    m = int(rng.choice([15, 60]))
    start = int(rng.integers(0, 40)) * 15 + int(rng.choice([0, 0, 0, 5]))
    feeders = rng.choice([*FEEDERS, "elsewhere"], size=int(rng.integers(1, 4)), replace=False).tolist()
    per = {f: rng.choice([0.0, 1.0], p=[0.2, 0.8], size=int(rng.integers(1, 5))) * rng.uniform(0, 900) for f in feeders}
    rebound = {f: float(rng.uniform(0, 300)) for f in feeders if rng.random() < 0.8}
    fp = footprint(direction, start, m, per, rebound, 15)
    if rng.random() < 0.15 and fp.kw:  # a DSO's down purchase: only its rebound, the shed left out
        f = next(iter(fp.kw))
        return Footprint(fp.first_step, {f: np.zeros(len(fp.kw[f]))}, {f: (float(rng.uniform(1, 200)), 500.0)})
    return fp.scaled(float(rng.choice([1.0, 1e-6, rng.uniform(0, 1)])))


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_incremental_profiles_equal_grid_profiles_summed_from_scratch(engine, monkeypatch) -> None:
    monkeypatch.setenv("FLECH_KERNELS", engine)
    rng = np.random.default_rng(7)
    skipped = 0
    for _ in range(150):
        now, hi = int(rng.integers(2, 30)), int(rng.integers(40, 90))
        committed = [random_print(rng) for _ in range(int(rng.integers(0, 6)))]
        bids = [random_print(rng) for _ in range(int(rng.integers(1, 6)))]
        origin = min([now - 1, *(p.first_step for p in committed + bids)])
        book = _Book(committed, FEEDERS, origin, hi, 15, engine=engine)
        kept = list(committed)
        for fp in bids:
            without = book.profiles(now - 1)
            ref = grid_profiles(kept, FEEDERS, now - 1, hi, 15)
            for f in FEEDERS:
                np.testing.assert_array_equal(without[f], ref[f])
            with_one = book.profiles(now, fp)
            ref_one = grid_profiles([*kept, fp], FEEDERS, now, hi, 15)
            for f in FEEDERS:
                np.testing.assert_array_equal(with_one[f], ref_one[f])
            # what the screen relies on to skip a feeder: untouched, it keeps its profile exactly
            if book.base(fp, now) == book.base(None, now - 1):
                rows = book.touched(fp)
                assert list(book.profiles(now, fp, rows)) == [FEEDERS[r] for r in rows]
                for r, f in enumerate(FEEDERS):
                    if r not in rows:
                        np.testing.assert_array_equal(with_one[f], without[f][1:])
                        skipped += 1
            if rng.random() < 0.7:
                book.add(fp)
                kept.append(fp)
    assert skipped > 50


def during_by_step(sign: float, kw: list[float], start: int, m: int, dt: int) -> np.ndarray:
    """The footprint's kW per step as it was first written: interval by interval, step by step."""
    first = start // dt
    during = np.zeros(-(-(start + len(kw) * m) // dt) - first)
    for i, q in enumerate(kw):
        t0, t1 = start + i * m, start + (i + 1) * m
        for s in range(t0 // dt, -(-t1 // dt)):
            during[s - first] += sign * q * (min(t1, (s + 1) * dt) - max(t0, s * dt)) / dt
    return during


def test_footprint_steps_equal_the_step_by_step_sum_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    aligned = 0
    for _ in range(2000):
        dt = int(rng.choice([5, 15, 60]))
        m = int(rng.choice([5, 15, 30, 60]))
        start = int(rng.integers(0, 200)) * int(rng.choice([1, 5, 15]))
        kw = (rng.choice([0.0, 1.0], p=[0.3, 0.7], size=int(rng.integers(1, 25))) * rng.uniform(0, 2000, 1)).tolist()
        sign = float(rng.choice([-1.0, 1.0]))
        ref = during_by_step(sign, kw, start, m, dt)
        got = co._during(sign, np.array(kw), start, m, dt)
        np.testing.assert_array_equal(got, ref)
        assert not np.any(np.signbit(got) & (got == 0))  # no -0.0 (a sum from +0.0 has none)
        aligned += start % dt == 0 and m % dt == 0
    assert aligned > 300


def footprint_by_step(direction, start, m, per, rebound_kwh, dt):
    """A footprint as it was first built: feeder by feeder, interval by interval, step by step."""
    sign = 1.0 if direction is Direction.UP else -1.0
    kw, rebound = {}, {}
    for f, given in per.items():
        q = np.asarray(given, dtype=float)
        if not np.any(q > 0):
            continue
        kw[f] = during_by_step(sign, q[: int(np.flatnonzero(q > 0)[-1]) + 1].tolist(), start, m, dt)
        if sign < 0 and rebound_kwh.get(f, 0.0) > 0:
            rebound[f] = (float(rebound_kwh[f]), float(q.max()))
    return kw, rebound


def test_footprints_of_many_feeders_equal_the_step_by_step_build_bit_for_bit() -> None:
    rng = np.random.default_rng(9)
    for _ in range(1000):
        dt = int(rng.choice([5, 15]))
        m = int(rng.choice([5, 15, 60]))
        start = int(rng.integers(0, 100)) * int(rng.choice([5, 15]))
        n = int(rng.integers(1, 6))
        ragged = rng.random() < 0.1
        per = {
            f"f{i}": tuple(
                (rng.choice([0.0, 1.0], p=[0.4, 0.6], size=n + int(ragged) * i) * rng.uniform(0, 900, 1)).tolist()
            )
            for i in range(int(rng.integers(1, 8)))
        }
        rebound = {f: float(rng.choice([0.0, rng.uniform(0, 200)])) for f in per}
        direction = Direction.DOWN if rng.random() < 0.7 else Direction.UP
        fp = footprint(direction, start, m, per, rebound, dt)
        kw, reb = footprint_by_step(direction, start, m, per, rebound, dt)
        assert list(fp.kw) == list(kw) and fp.rebound == reb
        for f in kw:
            np.testing.assert_array_equal(fp.kw[f], kw[f])
            assert not np.any(np.signbit(fp.kw[f]) & (fp.kw[f] == 0))
