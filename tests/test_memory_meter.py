"""The meter service's compact store answers exactly as the dict of readings it replaced."""

from __future__ import annotations

import random

import simpy

from flech_sim.messages import MeterData
from flech_sim.metering import BLOCK, MeterService, _Series


class _DictSeries:
    """The store before: time -> reading, pruned from the oldest publication on."""

    def __init__(self) -> None:
        self.d: dict[int, float | None] = {}

    def put(self, start: int, step: int, values: list[float | None]) -> None:
        self.d.update(zip(range(start, start + len(values) * step, step), values, strict=True))

    def forget_before(self, cutoff: int) -> None:
        old = []
        for t in self.d:
            if t >= cutoff:
                break
            old.append(t)
        for t in old:
            del self.d[t]

    def covers(self, step: int, start: int, end: int) -> bool:
        return all(t in self.d for t in range(start - start % step, end, step))

    def average_kw(self, step: int, start: int, minutes: int) -> float | None:
        values = [self.d.get(t) for t in range(start - start % step, start + minutes, step)]
        if not values or any(v is None for v in values):
            return None
        return sum(values) / len(values)  # type: ignore[arg-type]


def _average(s: _Series, start: int, minutes: int) -> float | None:
    values = [s.get(t) for t in range(start - start % s.step, start + minutes, s.step)]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def test_compact_series_equals_the_dict_on_random_publications() -> None:
    rng = random.Random(7)
    for step in (15, 60, 7):
        ref, got = _DictSeries(), _Series(step)
        day = 1440
        cutoff = 0
        for n in range(40):  # days published in order, some twice (corrections), with gaps
            d = n if rng.random() > 0.2 else max(0, n - 1)
            values = [None if rng.random() < 0.05 else rng.uniform(-5, 80) for _ in range(day // step)]
            start = d * day - (d * day) % step
            ref.put(start, step, values)
            got.put(start, values)
            if n % 5 == 4:
                cutoff = max(cutoff, (n - 12) * day + rng.randrange(0, day))
                ref.forget_before(cutoff)
                got.forget_before(cutoff)
            for _ in range(60):
                a = rng.randrange(max(0, cutoff - 3 * day), (n + 2) * day)
                m = rng.choice([step, 15, 60, 240, day])
                assert _average(got, a, m) == ref.average_kw(step, a, m)
                e = a + m
                assert all(got.has(t) for t in range(a - a % step, e, step)) == ref.covers(step, a, e)
        assert len(got.blocks) <= 12 * day // (BLOCK * step) + 3  # old blocks are dropped, not kept


def test_the_service_reads_gaps_and_unpublished_readings_as_before() -> None:
    env = simpy.Environment()

    class _NoRows:
        def append_columns(self, table: str, columns: object) -> None:
            pass

    meter = MeterService(env, _NoRows(), frozenset({"a@f1"}))  # type: ignore[arg-type]
    msg = MeterData(
        msg_id="m1",
        sender="dp",
        recipient="platform",
        sent_at=0,
        market_id="",
        product_id="METER",
        metering_point="a@f1",
        start=0,
        interval_minutes=15,
        consumption_kw=(1.0, 2.0, None, 4.0),
    )
    meter.handle(msg)
    assert meter.average_kw("a@f1", 0, 30) == 1.5
    assert meter.average_kw("a@f1", 0, 60) is None  # a gap
    assert meter.average_kw("a@f1", 60, 15) is None  # not published
    assert meter.covers("a@f1", 0, 60) and not meter.covers("a@f1", 0, 75)
    assert meter.average_kw("b@f1", 0, 15) is None and not meter.covers("b@f1", 0, 15)
