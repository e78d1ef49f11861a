"""Baseline methods: what a portfolio would have consumed without the event, from meter data only.

Pure functions. A method reads the platform's published meter data through a
``read(start, minutes) -> kW or None`` callable (the average over [start,
start + minutes) of one metering point; ``None`` if any reading in it is missing
or a gap), so the same code serves :class:`flech_sim.metering.MeterService` and
tests. Nothing a seller declares enters a platform baseline.

Methods (``BaselineSpec.method``; request param ``baseline``):

* ``x_of_y`` -- "high X of Y days": of the Y calendar days before the delivery
  day, those whose readings cover the window's time of day completely; the X of
  them with the highest mean consumption over that window (ties: the more recent
  day) are averaged interval by interval. Insufficient if fewer than X days are
  complete. Defaults X = 4, Y = 5.
* ``rolling_average`` -- the mean, interval by interval, of the same time of day
  over every complete day among the last ``days`` calendar days. Insufficient if
  fewer than ``min_days`` are complete. Defaults 10 and 5.
* ``meter_before_after`` -- one flat value for the whole window: the mean metered
  consumption over the ``before_minutes`` just before the window and the
  ``after_minutes`` just after it (minute-weighted; ``after_minutes`` 0 = before
  only). Insufficient if any of those readings is missing. Defaults 60 and 60.

When the method has insufficient history the declared fallback
(``BaselineSpec.fallback``; request param ``baseline_fallback``) is used, and
the result says so:

* ``meter_before_after`` (default) -- that method with the parameters above;
  if it is insufficient too, no baseline (as 'no_delivery');
* ``declared`` -- the seller's declared baseline from its bid, if it declared one
  (else no baseline);
* ``no_delivery`` -- no baseline: nothing is counted as delivered.

Baselines are known manipulation targets (EcoGrid 2.0): inflating consumption
on the days, or in the hour, before an event raises the baseline and so the
"delivered" reduction. The methods are implemented plainly so that a scenario
can show that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from .constants import MINUTES_PER_DAY

__all__ = [
    "FALLBACKS",
    "METHODS",
    "PARAM_NAMES",
    "Baseline",
    "BaselineSpec",
    "compute",
    "meter_before_after",
    "rolling_average",
    "x_of_y",
]

DAY_MINUTES = MINUTES_PER_DAY
METHODS = ("x_of_y", "rolling_average", "meter_before_after")
FALLBACKS = ("meter_before_after", "declared", "no_delivery")

Reader = Callable[[int, int], float | None]
"""read(start minute, length in minutes) -> average kW over it, or None if any reading is missing."""


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline method and its parameters. Every default of a baseline lives here."""

    method: str = "x_of_y"
    x: int = 4  # x_of_y: days averaged
    y: int = 5  # x_of_y: days looked back
    days: int = 10  # rolling_average: days looked back
    min_days: int = 5  # rolling_average: complete days needed
    before_minutes: int = 60  # meter_before_after
    after_minutes: int = 60  # meter_before_after
    fallback: str = "meter_before_after"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown baseline method {self.method!r}; known: {METHODS}")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"unknown baseline fallback {self.fallback!r}; known: {FALLBACKS}")
        if not 1 <= self.x <= self.y:
            raise ValueError(f"x_of_y needs 1 <= x <= y, got x={self.x}, y={self.y}")
        if not 1 <= self.min_days <= self.days:
            raise ValueError(f"rolling_average needs 1 <= min_days <= days, got {self.min_days}, {self.days}")
        if self.before_minutes < 1 or self.after_minutes < 0:
            raise ValueError("meter_before_after needs before_minutes >= 1 and after_minutes >= 0")

    @property
    def uses_before_after(self) -> bool:
        return self.method == "meter_before_after" or self.fallback == "meter_before_after"

    def meter_window(self, delivery_start: int, delivery_end: int) -> tuple[int, int]:
        """[start, end) of the readings around the window that settlement must wait for."""
        if not self.uses_before_after:
            return delivery_start, delivery_end
        return delivery_start - self.before_minutes, delivery_end + self.after_minutes


PARAM_NAMES: dict[str, str] = {
    "baseline": "method",
    "baseline_x": "x",
    "baseline_y": "y",
    "baseline_days": "days",
    "baseline_min_days": "min_days",
    "baseline_before_minutes": "before_minutes",
    "baseline_after_minutes": "after_minutes",
    "baseline_fallback": "fallback",
}
"""Request param -> BaselineSpec field."""
assert set(PARAM_NAMES.values()) == {f.name for f in fields(BaselineSpec)}


@dataclass(frozen=True)
class Baseline:
    method: str  # the method asked for
    used: str  # what produced the values: a method, 'declared' or 'none'
    values: tuple[float | None, ...]  # kW per interval (None = no baseline)
    fallback: bool
    detail: str


def _day_window(read: Reader, start: int, interval_minutes: int, n: int, days_back: int) -> list[float] | None:
    out = []
    for i in range(n):
        v = read(start + i * interval_minutes - days_back * DAY_MINUTES, interval_minutes)
        if v is None:
            return None
        out.append(v)
    return out


def x_of_y(
    read: Reader, start: int, interval_minutes: int, n: int, x: int, y: int
) -> tuple[tuple[float, ...] | None, str]:
    complete = [(d, w) for d in range(1, y + 1) if (w := _day_window(read, start, interval_minutes, n, d)) is not None]
    if len(complete) < x:
        return None, f"x_of_y: {len(complete)} complete day(s) of the last {y}; {x} needed"
    chosen = sorted(complete, key=lambda dw: (-sum(dw[1]), dw[0]))[:x]
    values = tuple(sum(w[i] for _, w in chosen) / x for i in range(n))
    return values, f"x_of_y: days -{', -'.join(str(d) for d, _ in sorted(chosen))} of {len(complete)} complete"


def rolling_average(
    read: Reader, start: int, interval_minutes: int, n: int, days: int, min_days: int
) -> tuple[tuple[float, ...] | None, str]:
    complete = [w for d in range(1, days + 1) if (w := _day_window(read, start, interval_minutes, n, d)) is not None]
    if len(complete) < min_days:
        return None, f"rolling_average: {len(complete)} complete day(s) of the last {days}; {min_days} needed"
    values = tuple(sum(w[i] for w in complete) / len(complete) for i in range(n))
    return values, f"rolling_average: {len(complete)} complete day(s) of the last {days}"


def meter_before_after(
    read: Reader, start: int, interval_minutes: int, n: int, before_minutes: int, after_minutes: int
) -> tuple[tuple[float, ...] | None, str]:
    before = read(start - before_minutes, before_minutes)
    end = start + n * interval_minutes
    after = read(end, after_minutes) if after_minutes > 0 else 0.0
    if before is None or after is None:
        return (
            None,
            f"meter_before_after: readings missing in the {before_minutes} min before or "
            f"{after_minutes} min after the window",
        )
    value = (before * before_minutes + after * after_minutes) / (before_minutes + after_minutes)
    return (value,) * n, f"meter_before_after: {before_minutes} min before, {after_minutes} min after"


def _run(
    method: str, spec: BaselineSpec, read: Reader, start: int, interval_minutes: int, n: int
) -> tuple[tuple[float, ...] | None, str]:
    if method == "x_of_y":
        return x_of_y(read, start, interval_minutes, n, spec.x, spec.y)
    if method == "rolling_average":
        return rolling_average(read, start, interval_minutes, n, spec.days, spec.min_days)
    return meter_before_after(read, start, interval_minutes, n, spec.before_minutes, spec.after_minutes)


def compute(
    read: Reader, spec: BaselineSpec, start: int, interval_minutes: int, n: int, declared: Sequence[float] = ()
) -> Baseline:
    """The baseline of one metering point for a window of n intervals from ``start``."""
    values, detail = _run(spec.method, spec, read, start, interval_minutes, n)
    if values is not None:
        return Baseline(spec.method, spec.method, values, False, detail)
    none = (None,) * n
    if spec.fallback == "meter_before_after" and spec.method != "meter_before_after":
        fb, fb_detail = _run("meter_before_after", spec, read, start, interval_minutes, n)
        if fb is not None:
            return Baseline(spec.method, "meter_before_after", fb, True, f"{detail}; fallback {fb_detail}")
        return Baseline(spec.method, "none", none, True, f"{detail}; fallback {fb_detail}; no baseline")
    if spec.fallback == "declared" and len(declared) == n:
        return Baseline(
            spec.method,
            "declared",
            tuple(float(v) for v in declared),
            True,
            f"{detail}; fallback: the seller's declared baseline",
        )
    return Baseline(spec.method, "none", none, True, f"{detail}; fallback {spec.fallback}: no baseline")
