"""Meter-data service: the platform's store of what the data provider published.

Settlement may use only what was published here. Readings are kept at the
data provider's resolution and averaged to a market's interval on request;
a missing reading (``None``) is a *gap* and is reported as such, never read
as zero. Waiting processes are woken by :attr:`updated`.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable

import simpy

from .constants import MINUTES_PER_DAY
from .messages import Message, MeterData, Rejected, RejectReason
from .persistor import Persistor

METER_PRODUCT_ID = "METER"
"""Meter data is routed by the dispatcher under this ID, like a product."""


def metering_point(owner: str, location: str) -> str:
    """A portfolio's metering point: one seller's households on one feeder."""
    return f"{owner}@{location}"


RETENTION_DAYS = 60
"""Readings older than this are dropped from memory (they stay in meter_data.parquet): long
enough for every baseline method and settlement wait, small enough for a year-long run."""


BLOCK = 96
"""Readings a block of :class:`_Series` holds (a day at 15 minutes)."""


class _Series:
    """One metering point's published readings at its resolution ``step``, in blocks of :data:`BLOCK`:
    a double (NaN for a gap: real readings are finite) and a published flag a reading. A dict of time ->
    float took about 110 bytes a reading (a key, a float and a slot): 4 MiB a simulated day for 420
    portfolios, 270 MiB over the :data:`RETENTION_DAYS` kept; this takes 9 bytes. Times not on the
    step's grid are never asked for (every reader asks for ``start - start % step`` onwards), so they
    are not kept."""

    __slots__ = ("blocks", "span", "step")

    def __init__(self, step: int) -> None:
        self.step = step
        self.span = step * BLOCK
        self.blocks: dict[int, tuple[array[float], bytearray]] = {}

    def put(self, start: int, values: Iterable[float | None]) -> None:
        step, span, blocks = self.step, self.span, self.blocks
        if start % step:
            return
        t = start
        for v in values:
            b, i = divmod(t, span)
            block = blocks.get(b)
            if block is None:
                block = blocks[b] = (array("d", bytes(8 * BLOCK)), bytearray(BLOCK))
            k = i // step
            block[0][k] = math.nan if v is None else v
            block[1][k] = 1
            t += step

    def has(self, t: int) -> bool:
        block = self.blocks.get(t // self.span)
        return block is not None and block[1][(t % self.span) // self.step] == 1

    def get(self, t: int) -> float | None:
        """The reading at ``t`` (on the grid); None for a gap or one not published."""
        block = self.blocks.get(t // self.span)
        if block is None:
            return None
        k = (t % self.span) // self.step
        if not block[1][k]:
            return None
        v = block[0][k]
        return None if v != v else v

    def forget_before(self, cutoff: int) -> None:
        for b in sorted(self.blocks):
            if (b + 1) * self.span <= cutoff:
                del self.blocks[b]
            elif b * self.span < cutoff:
                flags = self.blocks[b][1]
                for k in range((cutoff - b * self.span + self.step - 1) // self.step):
                    flags[k] = 0
            else:
                break


class MeterService:
    def __init__(
        self,
        env: simpy.Environment,
        persistor: Persistor,
        metering_points: frozenset[str],
        retention_days: int = RETENTION_DAYS,
    ) -> None:
        self.env = env
        self.persistor = persistor
        self.metering_points = metering_points
        self._readings: dict[str, _Series] = {}
        self._resolution: dict[str, int] = {}
        self.updated = env.event()
        self.retention_minutes = retention_days * MINUTES_PER_DAY
        self._pruned_day = 0

    def handle(self, msg: Message) -> str:
        if not isinstance(msg, MeterData):
            raise Rejected(RejectReason.MALFORMED, f"the meter service accepts meter_data, not {msg.kind!r}")
        if msg.metering_point not in self.metering_points:
            raise Rejected(RejectReason.OUT_OF_RANGE, f"unknown metering point {msg.metering_point!r}")
        if msg.interval_minutes <= 0 or not msg.consumption_kw:
            raise Rejected(RejectReason.OUT_OF_RANGE, "meter data needs interval_minutes > 0 and at least one value")
        prev = self._resolution.setdefault(msg.metering_point, msg.interval_minutes)
        if prev != msg.interval_minutes:
            raise Rejected(RejectReason.OUT_OF_RANGE, f"resolution {msg.interval_minutes} min differs from {prev} min")
        if any(v is not None and not math.isfinite(v) for v in msg.consumption_kw):
            raise Rejected(RejectReason.OUT_OF_RANGE, "meter values must be finite numbers or null (gap)")
        step = msg.interval_minutes
        series = self._readings.get(msg.metering_point)
        if series is None:
            series = self._readings[msg.metering_point] = _Series(step)
        n = len(msg.consumption_kw)
        times = range(msg.start, msg.start + n * step, step)
        series.put(msg.start, msg.consumption_kw)
        self.persistor.append_columns(
            "meter_data",
            {
                "msg_id": [msg.msg_id] * n,
                "metering_point": [msg.metering_point] * n,
                "interval_start": list(times),
                "interval_minutes": [step] * n,
                "consumption_kw": list(msg.consumption_kw),
                "published_at": [msg.sent_at] * n,
            },
        )
        self._forget_old()
        old, self.updated = self.updated, self.env.event()
        old.succeed()
        return msg.metering_point

    def _forget_old(self) -> None:
        """Once a simulated day, drop readings past the retention horizon."""
        day = int(self.env.now) // MINUTES_PER_DAY
        if day == self._pruned_day:
            return
        self._pruned_day = day
        cutoff = int(self.env.now) - self.retention_minutes
        for series in self._readings.values():
            series.forget_before(cutoff)

    def covers(self, point: str, start: int, end: int) -> bool:
        """True once every reading in [start, end) was published (a gap counts as published)."""
        series = self._readings.get(point)
        step = self._resolution.get(point)
        if series is None or step is None:
            return False
        return all(series.has(t) for t in range(start - start % step, end, step))

    def reader(self, point: str) -> Callable[[int, int], float | None]:
        """``read(start, minutes)``: :meth:`average_kw` of one point (what baselines read history with)."""
        return lambda start, minutes: self.average_kw(point, start, minutes)

    def average_kw(self, point: str, start: int, minutes: int) -> float | None:
        """Average power over [start, start+minutes); None if any reading in it is a gap."""
        series = self._readings.get(point)
        step = self._resolution.get(point)
        if step is None or series is None:
            return None
        values = [series.get(t) for t in range(start - start % step, start + minutes, step)]
        if not values or any(v is None for v in values):
            return None
        return sum(values) / len(values)  # type: ignore[arg-type]
