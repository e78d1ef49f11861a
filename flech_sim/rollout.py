"""A forecast roll-out's controls for every step at once (issue 12).

A committed forecast steps a copy of the fleet ~100 steps under the owners' plans; each step's
:class:`~flech_sim.households.Control` is the skyline of those plans from that step on (see
``world._control_at`` and ``world._owners_control``, the reference). Built in Python step by step,
that walk over a dict of per-step targets cost a third of a roll-out (issue 12). Here one compiled pass
over the dense (steps, columns) plans computes every step's layers, and a step only slices them.

Exactness: the layers are the reference's values (each is ``sign * (level - here)`` of the same two
floats), its rows (durations longest first), its padding (rows an owner does not use past its rank get
a duration nobody holds) and its dtypes, so the fleet's arithmetic is unchanged. The check the shared
path makes (the one sum across layers the fleet makes equals the owner's own) compares numpy's sum of
the step's stack with the owner's own sum: row by row, as numpy sums an axis-0 stack two or more
columns wide, or, for an owner with one group column (whose own stack numpy sums pairwise from 8 rows
on), numpy's own sum of that one column. tests/test_rollout_control.py compares both with the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np

from .households import Control
from .households.kernels import HAVE_NUMBA

F = TypeVar("F", bound=Callable[..., Any])


def _jit(f: F) -> F:
    """Compiled by numba, cached on disk (the first process compiles, later ones load the machine code);
    without numba world.py takes the reference path and never calls these."""
    if HAVE_NUMBA:
        from numba import njit

        return cast(F, njit(cache=True)(f))
    return f  # pragma: no cover


def dense_targets(sched: tuple[int, np.ndarray], n_cols: int, now: int) -> np.ndarray:
    """A schedule (base step, (columns, steps) kW) as (steps from ``now``, columns) targets: what
    ``world._step_targets`` holds, with a zero row at the end (so every skyline walk ends inside)."""
    base, change = sched
    change = np.asarray(change, dtype=float).reshape(n_cols, -1)
    start = max(now, base)
    k = max(base + change.shape[1] - now, 0)
    out = np.zeros((k + 1, n_cols))
    if base + change.shape[1] > start:
        out[start - now : k] = change[:, start - base :].T
    return out


@_jit
def _drops(x: np.ndarray, i: int, c: int, dur: np.ndarray, val: np.ndarray) -> int:
    """The skyline of column ``c`` of ``x`` from row ``i`` (world._skyline's walk): each level of change
    held at the same sign ends where the plan drops below it. Writes (duration, kW) into ``dur``/``val``
    in ascending duration; returns how many."""
    t = x[i, c]
    level = abs(t)
    if not level > 0.0:  # 0 (or NaN: np.sign matches nothing)
        return 0
    pos = t > 0.0
    sign = 1.0 if pos else -1.0
    n, k = 0, i + 1
    while level > 0.0:
        v = x[k, c] if k < x.shape[0] else 0.0
        here = abs(v) if ((v > 0.0) if pos else (v < 0.0)) else 0.0
        if here < level:
            dur[n] = k - i
            val[n] = sign * (level - here)
            n += 1
            level = here
        k += 1
    return n


@_jit
def _owner_durations(x: np.ndarray, i: int, c0: int, c1: int, dur: np.ndarray, val: np.ndarray, out: np.ndarray) -> int:
    """The distinct durations of columns [c0, c1) at row ``i``, longest first, into ``out``; returns how many."""
    m = 0
    for c in range(c0, c1):
        n = _drops(x, i, c, dur, val)
        for q in range(n):
            d = dur[q]
            seen = False
            for r in range(m):
                if out[r] == d:
                    seen = True
                    break
            if not seen:
                out[m] = d
                m += 1
    # insertion sort, descending (a handful of layers)
    for a in range(1, m):
        d = out[a]
        b = a - 1
        while b >= 0 and out[b] < d:
            out[b + 1] = out[b]
            b -= 1
        out[b + 1] = d
    return m


@_jit
def _count(x: np.ndarray, n_steps: int, col_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pass 1: per step and owner the number of distinct durations, and per step the longest."""
    n_owners = len(col_start) - 1
    n_dur = np.zeros((n_steps, n_owners), dtype=np.int64)
    longest = np.zeros(n_steps, dtype=np.int64)
    k = x.shape[0] + 1
    dur = np.zeros(k, dtype=np.int64)
    val = np.zeros(k)
    out = np.zeros(k, dtype=np.int64)  # distinct durations: at most the rows walked
    for i in range(min(n_steps, x.shape[0])):
        for o in range(n_owners):
            m = _owner_durations(x, i, col_start[o], col_start[o + 1], dur, val, out)
            n_dur[i, o] = m
            if m and out[0] > longest[i]:
                longest[i] = out[0]
    return n_dur, longest


@_jit
def _fill(
    x: np.ndarray,
    n_steps: int,
    col_start: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    n_dur: np.ndarray,
    longest: np.ndarray,
    n_rows: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pass 2: every step's (layers, groups) targets and durations as world._owners_control builds them,
    each owner's durations, and each group's sum over its owner's layers row by row."""
    n_owners = len(col_start) - 1
    target = np.zeros((n_steps, n_rows, n_groups))
    duration = np.zeros((n_steps, n_rows, n_groups), dtype=np.int64)
    own = np.zeros((n_steps, n_owners, n_rows), dtype=np.int64)
    own_sum = np.zeros((n_steps, n_groups))
    k = x.shape[0] + 1
    dur = np.zeros(k, dtype=np.int64)
    val = np.zeros(k)
    durs = np.zeros(k, dtype=np.int64)
    used = np.zeros(n_rows, dtype=np.bool_)
    for i in range(min(n_steps, x.shape[0])):
        if longest[i] == 0:
            continue
        pad = longest[i] + 1
        duration[i, :, :] = pad
        for o in range(n_owners):
            m = _owner_durations(x, i, col_start[o], col_start[o + 1], dur, val, durs)
            if m == 0:
                continue
            own[i, o, :m] = durs[:m]
            # the owner's rank: the most layers one of its columns uses (at least 1)
            rank = 1
            for c in range(col_start[o], col_start[o + 1]):
                n = _drops(x, i, c, dur, val)
                if n > rank:
                    rank = n
            for c in range(col_start[o], col_start[o + 1]):
                g = group[c]
                n = _drops(x, i, c, dur, val)
                used[:m] = False
                for q in range(n):
                    r = 0
                    while durs[r] != dur[q]:
                        r += 1
                    target[i, r, g] += val[q]
                    used[r] = True
                spare = n  # 1 + the level an unused row lands at: unused rows so far + used ones
                for r in range(m):
                    if used[r]:
                        duration[i, r, g] = durs[r]
                    else:
                        spare += 1
                        duration[i, r, g] = pad if spare > rank else durs[r]
                acc = target[i, 0, g]
                for r in range(1, m):
                    acc = acc + target[i, r, g]
                own_sum[i, g] = acc
    return target, duration, own, own_sum


class RolloutControls:
    """Every step's control of one roll-out of ``n_steps`` steps from ``now``, computed at once.

    ``plans``: per owner (owner-major, as the copy's groups) its schedule (base step, (its columns, steps)
    kW) and its group columns; ``by``: the copy's group per household; ``force``: the world's force per
    portfolio. Held per step: ``target``/``duration`` (steps, rows, groups), rows = the most layers any
    step needs, of which ``n_rows`` (steps,) are used (0: no control); ``own`` (steps, owners, rows) each
    owner's durations, longest first, ``n_dur`` (steps, owners) how many; ``own_sum`` (steps, groups) each
    group's sum over its owner's layers, row by row."""

    def __init__(
        self,
        plans: list[tuple[tuple[int, np.ndarray], np.ndarray]],
        now: int,
        n_steps: int,
        by: np.ndarray,
        force: np.ndarray | None = None,
    ) -> None:
        n_groups = int(by.max()) + 1
        dense = [dense_targets(sched, len(cols), now) for sched, cols in plans]
        x = np.zeros((max((len(d) for d in dense), default=1), sum(len(c) for _, c in plans)))
        col_start = [0]
        for d, (_, cols) in zip(dense, plans, strict=True):
            x[: len(d), col_start[-1] : col_start[-1] + len(cols)] = d
            col_start.append(col_start[-1] + len(cols))
        starts = np.array(col_start, dtype=np.int64)
        self.cols = [np.asarray(c, dtype=np.int64) for _, c in plans]
        group = np.concatenate(self.cols) if plans else np.zeros(0, np.int64)
        self.n_dur, longest = _count(x, n_steps, starts)
        self.n_rows = self.n_dur.max(axis=1) if plans else np.zeros(n_steps, np.int64)
        rows = max(int(self.n_rows.max(initial=0)), 1)
        self.target, self.duration, self.own, self.own_sum = _fill(
            x, n_steps, starts, group, n_groups, self.n_dur, longest, rows
        )
        self.by = by
        self.force = force[:n_groups] if force is not None and force.any() else None
        self._group, self._starts = group, starts[:-1]
        # an owner with one group column (only the first can be: group 0): numpy sums its own stack pairwise
        self._one_column = [o for o, c in enumerate(self.cols) if int(c.max()) == 0]

    def __len__(self) -> int:
        return len(self.n_rows)

    def single(self, i: int) -> Control | None:
        """Step ``i``'s control of a one-owner roll-out, as ``world._control_at`` (then ``_forced``) gives it."""
        m = int(self.n_dur[i, 0])
        if m == 0:
            return None
        if m == 1:
            return self._control(self.target[i, 0], int(self.own[i, 0, 0]))
        return self._control(self.target[i, :m], self.own[i, 0, :m].copy())

    def shared(self, i: int) -> tuple[Control | None, list[bool]]:
        """Step ``i``'s control of a several-owner roll-out and per owner whether the copy steps it as its own
        control would, as ``world._owners_control`` (then ``_forced``) gives them."""
        n = int(self.n_rows[i])
        if n == 0:
            return None, [True] * len(self.cols)
        t = self.target[i, :n]
        whole = t.sum(axis=0)  # the fleet's sum across layers
        same = whole[self._group] == self.own_sum[i, self._group]
        exact = (np.logical_and.reduceat(same, self._starts) | (self.n_dur[i] == 0)).tolist()
        for o in self._one_column:
            m = int(self.n_dur[i, o])
            if m:
                exact[o] = bool(whole[0] == t[:m, :1].copy().sum(axis=0)[0])
        return self._control(t, self.duration[i, :n]), exact

    def _control(self, target: np.ndarray, duration: int | np.ndarray) -> Control:
        if self.force is None:
            return Control(target_kw=target, by=self.by, duration_steps=duration)
        return Control(target_kw=target, by=self.by, duration_steps=duration, force=self.force)
