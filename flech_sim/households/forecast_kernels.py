"""Compiled baseline forecast: default operation of many homes, summed by group inside the loop.

Why: the DSO's feeder forecast (``HouseholdFleet.baseline_power``) asks for the baseline of the whole
fleet over a day or more, once per market it screens. Through ``kernels.simulate_default`` that
costs nine (steps, homes) output arrays, the EV status and expected base load of every home-step
materialised first, and flexibility windows nobody reads. Here each home runs its whole horizon
with its state in registers; its EV status is read from the day's sessions (ev.EvSchedule.
session_table) and its expected base load is the step's factor times its mean
(profiles.BaseLoad.expected_factors), so nothing of size steps × homes exists but the group sums.

Exactness: the physics are kernels._powers and kernels._advance, the arithmetic of
kernels._simulate; the EV status is ev.EvSchedule._status's comparisons, the base load
``expected``'s one product. The sums repeat the reference's order: per chunk of ``chunk``
households (in selection order) each group's sum runs over its households in that order from zero,
as ``np.bincount`` does, and the chunks' sums are added to the total one after another, as
``HouseholdFleet.forecast`` does. So the result equals ``forecast(...).baseline_kw`` bit for bit;
tests/test_forecast_baseline.py checks it against the numpy reference.

Caching: numba's disk cache notices changes to this file only, not to kernels.py, whose physics
are compiled in. The kernel therefore closes over a hash of kernels.py, which numba's cache key
includes: a change there compiles this kernel afresh instead of loading stale machine code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import kernels
from .kernels import EVP

if kernels.HAVE_NUMBA:
    from numba import njit

    from .kernels import _advance, _powers

try:
    _KERNELS_STAMP = hashlib.sha256(Path(kernels.__file__).read_bytes()).hexdigest()
except OSError:  # pragma: no cover - no source file (a frozen build): nothing on disk to go stale either
    _KERNELS_STAMP = "no source"


def _build():
    stamp = _KERNELS_STAMP  # part of the cache key (see the module text)

    @njit(cache=True)
    def baseline_sums(P, sc, sel, group, n_groups, chunk, t0, rem0, soc0, t_out, irr, bfac, bmean, s0,
                      ev_row, ev_arr, ev_dep, ev_en, out):  # fmt: skip
        """Per step and group, the net load of households ``sel`` (columns of P and of the state and
        input arrays) in default operation: out (K, groups) += the sums (see the module text)."""
        if len(stamp) == 0:  # never: keeps the stamp in the compiled function's closure
            return
        k_steps = t_out.size
        acc = np.empty((k_steps, n_groups))
        for c0 in range(0, sel.size, chunk):
            acc[:] = 0.0
            for j in range(c0, min(c0 + chunk, sel.size)):
                i = sel[j]
                g = group[i]
                t, rem, soc = t0[i], rem0[i], soc0[i]
                has_ev = P[EVP, i] > 0
                m = bmean[i]
                for k in range(k_steps):
                    conn = False
                    if has_ev:  # ev.EvSchedule._status: the sessions of the step's day and the day before
                        s = s0 + k
                        r = ev_row[k]
                        a1, d1, a2, d2 = ev_arr[r - 1, i], ev_dep[r - 1, i], ev_arr[r, i], ev_dep[r, i]
                        conn = (a1 <= s and s < d1) or (a2 <= s and s < d2)
                        if a2 == s:
                            rem = ev_en[r, i]
                        elif a1 == s:
                            rem = ev_en[r - 1, i]
                        elif not conn:
                            rem = rem - rem
                    else:
                        rem = rem - rem
                    b = bfac[k] * m
                    e, gn, pv, h, v, bt = _powers(P, sc, i, t_out[k], irr[k], t, rem, soc, b, conn)
                    t, rem, soc = _advance(P, sc, i, t_out[k], t, rem, soc, e, gn, h, v, bt)
                    acc[k, g] += b + h + v + bt - pv
            for k in range(k_steps):
                for gg in range(n_groups):
                    out[k, gg] += acc[k, gg]

    return baseline_sums


_baseline_sums = _build() if kernels.HAVE_NUMBA else None


def baseline_sums(
    P: np.ndarray,
    sc: np.ndarray,
    sel: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    chunk: int,
    t0: np.ndarray,
    rem0: np.ndarray,
    soc0: np.ndarray,
    t_out: np.ndarray,
    irr: np.ndarray,
    base_factors: np.ndarray,
    base_mean: np.ndarray,
    s0: int,
    ev_sessions: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """(K, n_groups) net load per step and group of households ``sel`` in default operation from
    state (t0, rem0, soc0) at step ``s0``: weather ``t_out``/``irr`` (K,), expected base load
    ``base_factors[k] * base_mean[i]``, EV status from ``ev_sessions`` (EvSchedule.session_table of
    the K steps). P = kernels.pack() of the whole fleet; every per-household array is the fleet's,
    indexed by ``sel``; ``group``: the fleet's group of each household; ``chunk``: as
    HouseholdFleet.forecast's (the sums' order)."""
    assert _baseline_sums is not None, "numba is not installed"
    k = int(t_out.size)
    if irr.size != k or base_factors.size != k or ev_sessions[3].size != k:
        raise ValueError("weather, base-load factors and EV rows must cover the same steps")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    arr, dep, energy, row = ev_sessions
    out = np.zeros((k, int(n_groups)))
    f = np.ascontiguousarray
    _baseline_sums(
        P, sc, f(sel, np.int64), f(group, np.int64), int(n_groups), int(chunk), f(t0, float), f(rem0, float),
        f(soc0, float), f(t_out, float), f(irr, float), f(base_factors, float), f(base_mean, float), int(s0),
        f(row, np.int64), f(arr, np.int64), f(dep, np.int64), f(energy, float), out,
    )  # fmt: skip
    return out
