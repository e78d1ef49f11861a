"""Coordination between TSO and DSO markets that draw on the same aggregators and the same grid.

A TSO market moves load on the feeders its sellers' households sit on: "consume more" adds load
while it is delivered, "consume less" adds it afterwards, when the households draw back what they
shed (the rebound). The scenario's rule decides what the platform does about it:

* ``grid_headroom`` (default): every TSO bid is screened against the feeders' *forecast headroom*
  in every hour it touches: the DSO's load forecast (its :class:`~flech_sim.world.GridView`) plus
  what is already committed (earlier TSO awards and their rebound, the rebound of DSO purchases)
  plus the bid itself -- its kW per feeder while delivered and, for a down bid, its declared
  rebound after -- must stay below ``(1 - margin) x limit`` on every model step where the bid adds
  load. A bid that would not is trimmed (scaled down until it fits) or, if nothing fits or it is a
  block, refused. The margin covers forecast error. Without a grid view (a core built without a
  world, as in unit tests) it falls back to ``dso_prevails``;
* ``dso_prevails``: only the intervals inside a DSO's cleared market windows are protected: the
  part of a TSO bid opposing the DSO's direction there is taken out of the book (a block bid
  entirely) and the refusal is recorded;
* ``tso_prevails``: the bid clears as offered; the conflict with a DSO window is recorded;
* ``none``: no screening at all.

Every conflict is a row of the ``conflicts`` table (action ``refused``, ``trimmed`` or ``allowed``;
``quantity_kw`` is the kW taken out, or the kW in conflict when allowed), whatever the rule.

Where a bid's flexibility sits. A bid for a feeder (``Bid.location``) sits there. A pooled bid
(system-wide market, ``location`` '') declares its *footprint* in product fields that a pooled
product accepts (:mod:`flech_sim.footprint`): ``kw@<feeder>`` -- kW per interval from that feeder's
households (their sum is the bid's quantity) -- and ``rebound_kwh@<feeder>`` -- the energy those
households draw back after a full down delivery. A pooled bid without a footprint is assumed to
sit, in full, on every feeder its seller has households on (the worst case), and an undeclared
rebound is all the energy shed. Where a rebound lands is the platform's model (:func:`grid_profile`):
held back while the feeder is still being shed (a run of activations draws back at its end), then
three quarters at up to twice the kW shed and a quarter in a slow tail that can reach a later peak.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import numpy as np

from .events import EventBus, MarketCleared, MarketEnded
from .footprint import FEEDER_KW, REBOUND_KWH
from .households.kernels import HAVE_NUMBA, Engine, default_engine
from .messages import Bid, Direction, MarketRequest
from .schema import row

if TYPE_CHECKING:
    from .world import GridView

RULES = ("grid_headroom", "dso_prevails", "tso_prevails", "none")
DEFAULT_RULE = "grid_headroom"
DEFAULT_MARGIN = 0.05
"""Share of a feeder's limit kept free of TSO load under ``grid_headroom``: the forecast's error."""
DSO_REBOUND_RATIO = 1.0
"""Energy a DSO's down purchase is assumed to draw back after its window, per kWh awarded (no declaration)."""
MAX_LOOKAHEAD_STEPS = 4 * 24 * 4  # a footprint is followed at most 4 days at 15-minute steps
REBOUND_PEAK_FACTOR = 2.0
"""A rebound's power per kW shed: released homes heat at full power until they are back on their plan."""
REBOUND_TAIL_SHARE = 0.25
"""Share of a rebound's energy that comes back slowly (homes nearly back at their setpoint recover gently)."""
REBOUND_TAIL_MINUTES = 60.0
"""Time constant of that slow tail: it decays by e every hour, and is followed until it is below 1 kW."""
REBOUND_TAIL_FLOOR_KW = 1.0
REBOUND_LOOKAHEAD_STEPS = 4 * 12  # how far past the last delivery the screen follows rebounds (12 h at 15 min)
KEEP_STEPS = 4 * 24  # commits are remembered this many steps after delivery (a run's rebound is placed by them)


class ConflictLog(Protocol):
    def append(self, table: str, values: tuple[Any, ...]) -> None: ...


@dataclass(frozen=True)
class CongestionWindow:
    market_id: str
    feeder: str
    direction: Direction
    start: int
    end: int


@dataclass(frozen=True)
class Footprint:
    """What a bid taken in full does to the grid: ``kw`` the signed load change (kW, + = more load) per
    feeder and model step from ``first_step`` while delivered; ``rebound`` per feeder (kWh, kW): the
    energy a down bid's households draw back afterwards and the kW they were shed by."""

    first_step: int
    kw: Mapping[str, np.ndarray]
    rebound: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @cached_property
    def end_step(self) -> int:
        """The first model step after delivery (asked for every print at every screen: computed once)."""
        return self.first_step + max((len(v) for v in self.kw.values()), default=0)

    def dense(self, feeders: tuple[str, ...]) -> np.ndarray:
        """(len(feeders), end_step - first_step) kW, a row per feeder (zeros where it does not deliver);
        kept, as the screen reads each committed print again at every screen."""
        cache = self.__dict__.setdefault("_dense", {})
        out = cache.get(feeders)
        if out is None:
            out = np.zeros((len(feeders), self.end_step - self.first_step))
            for r, f in enumerate(feeders):
                v = self.kw.get(f)
                if v is not None:
                    out[r, : len(v)] = v
            cache[feeders] = out
        return out

    def rebound_rows(self, feeders: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The rebounds on ``feeders`` as (row in ``feeders``, end step, kWh, kW shed) arrays, in
        ``rebound``'s order; kept, as :meth:`dense` is."""
        cache = self.__dict__.setdefault("_rebound_rows", {})
        out = cache.get(feeders)
        if out is None:
            at = {f: r for r, f in enumerate(feeders)}
            got = [(at[f], e, p) for f, (e, p) in self.rebound.items() if f in at]
            out = (
                np.array([g[0] for g in got], dtype=np.int64),
                np.full(len(got), self.end_step, dtype=np.int64),
                np.array([g[1] for g in got], dtype=np.float64),
                np.array([g[2] for g in got], dtype=np.float64),
            )
            cache[feeders] = out
        return out

    def scaled(self, factor: float) -> Footprint:
        return Footprint(
            self.first_step,
            {f: v * factor for f, v in self.kw.items()},
            {f: (e * factor, p * factor) for f, (e, p) in self.rebound.items()},
        )


def footprint(
    direction: Direction,
    delivery_start: int,
    interval_minutes: int,
    per_feeder: Mapping[str, Sequence[float]],
    rebound_kwh: Mapping[str, float],
    dt: int,
) -> Footprint:
    """A bid's footprint from its kW per feeder and interval and its rebound energy per feeder (pure):
    +kW (up) or -kW (down) over each interval's model steps; the rebound of a down bid is kept as
    (energy, largest kW shed) and placed by :func:`grid_profile`, which knows what follows it."""
    start, m = delivery_start, interval_minutes
    first = start // dt
    sign = 1.0 if direction is Direction.UP else -1.0
    out: dict[str, np.ndarray] = {}
    rebound: dict[str, tuple[float, float]] = {}
    given = list(per_feeder.values())
    if given and start % dt == 0 and m % dt == 0 and len({len(v) for v in given}) == 1 and len(given[0]):
        # all feeders at once (a pooled bid names ~20): :func:`_during`'s whole-step case row by row
        kw = np.array(given, dtype=float).reshape(len(given), -1)
        pos = kw > 0
        n_on = kw.shape[1] - np.argmax(pos[:, ::-1], axis=1)  # intervals up to the last one with kW
        steps = np.repeat(sign * kw * float(dt) / dt, m // dt, axis=1) + 0.0
        peak = kw.max(axis=1, initial=-np.inf).tolist()
        rep = m // dt
        has_kw = [bool(x) for x in np.any(pos, axis=1)]
        for r, (f, on, n) in enumerate(zip(per_feeder, has_kw, n_on.tolist(), strict=True)):
            if not on:
                continue
            out[f] = steps[r, : n * rep]
            energy = float(rebound_kwh.get(f, 0.0))
            if sign < 0 and energy > 0:
                rebound[f] = (energy, float(peak[r]))
        return Footprint(first, out, rebound)
    for f, v in per_feeder.items():
        kw1 = np.asarray(v, dtype=float)
        on1 = np.flatnonzero(kw1 > 0)
        if not len(on1):
            continue
        out[f] = _during(sign, kw1[: int(on1[-1]) + 1], start, m, dt)
        energy = float(rebound_kwh.get(f, 0.0))
        if sign < 0 and energy > 0:
            rebound[f] = (energy, float(kw1.max()))
    return Footprint(first, out, rebound)


def _during(sign: float, kw: np.ndarray, start: int, m: int, dt: int) -> np.ndarray:
    """The signed kW per model step from ``start // dt`` of intervals of ``m`` minutes at ``kw`` from
    ``start``: each step gets each interval's kW in proportion to the minutes they share."""
    first = start // dt
    if start % dt == 0 and m % dt == 0:
        # each step lies in one interval, all of it: the loop below adds one term, 0.0 + sign x q x dt / dt
        # (the same operations element-wise; the 0.0 turns a -0.0 into 0.0 as the loop's sum does)
        return np.repeat(sign * kw * float(dt) / dt, m // dt) + 0.0
    during = np.zeros(-(-(start + len(kw) * m) // dt) - first)
    for i, q in enumerate(kw.tolist()):
        t0, t1 = start + i * m, start + (i + 1) * m
        for s in range(t0 // dt, -(-t1 // dt)):
            during[s - first] += sign * q * (min(t1, (s + 1) * dt) - max(t0, s * dt)) / dt
    return during


def grid_profile(
    prints: Sequence[Footprint], feeder: str, lo: int, hi: int, dt: int, peak_factor: float = REBOUND_PEAK_FACTOR
) -> np.ndarray:
    """The committed load change (kW) on ``feeder`` per model step [lo, hi) of ``prints`` together (pure).

    Deliveries add up. A rebound comes back only once the feeder is no longer being shed: households
    held down through a run of consecutive activations draw back everything at the run's end, not
    after each activation. Most of it (1 - :data:`REBOUND_TAIL_SHARE`) then comes back at
    ``peak_factor`` x the largest kW shed in the run (heat pumps recover at full power: a home shed
    from a third of its maximum draws back twice what it shed) until drawn; the rest decays slowly
    (time constant :data:`REBOUND_TAIL_MINUTES`), which is what reaches a peak hours later."""
    return grid_profiles(prints, (feeder,), lo, hi, dt, peak_factor)[feeder]


def grid_profiles(
    prints: Sequence[Footprint],
    feeders: Sequence[str],
    lo: int,
    hi: int,
    dt: int,
    peak_factor: float = REBOUND_PEAK_FACTOR,
) -> dict[str, np.ndarray]:
    """:func:`grid_profile` of every feeder in ``feeders``, the prints read once for all of them. Each
    feeder's figures are summed in the same order. The screen keeps the same figures up to date bid by
    bid instead (:class:`_Book`); this is the definition it is tested against."""
    first = min((p.first_step for p in prints), default=lo)
    base = min(first, lo)
    n = hi - base
    if n <= 0:
        return {f: np.zeros(max(hi - lo, 0)) for f in feeders}
    keys = tuple(feeders)
    # Row by row the same sums in the same order as one feeder at a time: a feeder a print does not
    # deliver on adds an exact 0.0.
    during = np.zeros((len(keys), n))
    queues: dict[str, list[tuple[int, float, float]]] = {f: [] for f in keys}
    for p in prints:
        a = p.first_step - base
        b = min(p.end_step - base, n)
        if b > a:
            during[:, a:b] += p.dense(keys)[:, : b - a]
        for f, r in p.rebound.items():
            q = queues.get(f)
            if q is not None:
                q.append((p.end_step, *r))
    return {f: _place(during[i], queues[f], base, dt, peak_factor)[lo - base :] for i, f in enumerate(keys)}


def _placed(
    during: np.ndarray, queue: list[tuple[int, float, float]], base: int, dt: int, peak_factor: float
) -> np.ndarray:
    """The deliveries ``during`` (kW per step from ``base``) with the rebounds of ``queue`` (end step,
    kWh, kW shed) placed after them: see :func:`grid_profile`. The pure-Python reference of the
    compiled :func:`_place_into` (``FLECH_KERNELS=numpy`` runs it)."""
    n = len(during)
    out = during.copy()
    queue.sort()
    h = dt / 60.0
    decay = 1.0 - math.exp(-dt / REBOUND_TAIL_MINUTES)
    fast, slow, power, j, i = 0.0, 0.0, 0.0, 0, 0
    while i < n:
        s = base + i
        while j < len(queue) and queue[j][0] <= s:
            fast += (1.0 - REBOUND_TAIL_SHARE) * queue[j][1]
            slow += REBOUND_TAIL_SHARE * queue[j][1]
            power = max(power, peak_factor * queue[j][2])
            j += 1
        if not (fast > 1e-9 and power > 0) and slow <= 0:
            if j == len(queue):
                break  # nothing left to draw back: the rest is the deliveries alone
            i = queue[j][0] - base  # idle until the next rebound is due
            continue
        if during[i] < -1e-9:
            i += 1
            continue  # still being shed: the rebound waits
        if fast > 1e-9 and power > 0:
            draw = min(power, fast / h)
            out[i] += draw
            fast -= draw * h
            if fast <= 1e-9:
                fast, power = 0.0, 0.0
        if slow > 0:
            tail = slow * decay / h
            if tail < REBOUND_TAIL_FLOOR_KW:
                slow = 0.0
            else:
                out[i] += tail
                slow -= tail * h
        i += 1
    return out


def _place_into(
    during: np.ndarray,
    out: np.ndarray,
    ends: np.ndarray,
    kwh: np.ndarray,
    shed: np.ndarray,
    m: int,
    base: int,
    h: float,
    decay: float,
    peak_factor: float,
    tail_share: float,
    floor_kw: float,
) -> None:
    """:func:`_placed` with the queue as sorted arrays (its first ``m`` entries: end step, kWh, kW shed),
    adding into ``out`` (a copy of ``during``); written for numba: the same float operations in the same
    order (``min``/``max`` spelt as Python's builtins pick: the first argument unless the second is
    strictly smaller/larger), so the figures are bit-identical."""
    n = len(during)
    fast, slow, power, j, i = 0.0, 0.0, 0.0, 0, 0
    while i < n:
        s = base + i
        while j < m and ends[j] <= s:
            fast += (1.0 - tail_share) * kwh[j]
            slow += tail_share * kwh[j]
            p = peak_factor * shed[j]
            if p > power:
                power = p
            j += 1
        if not (fast > 1e-9 and power > 0) and slow <= 0:
            if j == m:
                break
            i = ends[j] - base
            continue
        if during[i] < -1e-9:
            i += 1
            continue
        if fast > 1e-9 and power > 0:
            x = fast / h
            draw = x if x < power else power
            out[i] += draw
            fast -= draw * h
            if fast <= 1e-9:
                fast, power = 0.0, 0.0
        if slow > 0:
            tail = slow * decay / h
            if tail < floor_kw:
                slow = 0.0
            else:
                out[i] += tail
                slow -= tail * h
        i += 1


def _after(e0: int, k0: float, s0: float, e1: int, k1: float, s1: float) -> bool:
    """(e0, k0, s0) > (e1, k1, s1) as Python compares tuples (the order ``list.sort`` leaves a queue in)."""
    if e0 != e1:
        return e0 > e1
    if k0 != k1:
        return k0 > k1
    return s0 > s1


def _placed_rows(
    during: np.ndarray,
    ends: np.ndarray,
    kwh: np.ndarray,
    shed: np.ndarray,
    counts: np.ndarray,
    rows: np.ndarray,
    x_end: int,
    x_kwh: np.ndarray,
    x_shed: np.ndarray,
    x_has: np.ndarray,
    base: int,
    h: float,
    decay: float,
    peak_factor: float,
    tail_share: float,
    floor_kw: float,
) -> np.ndarray:
    """:func:`_place_into` of each row ``during[i]`` with the queue of feeder ``rows[i]`` (row ``rows[i]`` of
    the padded ``ends``/``kwh``/``shed``, ``counts`` long), the extra rebound (``x_end``, ``x_kwh``,
    ``x_shed``) inserted where ``x_has``, after its equals (as ``bisect.insort`` puts it)."""
    out = during.copy()
    for i in range(len(rows)):
        r = rows[i]
        m = counts[r]
        if not x_has[r]:
            _place_into(
                during[i], out[i], ends[r], kwh[r], shed[r], m, base, h, decay, peak_factor, tail_share, floor_kw
            )
            continue
        qe = np.empty(m + 1, dtype=np.int64)
        qk = np.empty(m + 1)
        qs = np.empty(m + 1)
        pos = m
        while pos > 0 and _after(ends[r, pos - 1], kwh[r, pos - 1], shed[r, pos - 1], x_end, x_kwh[r], x_shed[r]):
            pos -= 1
        qe[:pos] = ends[r, :pos]
        qk[:pos] = kwh[r, :pos]
        qs[:pos] = shed[r, :pos]
        qe[pos], qk[pos], qs[pos] = x_end, x_kwh[r], x_shed[r]
        qe[pos + 1 :] = ends[r, pos:m]
        qk[pos + 1 :] = kwh[r, pos:m]
        qs[pos + 1 :] = shed[r, pos:m]
        _place_into(during[i], out[i], qe, qk, qs, m + 1, base, h, decay, peak_factor, tail_share, floor_kw)
    return out


def _insert_rows(
    ends: np.ndarray,
    kwh: np.ndarray,
    shed: np.ndarray,
    counts: np.ndarray,
    rows: np.ndarray,
    end: int,
    r_kwh: np.ndarray,
    r_shed: np.ndarray,
) -> None:
    """Insert the rebound (``end``, ``r_kwh[i]``, ``r_shed[i]``) into the sorted queue of each feeder
    ``rows[i]`` (in place, after its equals; the caller has made room)."""
    for i in range(len(rows)):
        r = rows[i]
        pos = counts[r]
        while pos > 0 and _after(ends[r, pos - 1], kwh[r, pos - 1], shed[r, pos - 1], end, r_kwh[i], r_shed[i]):
            ends[r, pos], kwh[r, pos], shed[r, pos] = ends[r, pos - 1], kwh[r, pos - 1], shed[r, pos - 1]
            pos -= 1
        ends[r, pos], kwh[r, pos], shed[r, pos] = end, r_kwh[i], r_shed[i]
        counts[r] += 1


if HAVE_NUMBA:
    from numba import njit

    _after = njit(cache=True, inline="always")(_after)
    _place_into = njit(cache=True)(_place_into)
    _placed_rows = njit(cache=True)(_placed_rows)
    _insert_rows = njit(cache=True)(_insert_rows)


def _consts(dt: int, peak_factor: float) -> tuple[float, float, float, float, float]:
    """The kernels' trailing arguments: (h, decay, peak_factor, tail share, tail floor), as :func:`_placed`."""
    return dt / 60.0, 1.0 - math.exp(-dt / REBOUND_TAIL_MINUTES), peak_factor, REBOUND_TAIL_SHARE, REBOUND_TAIL_FLOOR_KW


def _place(
    during: np.ndarray, queue: list[tuple[int, float, float]], base: int, dt: int, peak_factor: float
) -> np.ndarray:
    """:func:`_placed`, compiled unless ``FLECH_KERNELS=numpy``."""
    if default_engine() == "numpy":
        return _placed(during, queue, base, dt, peak_factor)
    queue.sort()
    ends = np.array([q[0] for q in queue], dtype=np.int64)
    kwh = np.array([q[1] for q in queue], dtype=np.float64)
    shed = np.array([q[2] for q in queue], dtype=np.float64)
    during = np.ascontiguousarray(during, dtype=np.float64)
    out = during.copy()
    _place_into(during, out, ends, kwh, shed, len(queue), base, *_consts(dt, peak_factor))
    return out


def _queue_rebound(q: Any, p: Footprint, engine: str) -> None:
    """Insert ``p``'s rebound rows into the sorted per-feeder queues of ``q`` (a :class:`_Book` or the ledger
    it is copied from: ``feeders``, ``ends``, ``kwh``, ``shed``, ``counts``), growing them when full."""
    rows, _, kwh, shed = p.rebound_rows(q.feeders)
    if len(rows):
        if int(q.counts.max()) + 1 > q.ends.shape[1]:
            grow = q.ends.shape[1]
            q.ends = np.pad(q.ends, ((0, 0), (0, grow)))
            q.kwh, q.shed = np.pad(q.kwh, ((0, 0), (0, grow))), np.pad(q.shed, ((0, 0), (0, grow)))
        insert = _insert_rows if engine != "numpy" else getattr(_insert_rows, "py_func", _insert_rows)
        insert(q.ends, q.kwh, q.shed, q.counts, rows, p.end_step, kwh, shed)


class _Book:
    """:func:`grid_profiles` of a list of prints that grows print by print, kept up to date (same figures).

    Why: the screen asks for every feeder's profile three times per bid, over every print committed.
    Here the deliveries are summed once, as prints come (in their order, so each sum is the one
    :func:`grid_profiles` makes); each feeder's rebound queue is kept sorted; a feeder's profile is
    placed again only when a print touches it (or the profile's first step moves), all feeders asked
    for in one compiled call. ``origin`` must be at or before every print's first step and every ``lo``
    asked for; ``hi`` is where every profile ends."""

    def __init__(
        self,
        prints: Sequence[Footprint],
        feeders: Sequence[str],
        origin: int,
        hi: int,
        dt: int,
        peak_factor: float = REBOUND_PEAK_FACTOR,
        engine: Engine | None = None,
    ) -> None:
        self.feeders = tuple(feeders)
        self.row = {f: r for r, f in enumerate(self.feeders)}
        self.origin, self.hi, self.dt, self.peak_factor = origin, hi, dt, peak_factor
        self.engine: Engine = engine or default_engine()
        nf = len(self.feeders)
        self.during = np.zeros((nf, max(hi - origin, 0)))
        for p in prints:
            self._deliver(self.during, p)
        # the rebound queues, sorted as list.sort sorts (end, kWh, kW) tuples; padded, counts[r] long
        got = [p.rebound_rows(self.feeders) for p in prints]
        rows, ends, kwh, shed = (
            (np.concatenate([g[i] for g in got]) for i in range(4))
            if got
            else (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        )
        order = np.lexsort((shed, kwh, ends, rows))
        self.counts = np.bincount(rows, minlength=nf).astype(np.int64)
        cap = max(int(self.counts.max(initial=0)), 1) * 2
        self.ends = np.zeros((nf, cap), dtype=np.int64)
        self.kwh, self.shed = np.zeros((nf, cap)), np.zeros((nf, cap))
        at = np.arange(len(rows)) - np.repeat(np.cumsum(self.counts) - self.counts, self.counts)
        self.ends[rows[order], at], self.kwh[rows[order], at], self.shed[rows[order], at] = (
            ends[order],
            kwh[order],
            shed[order],
        )
        self.first = min((p.first_step for p in prints), default=None)
        self._placed: list[tuple[int, np.ndarray] | None] = [None] * nf  # (base, profile from base to hi)

    @classmethod
    def _of(
        cls,
        ledger: _Ledger,
        origin: int,
        hi: int,
        engine: Engine | None = None,
    ) -> _Book:
        """The book :meth:`__init__` builds of ``ledger.prints`` (same sums, same queues), copied from the
        ledger instead of summed again; the screen's own additions then go to the copy only."""
        book = cls.__new__(cls)
        book.feeders, book.row = ledger.feeders, ledger.row
        book.origin, book.hi, book.dt, book.peak_factor = origin, hi, ledger.dt, ledger.peak_factor
        book.engine = engine or default_engine()
        nf = len(book.feeders)
        book.during = np.zeros((nf, max(hi - origin, 0)))
        a, b = max(origin, ledger.start), min(hi, ledger.start + ledger.during.shape[1])
        if b > a:  # before the ledger's first column or after its last, no print delivers: zeros
            book.during[:, a - origin : b - origin] = ledger.during[:, a - ledger.start : b - ledger.start]
        book.counts = ledger.counts.copy()
        book.ends, book.kwh, book.shed = ledger.ends.copy(), ledger.kwh.copy(), ledger.shed.copy()
        book.first = ledger.first
        book._placed = [None] * nf
        return book

    def touched(self, p: Footprint) -> list[int]:
        """Rows (in feeder order) whose profile ``p`` may change: where it delivers or draws back."""
        return sorted({self.row[f] for f in (*p.kw, *p.rebound) if f in self.row})

    def base(self, extra: Footprint | None, lo: int) -> int:
        """Where :func:`grid_profiles` of the prints (and ``extra``) asked from ``lo`` starts placing."""
        firsts = [x for x in (self.first, None if extra is None else extra.first_step) if x is not None]
        return min(min(firsts, default=lo), lo)

    def _deliver(self, during: np.ndarray, p: Footprint, at: int | None = None, rows: list[int] | None = None) -> None:
        """Add ``p``'s kW to ``during`` (a row per feeder of ``rows``, default all; column 0 is step ``at``,
        default ``origin``), as :func:`grid_profiles` does: its steps [first, end) before ``hi``; a feeder it
        does not deliver on gets an exact 0.0 (a sum that starts at +0.0 is never -0.0: 0.0 changes nothing)."""
        a = p.first_step - (self.origin if at is None else at)
        b = min(p.end_step - (self.origin if at is None else at), during.shape[1])
        if b > a:
            dense = p.dense(self.feeders)
            during[:, a:b] += (dense if rows is None else dense[rows])[:, : b - a]

    def add(self, p: Footprint) -> None:
        self._deliver(self.during, p)
        _queue_rebound(self, p, self.engine)
        for r in self.touched(p):
            self._placed[r] = None
        self.first = p.first_step if self.first is None else min(self.first, p.first_step)

    def _place(self, during: np.ndarray, rows: Sequence[int], base: int, extra: Footprint | None) -> np.ndarray:
        """The profiles of ``rows`` (their deliveries ``during``, a row each) from ``base``."""
        nf = len(self.feeders)
        x_has, x_kwh, x_shed = np.zeros(nf, dtype=np.bool_), np.zeros(nf), np.zeros(nf)
        x_end = 0
        if extra is not None:
            x_end = extra.end_step
            xr, _, xk, xs = extra.rebound_rows(self.feeders)
            x_has[xr], x_kwh[xr], x_shed[xr] = True, xk, xs
        if self.engine != "numpy":
            idx = np.asarray(rows, dtype=np.int64)
            return _placed_rows(
                np.ascontiguousarray(during),
                self.ends,
                self.kwh,
                self.shed,
                self.counts,
                idx,
                x_end,
                x_kwh,
                x_shed,
                x_has,
                base,
                *_consts(self.dt, self.peak_factor),
            )
        out = np.empty_like(during)
        for i, r in enumerate(rows):
            c = int(self.counts[r])
            queue = list(
                zip(self.ends[r, :c].tolist(), self.kwh[r, :c].tolist(), self.shed[r, :c].tolist(), strict=True)
            )
            if x_has[r]:
                bisect.insort(queue, (x_end, float(x_kwh[r]), float(x_shed[r])))
            out[i] = _placed(during[i], queue, base, self.dt, self.peak_factor)
        return out

    def matrix(self, lo: int, extra: Footprint | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
        """:func:`grid_profiles` (from ``lo`` to ``hi``) of the prints, with ``extra`` added last: a row per
        feeder of ``rows`` (default: all), in that order."""
        base = self.base(extra, lo)
        rows = list(range(len(self.feeders))) if rows is None else list(rows)
        if extra is not None:
            every = rows == list(range(len(self.feeders)))  # every row in order: no row picking
            during = self.during[:, base - self.origin :].copy() if every else self.during[rows, base - self.origin :]
            self._deliver(during, extra, at=base, rows=None if every else rows)
            return self._place(during, rows, base, extra)[:, lo - base :]
        stale = [r for r in rows if (got := self._placed[r]) is None or got[0] != base]
        if stale:
            fresh = self._place(self.during[stale, base - self.origin :], stale, base, None)
            for i, r in enumerate(stale):
                self._placed[r] = (base, fresh[i])
        if not rows:
            return np.zeros((0, max(self.hi - lo, 0)))
        return np.stack([self._placed[r][1][lo - base :] for r in rows])  # type: ignore[index]

    def profiles(
        self, lo: int, extra: Footprint | None = None, rows: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """:meth:`matrix` by feeder name."""
        rows = list(range(len(self.feeders))) if rows is None else list(rows)
        return {self.feeders[r]: v for r, v in zip(rows, self.matrix(lo, extra, rows), strict=True)}


class _Ledger:
    """The committed prints and their :class:`_Book` contents, kept up to date as commitments come
    (:meth:`add`) and expire (:meth:`expire`), so a screen copies them (:meth:`book`) instead of summing
    every print again.

    Exactly the figures :class:`_Book` builds of :attr:`prints`: each step's delivery is the sum of the
    prints delivering then, in list order from +0.0 (a print is added where it delivers, uncut: the book
    cuts at ``hi``, which changes no step before it); each feeder's rebound queue is sorted. An expired
    print is not subtracted (that would leave rounding): the steps it delivered on are summed again from
    the prints left, in their order; its rebounds are taken out of the queues (equal entries are
    interchangeable, so which one goes does not matter)."""

    def __init__(self, feeders: Sequence[str], dt: int, peak_factor: float = REBOUND_PEAK_FACTOR) -> None:
        self.feeders = tuple(feeders)
        self.row = {f: r for r, f in enumerate(self.feeders)}
        self.dt, self.peak_factor = dt, peak_factor
        nf = len(self.feeders)
        self.prints: list[Footprint] = []
        self.start = 0  # the model step of column 0 of ``during``
        self.during = np.zeros((nf, 0))
        self.counts = np.zeros(nf, dtype=np.int64)
        self.ends = np.zeros((nf, 2), dtype=np.int64)
        self.kwh, self.shed = np.zeros((nf, 2)), np.zeros((nf, 2))
        self.first: int | None = None

    def book(self, origin: int, hi: int, engine: Engine | None = None) -> _Book:
        """``_Book(self.prints, self.feeders, origin, hi, dt)``, copied (``origin`` at or before every first step)."""
        return _Book._of(self, origin, hi, engine)

    def _cover(self, lo: int, hi: int) -> None:
        """Widen ``during`` with zero columns to hold steps [lo, hi)."""
        width = self.during.shape[1]
        if not self.prints:
            self.start, width = lo, 0
            self.during = np.zeros((len(self.feeders), 0))
        left = max(self.start - lo, 0)
        right = max(hi - (self.start + width), 0)
        if left or right:
            if right:
                right = max(right, width // 2)  # room for the next ones, not a copy per print
            self.during = np.pad(self.during, ((0, 0), (left, right)))
            self.start -= left

    def _sum(self, p: Footprint, lo: int, hi: int) -> None:
        """Add ``p``'s kW on steps [lo, hi) (within ``during``) as :meth:`_Book._deliver` does."""
        a, b = max(p.first_step, lo), min(p.end_step, hi)
        if b > a:
            self.during[:, a - self.start : b - self.start] += p.dense(self.feeders)[
                :, a - p.first_step : b - p.first_step
            ]

    def add(self, p: Footprint) -> None:
        """``p`` committed (after every print already in)."""
        self._cover(min(p.first_step, p.end_step), p.end_step)
        self.prints.append(p)
        self._sum(p, p.first_step, p.end_step)
        _queue_rebound(self, p, default_engine())
        self.first = p.first_step if self.first is None else min(self.first, p.first_step)

    def expire(self, keep: Callable[[Footprint], bool]) -> list[Footprint]:
        """Drop the prints ``keep`` says no to (the rest keep their order); returns those kept."""
        gone = [p for p in self.prints if not keep(p)]
        if not gone:
            return self.prints
        self.prints = [p for p in self.prints if keep(p)]
        for p in gone:
            rows, end, kwh, shed = p.rebound_rows(self.feeders)
            for r, e, k, s in zip(rows.tolist(), end.tolist(), kwh.tolist(), shed.tolist(), strict=True):
                c = int(self.counts[r])
                at = np.flatnonzero((self.ends[r, :c] == e) & (self.kwh[r, :c] == k) & (self.shed[r, :c] == s))
                i = int(at[0])
                for q in (self.ends, self.kwh, self.shed):
                    q[r, i : c - 1] = q[r, i + 1 : c]
                    q[r, c - 1] = 0
                self.counts[r] = c - 1
        self.first = min((p.first_step for p in self.prints), default=None)
        if self.first is None:
            self.during = np.zeros((len(self.feeders), 0))
            return self.prints
        # the steps the expired prints delivered on, summed again from the prints left (in their order)
        lo = max(min(p.first_step for p in gone), self.start)
        hi = min(max(p.end_step for p in gone), self.start + self.during.shape[1])
        if hi > lo:
            self.during[:, lo - self.start : hi - self.start] = 0.0
            for p in self.prints:
                self._sum(p, lo, hi)
        if self.first > self.start:  # no print delivers before its first step any more
            self.during = self.during[:, self.first - self.start :].copy()
            self.start = self.first
        return self.prints


@dataclass
class _Pending:
    """A screened TSO market waiting for its clearing: each bid kept in the book, as offered."""

    request: MarketRequest
    bids: dict[str, tuple[tuple[float, ...], Footprint]] = field(default_factory=dict)


class Coordinator:
    """Learns of cleared markets from the platform's events (``MarketCleared``, ``MarketEnded``),
    never from a product's internal state, and screens TSO books under the scenario's rule."""

    def __init__(
        self,
        rule: str,
        log: ConflictLog,
        events: EventBus,
        role_of: Callable[[str], str | None],
        seller_feeders: Mapping[str, frozenset[str]],
        grid: GridView | None = None,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        """``grid``: the DSOs' view of the feeders (limits, load forecast) that ``grid_headroom`` screens
        against; ``margin``: the share of each limit it keeps free."""
        if rule not in RULES:
            raise ValueError(f"unknown coordination rule {rule!r}; known: {RULES}")
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"coordination margin must be in [0, 1), got {margin}")
        self.rule = rule
        self.log = log
        self.role_of = role_of
        self.seller_feeders = seller_feeders
        self.grid = grid
        self.margin = margin
        self._dso: dict[tuple[str, str], MarketCleared] = {}  # (product, market) -> cleared DSO market, in order
        self._pending: dict[str, _Pending] = {}  # TSO market ID -> what its screen let through
        # awarded load changes still ahead (TSO awards, DSO rebound), summed as the screen's book holds them
        self._ledger: _Ledger | None = None if grid is None else _Ledger(grid.feeders, grid.dt)
        events.subscribe(MarketCleared, self._on_cleared)
        events.subscribe(MarketEnded, self._on_ended)

    # -- what the platform tells it -----------------------------------------------------------
    def _on_cleared(self, ev: MarketCleared) -> None:
        role = self.role_of(ev.buyer)
        if role == "dso":
            self._dso[(ev.product_id, ev.market_id)] = ev
            if self.grid is not None and ev.location in self.grid.feeders:
                self._commit_dso(ev)
        pending = self._pending.pop(ev.market_id, None)
        if pending is None:
            return
        accepted = dict(ev.accepted_by_bid)
        for bid_id, (offered, fp) in pending.bids.items():
            acc = accepted.get(bid_id)
            if not acc or not any(a > 0 for a in acc):
                continue
            # The seller dispatches its footprint in proportion to what was taken of its offer.
            ratio = max(a / q for a, q in zip(acc, offered, strict=True) if q > 0)
            self._commit(fp.scaled(min(ratio, 1.0)))

    def _commit_dso(self, ev: MarketCleared) -> None:
        """A DSO's own purchase moves load too: a down purchase draws its energy back after the window
        (no declaration: :data:`DSO_REBOUND_RATIO` of it, at its largest kW); an up purchase adds load
        in the window. Its reduction is never counted as headroom: the DSO bought it for its own margin."""
        assert self.grid is not None
        loc, kw = ev.location, ev.awarded_kw
        fp = footprint(ev.direction, ev.delivery_start, ev.interval_minutes, {loc: kw}, {}, self.grid.dt)
        if loc not in fp.kw:
            return
        if ev.direction is Direction.UP:
            self._commit(fp)
            return
        kwh = sum(kw) * ev.interval_minutes / 60.0 * DSO_REBOUND_RATIO
        # the shed itself is left out (zeros), so the rebound comes back right after the window
        self._commit(Footprint(fp.first_step, {loc: np.zeros(len(fp.kw[loc]))}, {loc: (kwh, max(kw))}))

    @property
    def _committed(self) -> list[Footprint]:
        """The awarded load changes still ahead, in the order they were committed."""
        return [] if self._ledger is None else self._ledger.prints

    def _commit(self, fp: Footprint) -> None:
        assert self._ledger is not None  # only a screen against a grid view commits
        self._ledger.add(fp)

    def _kept(self) -> _Ledger:
        """The ledger, on the grid's feeders (built again from its prints should they have changed)."""
        assert self.grid is not None and self._ledger is not None
        if self._ledger.feeders != tuple(self.grid.feeders):
            old, self._ledger = self._ledger, _Ledger(self.grid.feeders, self.grid.dt)
            for p in old.prints:
                self._ledger.add(p)
        return self._ledger

    def _on_ended(self, ev: MarketEnded) -> None:
        """Settled (delivery is over), cancelled or failed: it holds nothing any more."""
        self._dso.pop((ev.product_id, ev.market_id), None)
        self._pending.pop(ev.market_id, None)

    # -- DSO windows ---------------------------------------------------------------------------
    def windows(self, start: int, end: int) -> list[CongestionWindow]:
        """Intervals overlapping [start, end) in which a DSO holds awarded flexibility on a feeder.

        DSO markets whose delivery ended by ``start`` are forgotten: a year of 15-minute TSO
        markets must not rescan every market ever cleared.
        """
        for key in [k for k, m in self._dso.items() if m.delivery_end <= start]:
            del self._dso[key]
        out = []
        # by product ID, then in clearing order: the order the coordinator used to scan products' markets in
        for m in sorted(self._dso.values(), key=lambda m: m.product_id):
            if m.delivery_start >= end:
                continue
            for i, kw in enumerate(m.awarded_kw):
                t = m.delivery_start + i * m.interval_minutes
                if t < end and start < t + m.interval_minutes and kw > 0:
                    out.append(CongestionWindow(m.market_id, m.location, m.direction, t, t + m.interval_minutes))
        return out

    # -- the screen ----------------------------------------------------------------------------
    def screen(self, req: MarketRequest, bids: list[Bid]) -> list[Bid]:
        """The bids of a TSO market that may be cleared under the rule; conflicts recorded."""
        if self.rule == "none" or self.role_of(req.sender) != "tso":
            return bids
        if self.rule == "grid_headroom" and self.grid is not None:
            return self._screen_headroom(req, bids)
        return self._screen_windows(req, bids, "dso_prevails" if self.rule == "grid_headroom" else self.rule)

    def _screen_windows(self, req: MarketRequest, bids: list[Bid], rule: str) -> list[Bid]:
        """``dso_prevails`` / ``tso_prevails``: only the DSO's market windows count."""
        windows = self.windows(req.delivery_start, req.delivery_end)
        if not windows:
            return bids
        out = []
        for bid in bids:
            feeders = [bid.location] if bid.location else sorted(self.seller_feeders.get(bid.sender, ()))
            qty = list(bid.quantities_kw)
            for i, q in enumerate(bid.quantities_kw):
                if q <= 0:
                    continue
                t0 = req.delivery_start + i * req.interval_minutes
                t1 = t0 + req.interval_minutes
                hit = next(
                    (
                        w
                        for w in windows
                        if w.feeder in feeders and w.start < t1 and t0 < w.end and w.direction is not req.direction
                    ),
                    None,
                )
                if hit is None:
                    continue
                refused = rule == "dso_prevails"
                self._record(
                    req,
                    bid,
                    i,
                    hit.feeder,
                    float(q),
                    hit.market_id,
                    rule,
                    "refused" if refused else "allowed",
                    f"TSO {req.direction} would worsen DSO congestion ({hit.direction}) on {hit.feeder}",
                )
                if refused:
                    qty[i] = 0.0
            if qty != list(bid.quantities_kw):
                if bid.block or not any(q > 0 for q in qty):
                    continue  # an all-or-nothing bid cannot be partly refused
                bid = msgspec.structs.replace(bid, quantities_kw=tuple(qty))
            out.append(bid)
        return out

    def bid_footprint(self, req: MarketRequest, bid: Bid, dt: int) -> Footprint:
        """Where a bid's flexibility sits and when it moves load (see the module docstring)."""
        n = len(bid.quantities_kw)
        declared = {
            k[len(FEEDER_KW) :]: v for k, v in bid.attrs.items() if k.startswith(FEEDER_KW) and isinstance(v, tuple)
        }
        if bid.location:
            per = {bid.location: tuple(bid.quantities_kw)}
        elif declared:
            per = {f: tuple(float(x) for x in v[:n]) for f, v in declared.items()}
        else:
            per = {f: tuple(bid.quantities_kw) for f in sorted(self.seller_feeders.get(bid.sender, ()))}
        rebound: dict[str, float] = {}
        for f, q in per.items():
            v = bid.attrs.get(f"{REBOUND_KWH}{f}")
            declared_kwh = isinstance(v, int | float) and not isinstance(v, bool)
            # undeclared: everything shed there comes back
            rebound[f] = float(v) if declared_kwh else sum(q) * req.interval_minutes / 60.0  # type: ignore[arg-type]
        return footprint(req.direction, req.delivery_start, req.interval_minutes, per, rebound, dt)

    def _nowcast(self, forecast: dict[str, np.ndarray], last: Mapping[str, float], now: int) -> dict[str, np.ndarray]:
        """The forecast raised to what the feeder measures, less the change committed there last step.

        The DSO's forecast runs the households on from their present state without control. Homes in a
        run of "consume more" are warm, so left alone they would draw *less* than they will: they follow
        their own plan plus the change ordered. What the feeder measured minus that change is the load it
        would have drawn; where it is above the forecast, the gap is carried over the horizon (never
        lowered: a forecast above the measurement is kept, it errs on the grid's side)."""
        grid = self.grid
        assert grid is not None
        if now <= 0:
            return forecast
        out = {}
        for f, fc in forecast.items():
            gap = grid.load_now(f) - last[f] - float(fc[0]) if len(fc) else 0.0
            out[f] = fc + max(gap, 0.0)
        return out

    def _screen_headroom(self, req: MarketRequest, bids: list[Bid]) -> list[Bid]:
        """``grid_headroom``: each bid, cheapest first, may add load only where the feeder keeps its margin.

        A bid's effect is what it changes in the committed profile (:func:`grid_profile`): its own
        delivery and rebound, and -- for a down bid extending a run -- the rebound of the run, which it
        pushes later. That shift comes with any part of the bid, so it is taken whole (``fixed``) and
        only the bid's own share scales with the part kept (``var``)."""
        grid = self.grid
        assert grid is not None
        dt, now = grid.dt, grid.now_step
        feeders = list(grid.feeders)
        ledger = self._kept()
        ledger.expire(lambda c: c.end_step + KEEP_STEPS > now)
        prints = {b.bid_id: self.bid_footprint(req, b, dt) for b in bids}
        last = max((fp.end_step for fp in prints.values()), default=now + 1)
        k = min(max(last - now, 1) + REBOUND_LOOKAHEAD_STEPS, MAX_LOOKAHEAD_STEPS)
        hi = now + k
        # every profile below starts at or after this step: the book's deliveries are summed from it
        firsts = [] if ledger.first is None else [ledger.first]  # the committed prints' earliest first step
        origin = min([now - 1, *firsts, *(p.first_step for p in prints.values())])
        book = ledger.book(origin, hi)
        without_m = book.matrix(now - 1)  # from the step just simulated, a row per feeder
        without = dict(zip(feeders, without_m, strict=True))
        forecast = self._nowcast(grid.forecast(k), {f: float(v[0]) for f, v in without.items()}, now)
        cap = np.array([(1.0 - self.margin) * grid.limit_kw(f) - forecast[f] for f in feeders]).reshape(-1, k)
        windows = self.windows(req.delivery_start, hi * dt)
        kept: dict[str, Bid] = {}
        pending = _Pending(req)
        eps = 1e-6
        for bid in sorted(bids, key=lambda b: b.price):  # stable: ties keep arrival order
            fp = prints[bid.bid_id]
            # A feeder the bid neither delivers nor draws back on keeps its profile exactly (same sums, same
            # queue): it adds no load there, so it cannot bind -- unless the profile's first step moves.
            rows = book.touched(fp) if book.base(fp, now) == book.base(None, now - 1) else list(range(len(feeders)))
            with_eps = book.matrix(now, fp.scaled(eps), rows)
            with_one = book.matrix(now, fp, rows)
            # a row per feeder of ``rows``: the same element-wise operations as feeder by feeder
            base = without_m[rows, 1:]
            var = (with_one - with_eps) / (1.0 - eps)
            fixed = with_eps - base - eps * var
            room = np.maximum(cap[rows] - base, 0.0) - fixed
            grows = var > 1e-6
            limit = np.full(var.shape, np.inf)
            limit[grows] = room[grows] / var[grows]
            limit[(~grows) & (fixed > 1e-6) & (room < -1e-6)] = 0.0  # the shift alone does not fit
            js = np.argmin(limit, axis=1) if len(rows) else np.zeros(0, dtype=np.int64)
            factor, binding = 1.0, None
            for i, j in enumerate(js.tolist()):  # in feeder order: the first feeder binding tightest wins
                if limit[i, j] < factor:
                    factor, binding = max(float(limit[i, j]), 0.0), (feeders[rows[i]], now + j)
            if binding is not None and (bid.block or factor < 1e-6):
                factor = 0.0
            if binding is not None:
                self._record_headroom(req, bid, factor, binding, forecast, without, windows, now)
            if factor <= 0.0:
                continue
            if binding is not None:
                bid = self._trimmed(bid, factor)
            taken = fp.scaled(factor)
            book.add(taken)
            without_m = book.matrix(now - 1)
            without = dict(zip(feeders, without_m, strict=True))
            kept[bid.bid_id] = bid
            pending.bids[bid.bid_id] = (tuple(bid.quantities_kw), taken)
        self._pending[req.market_id] = pending
        return [kept[b.bid_id] for b in bids if b.bid_id in kept]

    @staticmethod
    def _trimmed(bid: Bid, factor: float) -> Bid:
        """The bid scaled by ``factor``: its quantities (offered - taken out, as recorded) and its footprint."""
        qty = tuple(q - q * (1.0 - factor) for q in bid.quantities_kw)
        attrs = dict(bid.attrs)
        for key, v in bid.attrs.items():
            if key.startswith(FEEDER_KW) and isinstance(v, tuple):
                attrs[key] = tuple(x * factor for x in v)
            elif key.startswith(REBOUND_KWH) and isinstance(v, int | float) and not isinstance(v, bool):
                attrs[key] = float(v) * factor
        return msgspec.structs.replace(bid, quantities_kw=qty, attrs=attrs)

    def _record_headroom(
        self,
        req: MarketRequest,
        bid: Bid,
        factor: float,
        binding: tuple[str, int],
        forecast: Mapping[str, np.ndarray],
        committed: Mapping[str, np.ndarray],
        windows: Sequence[CongestionWindow],
        now: int,
    ) -> None:
        f, step = binding
        dt = self.grid.dt if self.grid is not None else 1
        t = step * dt
        dso = next((w.market_id for w in windows if w.feeder == f and w.start <= t < w.end), "")
        limit = self.grid.limit_kw(f) if self.grid is not None else math.nan
        action = "refused" if factor <= 0.0 else "trimmed"
        when = "while delivered" if req.delivery_start <= t < req.delivery_end else "by its rebound"
        reason = (
            f"TSO {req.direction} would add load on {f} {when} at minute {t}: forecast "
            f"{forecast[f][step - now]:.0f} kW + committed {committed[f][step - now + 1]:.0f} kW against "
            f"{(1.0 - self.margin) * limit:.0f} kW ({1.0 - self.margin:.0%} of the limit); kept {factor:.0%}"
        )
        for i, q in enumerate(bid.quantities_kw):
            if q > 0:
                self._record(req, bid, i, f, float(q * (1.0 - factor)), dso, "grid_headroom", action, reason)

    def _record(
        self,
        req: MarketRequest,
        bid: Bid,
        i: int,
        feeder: str,
        quantity_kw: float,
        dso_market_id: str,
        rule: str,
        action: str,
        reason: str,
    ) -> None:
        self.log.append(
            "conflicts",
            row(
                "conflicts",
                market_id=req.market_id,
                bid_id=bid.bid_id,
                seller=bid.sender,
                feeder=feeder,
                interval=i,
                interval_start=req.delivery_start + i * req.interval_minutes,
                quantity_kw=quantity_kw,
                dso_market_id=dso_market_id,
                rule=rule,
                action=action,
                reason=reason,
            ),
        )
