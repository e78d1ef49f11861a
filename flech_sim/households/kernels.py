"""Compiled (numba) household physics: the same arithmetic as physics.py, home by home.

Why: driven from Python, each numpy step of ~10,000 homes pays for a few dozen
temporary arrays; forecasts run ~9× as many home-steps as the stepping itself.
These loops keep every home's state in registers instead.

The tail of a controlled step (limits, clips and the choice between plan and default:
``dispatch``; the split over devices: ``split_devices``) repeats HouseholdFleet._dispatch_numpy
and flex.split_devices likewise; the allocation of a group-target step's layers (``allocate_layers``,
with flex.allocate's greedy and proportional modes) repeats HouseholdFleet's allocate_layers.

Exactness: every expression repeats physics.py's operations in the same order
(no fastmath, so no reassociation or fused multiply-add), so the results equal
the numpy reference exactly; only the sign of a zero may differ (numpy's clip
itself picks -0.0 or 0.0 by SIMD lane), which no sum can see. The numpy path stays the reference and is
selected with ``FLECH_KERNELS=numpy`` or ``HouseholdFleet(..., engine="numpy")``;
tests/test_kernels.py checks that both agree.

Compiled functions are cached on disk (``cache=True``): the first process
compiles once (a few seconds), later ones load the machine code.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

from .ev import EvStep
from .flex import Deviation, DeviceFlex
from .physics import Trajectory
from .population import HEAT_PUMP, PANEL, HouseholdParams

Engine = Literal["numba", "numpy"]

try:
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a dependency; the numpy path still works
    HAVE_NUMBA = False


def default_engine() -> Engine:
    """``FLECH_KERNELS`` (numba | numpy); numba when installed otherwise."""
    env = os.environ.get("FLECH_KERNELS", "").strip().lower()
    if env not in ("", "numba", "numpy"):
        raise ValueError(f"FLECH_KERNELS must be 'numba' or 'numpy', got {env!r}")
    if env == "numpy" or not HAVE_NUMBA:
        return "numpy"
    return "numba"


# Rows of the packed parameter matrix (one column per home).
_FIELDS = (
    "heat_type",
    "r",
    "a",
    "oma",
    "p_heat_max",
    "cop_at_7c",
    "t_set",
    "gain_int",
    "solar_ap",
    "kwp",
    "pr",
    "ev_pmax",
    "bat_pmax",
    "eta_c",
    "eta_d",
    "soc_min",
    "soc_max",
    "c",
    "t_min",
    "t_max",
)
(HT, R, A, OMA, PMAX, COP7, TSET, GINT, SAP, KWP, PR, EVP, BATP, ETAC, ETAD, SOCMIN, SOCMAX, C, TMIN, TMAX) = range(
    len(_FIELDS)
)


def pack(p: HouseholdParams) -> np.ndarray:
    """Per-home parameters as one C-contiguous (fields, n) float matrix (heat type as 0/1/2)."""
    return np.ascontiguousarray(np.stack([np.asarray(getattr(p, f), dtype=float) for f in _FIELDS]))


def scalars(p: HouseholdParams) -> np.ndarray:
    return np.array([p.dt_h, p.cop_slope, p.cop_min, p.cop_max])


if HAVE_NUMBA:

    @njit(cache=True, inline="always")
    def _clip(x: float, lo: float, hi: float) -> float:
        # np.clip is minimum(maximum(x, lo), hi)
        return min(max(x, lo), hi)

    @njit(cache=True, inline="always")
    def _powers(P, sc, i, t_out, irr, t_in, rem, soc, base, conn):
        """default_powers for home i: (eta, gains, pv, heat, ev, bat)."""
        dt_h = sc[0]
        ht = P[HT, i]
        if ht == HEAT_PUMP:
            eta = _clip(P[COP7, i] + sc[1] * (t_out - 7.0), sc[2], sc[3])
        elif ht == PANEL:
            eta = 1.0
        else:
            eta = 0.0
        g = P[GINT, i] + P[SAP, i] * (irr * 1e-3)
        pv = P[KWP, i] * P[PR, i] * (irr * 1e-3)
        heat = 0.0
        if eta > 0:
            tt = P[TSET, i]
            t_ss = tt + P[A, i] * (tt - t_in) / P[OMA, i]
            heat = ((t_ss - t_out) / P[R, i] - g) / eta
        heat = _clip(heat, 0.0, P[PMAX, i])
        ev = min(P[EVP, i], rem / dt_h) if conn else 0.0
        hi = _clip((P[SOCMAX, i] - soc) / (P[ETAC, i] * dt_h), 0.0, P[BATP, i])
        lo = -_clip((soc - P[SOCMIN, i]) * P[ETAD, i] / dt_h, 0.0, P[BATP, i])
        bat = _clip(pv - base - heat - ev, lo, hi)
        return eta, g, pv, heat, ev, bat

    @njit(cache=True, inline="always")
    def _advance(P, sc, i, t_out, t_in, rem, soc, eta, g, heat, ev, bat):
        """thermal_step, EV energy and battery_step for home i: (t_in, rem, soc) at the step's end."""
        dt_h = sc[0]
        if P[HT, i] != 0:
            t_ss = t_out + P[R, i] * (eta * heat + g)
            t_new = t_ss + (t_in - t_ss) * P[A, i]
        else:
            t_new = P[TSET, i]
        rem = max(rem - ev * dt_h, 0.0)
        soc = soc + (bat * P[ETAC, i] if bat > 0 else bat / P[ETAD, i]) * dt_h
        return t_new, rem, _clip(soc, P[SOCMIN, i], P[SOCMAX, i])

    @njit(cache=True)
    def _ev_events(rem, conn, arriving, energy, out_rem, out_unmet):
        for i in range(rem.size):
            unmet = 0.0 if conn[i] else rem[i]
            out_unmet[i] = unmet
            out_rem[i] = energy[i] if arriving[i] else rem[i] - unmet

    @njit(cache=True)
    def _default_powers(P, sc, t_out, irr, t_in, rem, soc, base, conn, out):
        for i in range(t_in.size):
            out[0, i], out[1, i], out[2, i], out[3, i], out[4, i], out[5, i] = _powers(
                P, sc, i, t_out, irr, t_in[i], rem[i], soc[i], base[i], conn[i]
            )

    @njit(cache=True)
    def _advance_all(P, sc, t_out, t_in, rem, soc, eta, g, pv, base, heat, ev, bat, net):
        """In place: state to the step's end; net power of the step."""
        for i in range(t_in.size):
            net[i] = base[i] + heat[i] + ev[i] + bat[i] - pv[i]
            t_in[i], rem[i], soc[i] = _advance(
                P, sc, i, t_out, t_in[i], rem[i], soc[i], eta[i], g[i], heat[i], ev[i], bat[i]
            )

    @njit(cache=True)
    def _plain_step(P, sc, t_out, irr, t_in, rem, soc, base, conn, arriving, energy, out, unmet):
        """A step in default operation, home by home: the EV events (_ev_events), default_powers and
        _advance_all fused into one pass. In place: t_in, rem, soc to the step's end; out rows eta, gains, pv,
        heat, ev, battery, net; unmet: kWh of cars that left unmet."""
        for i in range(t_in.size):
            u = 0.0 if conn[i] else rem[i]
            unmet[i] = u
            r = energy[i] if arriving[i] else rem[i] - u
            b = base[i]
            e, g, pv, h, v, bt = _powers(P, sc, i, t_out, irr, t_in[i], r, soc[i], b, conn[i])
            out[0, i], out[1, i], out[2, i], out[3, i], out[4, i], out[5, i] = e, g, pv, h, v, bt
            out[6, i] = b + h + v + bt - pv
            t_in[i], rem[i], soc[i] = _advance(P, sc, i, t_out, t_in[i], r, soc[i], e, g, h, v, bt)

    @njit(cache=True)
    def _simulate(
        P, sc, t0, rem0, soc0, t_out, irr, base, conn, arriving, energy, t_in, eta, heat, ev, rem_end, bat, soc_end, net
    ):
        """simulate_default over K steps (rows) for all homes (columns)."""
        k_steps, n = base.shape
        for i in range(n):
            t_in[0, i] = t0[i]
        for k in range(k_steps):
            to, ir = t_out[k], irr[k]
            for i in range(n):
                t, soc = t_in[k, i], soc0[i] if k == 0 else soc_end[k - 1, i]
                rem = rem0[i] if k == 0 else rem_end[k - 1, i]
                if arriving[k, i]:
                    rem = energy[k, i]
                elif not conn[k, i]:
                    rem = rem - rem
                b = base[k, i]
                e, g, pv, h, v, bt = _powers(P, sc, i, to, ir, t, rem, soc, b, conn[k, i])
                t, rem, soc = _advance(P, sc, i, to, t, rem, soc, e, g, h, v, bt)
                t_in[k + 1, i], eta[k, i], heat[k, i], ev[k, i], rem_end[k, i] = t, e, h, v, rem
                bat[k, i], soc_end[k, i] = bt, soc
                net[k, i] = b + h + v + bt - pv

    @njit(cache=True)
    def _recovery_floor(P, sc, t_out, irr, t_ref, out):
        """physics.recovery_floor: the backward pass over steps, homes inner (rows written contiguously)."""
        k1, n = t_ref.shape
        x = np.empty(n)
        for i in range(n):
            x[i] = P[TMIN, i]
        for k in range(t_out.size - 1, -1, -1):
            to, ir = t_out[k], irr[k]
            for i in range(n):
                tmin = P[TMIN, i]
                if k + 1 < k1:
                    out[k + 1, i] = max(tmin, min(x[i], t_ref[k + 1, i]))
                ht = P[HT, i]
                if ht != 0:
                    eta = _clip(P[COP7, i] + sc[1] * (to - 7.0), sc[2], sc[3]) if ht == HEAT_PUMP else 1.0
                    g = P[GINT, i] + P[SAP, i] * (ir * 1e-3)
                    t_ss = to + P[R, i] * (eta * P[PMAX, i] + g)
                    x[i] = max(tmin, t_ss + (x[i] - t_ss) / P[A, i])
        for i in range(n):
            out[0, i] = max(P[TMIN, i], min(x[i], t_ref[0, i]))

    @njit(cache=True, inline="always")
    def _flex_at(
        P, dt, d, s0, force, j, i, t_in, t_floor, eta, heat, ev, rem_end, conn, dep, bat, soc_end, dv_t, dv_r, dv_s
    ):
        """flex.window_flex of home i for the window of d steps starting at row j (deviations dv_*):
        heat, EV, battery down/up, rebound down/up (DeviceFlex's fields in order)."""
        inf = np.inf
        a, oma_r = P[A, i], P[OMA, i] * P[R, i]
        no_heat = 0.0 if P[HT, i] != 0 else 1.0
        g, decay = 0.0, 1.0
        t_dn = t_up = p_lo = p_sp = inf
        for m in range(1, d + 1):
            sl = j + m - 1
            g = a * g + oma_r * eta[sl, i]
            decay = decay * a
            t = t_in[j + m, i] + decay * dv_t
            inv_g = 1.0 / (g + no_heat)
            t_dn = min(t_dn, (t - t_floor[j + m, i]) * inv_g)
            t_up = min(t_up, (P[TMAX, i] - t) * inv_g)
            p_lo = min(p_lo, heat[sl, i])
            p_sp = min(p_sp, P[PMAX, i] - heat[sl, i])
        heat_dn = max(p_lo if force else min(p_lo, t_dn), 0.0)
        heat_up = max(p_sp if force else min(p_sp, t_up), 0.0)
        heat_kwh = g * P[C, i] / (eta[j + d - 1, i] + no_heat)
        ok = True
        dep0 = dep[j, i]
        e_lo = e_sp = inf
        for m in range(d):
            sl = j + m
            ok = ok and conn[sl, i] and dep[sl, i] == dep0
            e_lo = min(e_lo, ev[sl, i])
            e_sp = min(e_sp, P[EVP, i] - ev[sl, i])
        rem_after = rem_end[j + d - 1, i] + dv_r
        steps_left = float(dep0 - (s0 + j + d))
        slack = (P[EVP, i] * dt * steps_left - rem_after) / (d * dt)
        ev_dn = max(e_lo if force else min(e_lo, slack), 0.0) if ok else 0.0
        ev_up = max(min(e_sp, rem_after / (d * dt)), 0.0) if ok else 0.0
        b_dn = b_up = s_dn = s_up = inf
        for m in range(1, d + 1):
            sl = j + m - 1
            b_dn = min(b_dn, bat[sl, i] + P[BATP, i])
            b_up = min(b_up, P[BATP, i] - bat[sl, i])
            soc = soc_end[sl, i] + dv_s
            s_dn = min(s_dn, (soc - P[SOCMIN, i]) * P[ETAD, i] / (m * dt))
            s_up = min(s_up, (P[SOCMAX, i] - soc) * P[ETAD, i] / (m * dt))
        bat_dn = max(min(b_dn, s_dn), 0.0)
        bat_up = max(min(b_up, s_up), 0.0)
        rte = P[ETAC, i] * P[ETAD, i]
        reb_dn = heat_dn * heat_kwh + ev_dn * d * dt + bat_dn * d * dt / rte
        reb_up = heat_up * heat_kwh + ev_up * d * dt + bat_up * d * dt * rte
        return heat_dn, heat_up, ev_dn, ev_up, bat_dn, bat_up, reb_dn, reb_up

    @njit(cache=True, inline="always")
    def _floor_pass(P, sc, j, x, t_out, irr, k_hi, k_lo):
        """recovery_floor's backward pass for heated home j from x over steps k_hi down to k_lo (its operations,
        the parameters held in locals so that the loop reloads none)."""
        tmin, a, r, pmax, gint, sap, cop7 = P[TMIN, j], P[A, j], P[R, j], P[PMAX, j], P[GINT, j], P[SAP, j], P[COP7, j]
        slope, lo, hi = sc[1], sc[2], sc[3]
        pump = P[HT, j] == HEAT_PUMP
        for k in range(k_hi, k_lo - 1, -1):
            to = t_out[k]
            eta = _clip(cop7 + slope * (to - 7.0), lo, hi) if pump else 1.0
            g = gint + sap * (irr[k] * 1e-3)
            t_ss = to + r * (eta * pmax + g)
            x = max(tmin, t_ss + (x - t_ss) / a)
        return x

    @njit(cache=True)
    def _plan_floor(P, sc, t_out, irr, t_ref, horizon, n_rec, out):
        """The recovery floor of plans t_ref (K + 1 rows) whose household j looks ``horizon[j]`` steps ahead
        (rows up to it; the rows after it, and every row when it is K or more, look K ahead), each end
        n_rec steps of recovery further: _recovery_floor over those rows with that end."""
        k1, n = t_ref.shape
        big_k = k1 - 1
        for j in range(n):
            h = horizon[j]
            tmin = P[TMIN, j]
            ht = P[HT, j]
            segs = 2 if h < big_k else 1
            for seg in range(segs):
                if segs == 2 and seg == 0:
                    lo, hi, end = 0, h, h
                else:
                    lo, hi, end = (h + 1 if segs == 2 else 0), big_k, big_k
                x = tmin
                for k in range(end + n_rec - 1, max(lo - 1, 0) - 1, -1):  # row lo is written at k = lo - 1
                    if lo <= k + 1 <= hi:
                        out[k + 1, j] = max(tmin, min(x, t_ref[k + 1, j]))
                    if ht != 0:
                        to, ir = t_out[k], irr[k]
                        eta = _clip(P[COP7, j] + sc[1] * (to - 7.0), sc[2], sc[3]) if ht == HEAT_PUMP else 1.0
                        g = P[GINT, j] + P[SAP, j] * (ir * 1e-3)
                        t_ss = to + P[R, j] * (eta * P[PMAX, j] + g)
                        x = max(tmin, t_ss + (x - t_ss) / P[A, j])
                if lo == 0:
                    out[0, j] = max(tmin, min(x, t_ref[0, j]))

    @njit(cache=True)
    def _cached_floor(P, sc, t_out, irr, t_ref, sel, lo, root, end, n_rec, xs, have, out):
        """_plan_floor's rows lo[q]..end of households sel (columns of t_ref, P and out) whose plans end at row
        ``end``, from the backward passes to that end kept in ``xs`` (row i: the pass's value at row end - i;
        column: the household's root index ``root``; ``have``: rows kept). The pass depends on the household,
        the weather and the end alone, not on the plan, so a kept value is the one a new pass computes; only
        missing rows are computed, continuing the pass from the last kept one."""
        for q in range(sel.size):
            j, h = sel[q], root[q]
            tmin = P[TMIN, j]
            heated = P[HT, j] != 0
            m = have[h]
            if m == 0:
                x = _floor_pass(P, sc, j, tmin, t_out, irr, end + n_rec - 1, end) if heated else tmin
                xs[0, h] = x
                m = 1
            x = xs[m - 1, h]
            while m <= end - lo[q]:
                if heated:
                    x = _floor_pass(P, sc, j, x, t_out, irr, end - m, end - m)
                xs[m, h] = x
                m += 1
            have[h] = m
            for r in range(lo[q], end + 1):
                out[r, j] = max(tmin, min(xs[end - r, h], t_ref[r, j]))

    @njit(cache=True)
    def _window_flex(
        P, dt, d, s0, force, j0, t_in, t_floor, eta, heat, ev, rem_end, conn, dep, bat, soc_end, dev_t, dev_rem,
        dev_soc, out,
    ):  # fmt: skip
        """flex.window_flex for windows starting at j0 (rows of out[0..7])."""
        n = t_in.shape[1]
        for w in range(j0.size):
            j = j0[w]
            for i in range(n):
                (out[0, w, i], out[1, w, i], out[2, w, i], out[3, w, i], out[4, w, i], out[5, w, i], out[6, w, i],
                 out[7, w, i]) = _flex_at(
                    P, dt, d, s0, force, j, i, t_in, t_floor, eta, heat, ev, rem_end, conn, dep, bat, soc_end,
                    dev_t[i], dev_rem[i], dev_soc[i],
                )  # fmt: skip


if HAVE_NUMBA:

    @njit(cache=True, inline="always")
    def _heat_to_reach(P, i, t_in, t_target, t_out, g, eta):
        """physics.heat_to_reach for home i."""
        t_ss = t_target + P[A, i] * (t_target - t_in) / P[OMA, i]
        q = (t_ss - t_out) / P[R, i] - g
        return q / eta if eta > 0 else 0.0

    @njit(cache=True, inline="always")
    def _dispatch_at(
        P, sc, t_out, s, i, t_in, rem, soc, conn, dep, gains, eta, keep, floor, ref_h, ref_e, ref_b, o_h, o_e, o_b,
        ctl, dp_h, dp_e, dp_b, x,
    ):  # fmt: skip
        """The tail of HouseholdFleet._controlled for home i: limits, the powers (heat, EV, battery), achieved,
        short (x: its offset)."""
        dt_h = sc[0]
        pmax = P[PMAX, i]
        e_hi = min(P[EVP, i], rem / dt_h) if conn else 0.0
        h_lo, h_hi, e_lo = 0.0, pmax, 0.0
        if keep:
            h_lo = _clip(_heat_to_reach(P, i, t_in, floor, t_out, gains, eta), 0.0, pmax)
            h_hi = _clip(_heat_to_reach(P, i, t_in, P[TMAX, i], t_out, gains, eta), h_lo, pmax)
            later = P[EVP, i] * dt_h * max(dep - s - 1, 0)
            e_lo = _clip((rem - later) / dt_h, 0.0, e_hi)
        b_hi = _clip((P[SOCMAX, i] - soc) / (P[ETAC, i] * dt_h), 0.0, P[BATP, i])
        b_lo = -_clip((soc - P[SOCMIN, i]) * P[ETAD, i] / dt_h, 0.0, P[BATP, i])
        if ctl:
            h = _clip(ref_h + o_h, h_lo, h_hi)
            v = _clip(ref_e + o_e, e_lo, e_hi)
            b = _clip(ref_b + o_b, b_lo, b_hi)
            ach = (h - ref_h) + (v - ref_e) + (b - ref_b)
        else:
            h, v, b, ach = dp_h, dp_e, dp_b, 0.0
        sign = 1.0 if x > 0 else (-1.0 if x < 0 else x - x)  # np.sign: 0.0 for both zeros
        return h, v, b, ach, max(abs(x) - sign * ach, 0.0)

    @njit(cache=True)
    def _dispatch(
        P, sc, t_out, s, t_in, rem, soc, conn, dep, gains, eta, keep, floor, ref_h, ref_e, ref_b, o_h, o_e, o_b, ctl,
        dp_h, dp_e, dp_b, off, out
    ):  # fmt: skip
        """The tail of HouseholdFleet._controlled, home by home (_dispatch_at)."""
        for i in range(t_in.size):
            out[0, i], out[1, i], out[2, i], out[3, i], out[4, i] = _dispatch_at(
                P, sc, t_out, s, i, t_in[i], rem[i], soc[i], conn[i], dep[i], gains[i], eta[i], keep[i], floor[i],
                ref_h[i], ref_e[i], ref_b[i], o_h[i], o_e[i], o_b[i], ctl[i], dp_h[i], dp_e[i], dp_b[i], off[i],
            )  # fmt: skip


if HAVE_NUMBA:

    @njit(cache=True, inline="always")
    def _split_at(x, heads, i):
        """flex.split_devices of home i's offset x over the tiers of heads (tiers, 8 fields of DeviceFlex, n):
        the signed battery, EV and heating offsets."""
        down = x < 0
        left = abs(x)
        t0 = t1 = t2 = 0.0
        for k in range(heads.shape[0]):
            # battery (fields 4, 5), EV (2, 3), heating (0, 1): storage first, heating last
            take = _clip((heads[k, 4, i] if down else heads[k, 5, i]) - t0, 0.0, left)
            left = left - take
            t0 = t0 + take
            take = _clip((heads[k, 2, i] if down else heads[k, 3, i]) - t1, 0.0, left)
            left = left - take
            t1 = t1 + take
            take = _clip((heads[k, 0, i] if down else heads[k, 1, i]) - t2, 0.0, left)
            left = left - take
            t2 = t2 + take
        return (-t0, -t1, -t2) if down else (t0, t1, t2)

    @njit(cache=True)
    def _split_devices(off, heads, out):
        """flex.split_devices for row 0: heads (tiers, 8 fields of DeviceFlex, n); out rows bat, ev, heat."""
        for i in range(off.size):
            out[0, i], out[1, i], out[2, i] = _split_at(off[i], heads, i)


def split_devices(off: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """flex.split_devices, compiled: ``heads`` (tiers, 8, n) stacks each tier's DeviceFlex fields (row 0);
    rows of the result: battery, EV, heating offsets (signed)."""
    out = np.empty((3, off.size))
    _split_devices(np.ascontiguousarray(off, dtype=float), np.ascontiguousarray(heads, dtype=float), out)
    return out


def dispatch(
    P: np.ndarray,
    sc: np.ndarray,
    t_out: float,
    s: int,
    t_in: np.ndarray,
    rem: np.ndarray,
    soc: np.ndarray,
    ev: EvStep,
    gains: np.ndarray,
    eta: np.ndarray,
    keep: np.ndarray,
    floor: np.ndarray,
    ref: tuple[np.ndarray, np.ndarray, np.ndarray],
    offsets: tuple[np.ndarray, np.ndarray, np.ndarray],
    ctl: np.ndarray,
    default: tuple[np.ndarray, np.ndarray, np.ndarray],
    off: np.ndarray,
) -> np.ndarray:
    """A controlled step's powers, compiled: rows heat, ev, battery, achieved, shortfall.

    The same operations as the numpy path of HouseholdFleet._controlled: heating within the comfort
    limits (``keep``: households not forced; ``floor``: their comfort floor) and its power, EV within
    its deadline and charger, the battery within power and SoC; ``ctl``: households on their plan
    ``ref`` plus ``offsets`` (heat, ev, battery), the others on their ``default`` powers."""
    c = np.ascontiguousarray
    out = np.empty((5, t_in.size))
    _dispatch(
        P, sc, float(t_out), int(s), t_in, rem, soc, ev.connected, c(ev.dep_step), gains, eta, c(keep), c(floor),
        c(ref[0]), c(ref[1]), c(ref[2]), c(offsets[0]), c(offsets[1]), c(offsets[2]), c(ctl),
        default[0], default[1], default[2], c(off), out,
    )  # fmt: skip
    return out


def ev_events(rem: np.ndarray, ev: EvStep) -> tuple[np.ndarray, np.ndarray]:
    """physics.ev_events, compiled."""
    out, unmet = np.empty_like(rem), np.empty_like(rem)
    _ev_events(rem, ev.connected, ev.arriving, ev.energy, out, unmet)
    return out, unmet


def default_powers(
    P: np.ndarray,
    sc: np.ndarray,
    t_out: float,
    irr: float,
    t_in: np.ndarray,
    rem: np.ndarray,
    soc: np.ndarray,
    base: np.ndarray,
    conn: np.ndarray,
) -> np.ndarray:
    """physics.default_powers, compiled: rows eta, gains, pv, heat, ev, bat."""
    out = np.empty((6, t_in.size))
    _default_powers(P, sc, t_out, irr, t_in, rem, soc, base, conn, out)
    return out


def plain_step(
    P: np.ndarray,
    sc: np.ndarray,
    t_out: float,
    irr: float,
    t_in: np.ndarray,
    rem: np.ndarray,
    soc: np.ndarray,
    base: np.ndarray,
    ev: EvStep,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A step in default operation in one compiled pass: :func:`ev_events`, :func:`default_powers` and
    :func:`advance` (the same operations in the same order). Returns (t_in, EV kWh, SoC) at the step's end
    (new arrays; inputs untouched), rows eta, gains, pv, heat, ev, battery, net, and the unmet EV kWh."""
    t, r, s, out, unmet = t_in.copy(), rem.copy(), soc.copy(), np.empty((7, t_in.size)), np.empty(t_in.size)
    c = np.ascontiguousarray
    _plain_step(
        P, sc, float(t_out), float(irr), t, r, s, c(base, dtype=float), c(ev.connected), c(ev.arriving),
        c(ev.energy, dtype=float), out, unmet,
    )  # fmt: skip
    return t, r, s, out, unmet


def advance(
    P: np.ndarray,
    sc: np.ndarray,
    t_out: float,
    t_in: np.ndarray,
    rem: np.ndarray,
    soc: np.ndarray,
    dp: np.ndarray,
    base: np.ndarray,
    heat: np.ndarray,
    ev: np.ndarray,
    bat: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t_in, rem, soc, net) after a step with powers heat/ev/bat (new arrays; inputs untouched)."""
    t, r, s, net = t_in.copy(), rem.copy(), soc.copy(), np.empty(t_in.size)
    _advance_all(P, sc, t_out, t, r, s, dp[0], dp[1], dp[2], base, heat, ev, bat, net)
    return t, r, s, net


def simulate_default(
    P: np.ndarray,
    sc: np.ndarray,
    t0: np.ndarray,
    rem0: np.ndarray,
    soc0: np.ndarray,
    t_out: np.ndarray,
    irr: np.ndarray,
    base: np.ndarray,
    conn: np.ndarray,
    dep: np.ndarray,
    arriving: np.ndarray,
    energy: np.ndarray,
) -> Trajectory:
    """physics.simulate_default, compiled, on inputs given as (K,) weather and (K, n) home arrays."""
    k, n = base.shape
    t_in = np.empty((k + 1, n))
    eta, heat, ev, rem_end, bat, soc_end, net = (np.empty((k, n)) for _ in range(7))
    _simulate(
        P, sc, t0, rem0, soc0, t_out, irr, base, conn, arriving, energy, t_in, eta, heat, ev, rem_end, bat, soc_end, net
    )
    return Trajectory(t_in, eta, heat, ev, rem_end, conn, dep, bat, soc_end, net)


def recovery_floor(P: np.ndarray, sc: np.ndarray, t_out: np.ndarray, irr: np.ndarray, t_ref: np.ndarray) -> np.ndarray:
    """physics.recovery_floor, compiled; P = pack() of the households of ``t_ref``'s columns."""
    if t_out.size < t_ref.shape[0] - 1:
        raise ValueError(f"recovery needs at least {t_ref.shape[0] - 1} steps of weather, got {t_out.size}")
    out = np.empty_like(t_ref)
    _recovery_floor(P, sc, np.ascontiguousarray(t_out, float), np.ascontiguousarray(irr, float), t_ref, out)
    return out


def plan_floor(
    P: np.ndarray,
    sc: np.ndarray,
    t_out: np.ndarray,
    irr: np.ndarray,
    t_ref: np.ndarray,
    horizon: np.ndarray,
    n_rec: int,
) -> np.ndarray:
    """The recovery floors of the plans ``t_ref`` (K + 1 rows; P = pack() of their households), each
    household's first rows up to its ``horizon`` looking that far ahead and the others K ahead, with
    ``n_rec`` steps of recovery past each end (``t_out``, ``irr``: weather of K + n_rec steps from the plans'
    first step): per household what recovery_floor gives over those rows. :class:`FloorCache` gives the same
    values, reusing the backward passes."""
    k1 = t_ref.shape[0]
    if t_out.size < k1 - 1 + n_rec:
        raise ValueError(f"the floors need {k1 - 1 + n_rec} steps of weather, got {t_out.size}")
    out = np.empty_like(t_ref)
    c = np.ascontiguousarray
    _plan_floor(P, sc, c(t_out, float), c(irr, float), c(t_ref), c(horizon, dtype=np.int64), int(n_rec), out)
    return out


class FloorCache:
    """The backward passes of plan floors (:func:`plan_floor`), kept by the absolute step a plan ends at and
    shared by a fleet and its forecast copies (issue 12).

    Why: a floor row is ``max(T_min, min(x, plan))`` where ``x`` comes from a backward pass of ``n_rec`` +
    steps from the plan's end that depends on the household, the forecast weather and that end alone. Every
    roll-out of every bid request re-planned its homes and re-ran that ~100-step pass for each, though the
    commitments' ends, and so the passes, are the same in each copy and from step to step. Kept here, a
    home's pass to an end is run once; a later plan ending there takes its values (the same floats: the
    same operations on the same values) and only extends the pass to rows not kept yet.

    ``n_root``: the households of the root fleet (columns are its indices); at most ``max_cells`` values are
    kept (the least recently used ends go first)."""

    def __init__(self, n_root: int, max_cells: int = 1 << 23) -> None:
        self.n_root, self.max_cells = int(n_root), int(max_cells)
        # (end step, steps of recovery past it) -> (passes, rows kept per home)
        self._ends: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _entry(self, end: tuple[int, int], rows: int) -> tuple[np.ndarray, np.ndarray]:
        """The passes to ``end`` with room for ``rows`` rows (grown as needed; the oldest ends dropped)."""
        got = self._ends.pop(end, None)  # (re)inserted last: the ends dropped first are the least used
        if got is not None and got[0].shape[0] >= rows:
            self._ends[end] = got
            return got
        cap = max(rows, 2 * got[0].shape[0]) if got is not None else max(rows, 2)
        xs, have = np.empty((cap, self.n_root)), np.zeros(self.n_root, dtype=np.int64)
        if got is not None:
            xs[: got[0].shape[0]] = got[0]
            have = got[1]
        cells = cap * self.n_root
        while self._ends and cells + sum(x.size for x, _ in self._ends.values()) > self.max_cells:
            self._ends.pop(next(iter(self._ends)))
        self._ends[end] = (xs, have)
        return xs, have

    def drop_before(self, step: int) -> None:
        """Forget the passes to ends before ``step``: no plan from ``step`` on ends there (the root fleet calls
        this as it steps; its copies start where it is)."""
        for end in [e for e in self._ends if e[0] < step]:
            del self._ends[end]

    def floors(
        self,
        P: np.ndarray,
        sc: np.ndarray,
        t_out: np.ndarray,
        irr: np.ndarray,
        t_ref: np.ndarray,
        horizon: np.ndarray,
        n_rec: int,
        s: int,
        root: np.ndarray,
    ) -> np.ndarray:
        """:func:`plan_floor` of plans starting at step ``s`` of households ``root`` (root indices, the
        columns of ``t_ref`` and P)."""
        k1, n = t_ref.shape
        big_k = k1 - 1
        if t_out.size < big_k + n_rec:
            raise ValueError(f"the floors need {big_k + n_rec} steps of weather, got {t_out.size}")
        out = np.empty_like(t_ref)
        if not n:
            return out
        c = np.ascontiguousarray
        t_out, irr, t_ref = c(t_out, float), c(irr, float), c(t_ref)
        horizon = np.asarray(horizon, dtype=np.int64)
        short = horizon < big_k
        segments = [(big_k, np.arange(n), np.where(short, horizon + 1, 0))]
        if short.any():
            for e in np.unique(horizon[short]).tolist():
                sel = np.flatnonzero(horizon == e)
                segments.append((e, sel, np.zeros(sel.size, dtype=np.int64)))
        for e, sel, lo in segments:
            xs, have = self._entry((s + e, int(n_rec)), e - int(lo.min()) + 1)
            _cached_floor(P, sc, t_out, irr, t_ref, sel, lo, c(root[sel]), e, int(n_rec), xs, have, out)
        return out


def window_flex(
    P: np.ndarray,
    sc: np.ndarray,
    tr: Trajectory,
    d: int,
    s0: int,
    dev: Deviation | None = None,
    force: bool = False,
    starts: np.ndarray | None = None,
) -> DeviceFlex:
    """flex.window_flex, compiled; P = pack() of the trajectory's households."""
    return DeviceFlex(*window_flex_array(P, sc, tr, d, s0, dev, force, starts))


def window_flex_array(
    P: np.ndarray,
    sc: np.ndarray,
    tr: Trajectory,
    d: int,
    s0: int,
    dev: Deviation | None = None,
    force: bool = False,
    starts: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`window_flex` as one (8, windows, n) array, its fields in DeviceFlex's order."""
    k_steps = tr.heat.shape[0]
    if not 1 <= d <= k_steps:
        raise ValueError(f"duration {d} must be within 1..{k_steps}")
    j0 = np.arange(k_steps - d + 1) if starts is None else np.asarray(starts, dtype=np.int64)
    if starts is not None and j0.size and (j0.min() < 0 or j0.max() > k_steps - d):
        raise ValueError(f"window starts must be within 0..{k_steps - d}")
    n = tr.heat.shape[1]
    z = np.zeros(n)
    dev = dev or Deviation(z, z, z)
    out = np.empty((8, j0.size, n))
    dv = [np.ascontiguousarray(x, dtype=float) for x in (dev.t_in, dev.ev_rem, dev.soc)]
    floor = np.ascontiguousarray(np.broadcast_to(P[TMIN], tr.t_in.shape) if tr.t_floor is None else tr.t_floor)
    _window_flex(
        P,
        float(sc[0]),
        int(d),
        int(s0),
        bool(force),
        j0.astype(np.int64),
        tr.t_in,
        floor,
        tr.eta,
        tr.heat,
        tr.ev,
        tr.ev_rem_end,
        tr.conn,
        tr.dep,
        tr.bat,
        tr.soc_end,
        dv[0],
        dv[1],
        dv[2],
        out,
    )
    return out


if HAVE_NUMBA:

    @njit(cache=True, inline="always")
    def _bincount(values, group, n_groups):
        # np.bincount(group, values, n_groups): sequential sums in household order, from 0.0
        out = np.zeros(n_groups)
        for i in range(values.size):
            out[group[i]] += values[i]
        return out

    @njit(cache=True)
    def _allocate(head, group, need, prev, greedy, segment, has_segment):
        """flex.allocate, the same operations in the same order (see there)."""
        n, n_groups = head.size, need.size
        out = np.empty(n)
        if not greedy:
            tot = _bincount(head, group, n_groups)
            for i in range(n):
                k = group[i]
                frac = need[k] / tot[k] if tot[k] > 0 else 0.0
                out[i] = head[i] * min(frac, 1.0)
            return out
        keep = np.empty(n)
        for i in range(n):
            keep[i] = min(prev[i], head[i])
        ksum = _bincount(keep, group, n_groups)
        for i in range(n):
            k = group[i]
            keep[i] = keep[i] * (need[k] / ksum[k] if ksum[k] > need[k] else 1.0)
        kb = _bincount(keep, group, n_groups)
        rest = np.empty(n_groups)
        for k in range(n_groups):
            rest[k] = max(need[k] - kb[k], 0.0)
        neg = np.empty(n)
        for i in range(n):
            neg[i] = -max(head[i] - keep[i], 0.0)
        # np.lexsort((-extra, prev <= 0, group)): a stable sort on -extra, then a stable counting sort
        # on (group, prev <= 0), which keeps ties in the first order: the same permutation.
        by_extra = np.argsort(neg, kind="mergesort")
        count = np.zeros(2 * n_groups + 1, dtype=np.int64)
        for i in range(n):
            count[2 * group[i] + (1 if prev[i] <= 0 else 0) + 1] += 1
        for j in range(2 * n_groups):
            count[j + 1] += count[j]
        order = np.empty(n, dtype=np.int64)
        for i in by_extra:
            key = 2 * group[i] + (1 if prev[i] <= 0 else 0)
            order[count[key]] = i
            count[key] += 1
        # cumsum of the sorted extras, restarted at each segment; a group's base: the running sum at the
        # end of the previous group in its segment (0 for a segment's or the array's first group).
        cs = 0.0
        gb = 0.0
        for j in range(n):
            i = order[j]
            h = -neg[i]
            start = j == 0 or (has_segment and segment[i] != segment[order[j - 1]])
            if j == 0 or group[i] != group[order[j - 1]]:
                gb = 0.0 if start else cs
            cs = h if start else cs + h
            out[i] = keep[i] + _clip(rest[group[i]] - (cs - h - gb), 0.0, h)
        return out

    @njit(cache=True)
    def _allocate_layers(heads, durs, sgn, layers, layer_dur, used, group, prev_off, greedy, segment, has_segment):
        """The layer loop of HouseholdFleet._controlled (group targets), the same operations in order."""
        n, n_groups = group.size, sgn.size
        n_tiers, n_durs, n_layers = heads.shape[0], heads.shape[1], layers.shape[0]
        sign = np.empty(n)
        prev = np.empty(n)
        for i in range(n):
            sign[i] = sgn[group[i]]
            x = prev_off[i]
            sp = 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
            prev[i] = abs(x) if sp == sign[i] else 0.0
        levels = np.empty((n_layers, n_groups))
        for k in range(n_groups):
            c = layers[0, k]
            for lvl in range(n_layers):
                if lvl:
                    c = c + layers[lvl, k]
                levels[lvl, k] = max(sgn[k] * c, 0.0)
        amount = np.zeros(n)
        signed = np.empty((n_durs, n))
        head = np.empty(n)
        pv = np.empty(n)
        need = np.empty(n_groups)
        for t in range(n_tiers):
            for d in range(n_durs):
                f = heads[t, d]
                for i in range(n):
                    if sign[i] < 0:
                        signed[d, i] = f[0, i] + f[2, i] + f[4, i]  # DeviceFlex.down
                    elif sign[i] > 0:
                        signed[d, i] = f[1, i] + f[3, i] + f[5, i]  # .up
                    else:
                        signed[d, i] = 0.0
            for lvl in range(n_layers):
                for i in range(n):
                    v = 0.0  # _select: 0 for a duration without headroom
                    ld = layer_dur[lvl, group[i]]
                    for d in range(n_durs):
                        if durs[d] == ld:
                            v = signed[d, i]
                    head[i] = max(v - amount[i], 0.0)
                    pv[i] = max(prev[i] - amount[i], 0.0)
                got = _bincount(amount, group, n_groups)
                for k in range(n_groups):
                    need[k] = max(levels[lvl, k] - got[k], 0.0) if used[lvl, k] else 0.0
                add = _allocate(head, group, need, pv, greedy, segment, has_segment)
                for i in range(n):
                    amount[i] += add[i]
        # A layer against the others: the long commitment's share scaled down to the net change.
        last = n_layers - 1
        over = np.zeros(n_groups, dtype=np.bool_)
        for k in range(n_groups):
            m = levels[0, k]
            for lvl in range(1, n_layers):
                m = max(m, levels[lvl, k])
            over[k] = m > levels[last, k]
        if over.any():
            tot = _bincount(amount, group, n_groups)
            for i in range(n):
                k = group[i]
                if over[k] and tot[k] > levels[last, k]:
                    amount[i] = amount[i] * (levels[last, k] / tot[k])
        off = np.empty(n)
        for i in range(n):
            off[i] = sign[i] * amount[i]
        return off


if HAVE_NUMBA:

    @njit(cache=True)
    def _headroom(
        P, dt, durs, s0, force, tiers, act, t_now, rem_now, soc_now, tw_t, tw_rem, tw_soc, t_in, t_floor, eta, heat,
        ev, rem_end, conn, dep, bat, soc_end, out,
    ):  # fmt: skip
        """HouseholdFleet._headroom of every duration at once, for the households act (columns of the plans and
        of P): out[0] the comfort-respecting tier, out[1] (tiers == 2) the forced one where force, else the same.
        Deviations: the actual state (t_now, rem_now, soc_now: the fleet's) less the plans' start (tw_*)."""
        for i in range(act.size):
            h = act[i]
            dv_t, dv_r, dv_s = t_now[h] - tw_t[i], rem_now[h] - tw_rem[i], soc_now[h] - tw_soc[i]
            for k in range(durs.size):
                d = durs[k]
                for t in range(tiers):
                    if t == 0 or force[i]:  # the forced tier is the comfort one where the household is not forced
                        f = _flex_at(
                            P, dt, d, s0, t == 1, 0, i, t_in, t_floor, eta, heat, ev, rem_end, conn, dep, bat,
                            soc_end, dv_t, dv_r, dv_s,
                        )  # fmt: skip
                    for x in range(8):
                        out[t, k, x, i] = f[x]

    @njit(cache=True)
    def _controlled_tail(
        P, sc, t_out, s, t_in, rem, soc, conn, dep, gains, eta, keep, dp_h, dp_e, dp_b, group, free, asked,
        act, heads, durs, shortest, floor, ref_h, ref_e, ref_b, sgn, layers, layer_dur, used, prev_off, greedy,
        segment, has_segment, out, exact,
    ):  # fmt: skip
        """The rest of a group-target step after the headroom, for households act (heads: (tiers, durations,
        8, act), from _headroom): the layers' allocation over act alone (the others have no headroom, and
        zeros change no sum nor any other household's place in the greedy order), each household's split
        over its devices on the headroom of its shortest commitment (_pick), and the dispatch of every
        household. ``floor``, ``ref_*``: its plan's floor after one step and first powers, per household
        of act. Rows of out: heat, EV, battery, allocated, achieved, shortfall, the event it is in after
        this step; exact: per household of act, free and not in control (see HouseholdFleet._plans)."""
        n, na, n_tiers = t_in.size, act.size, heads.shape[0]
        g_act = np.empty(na, dtype=np.int64)
        p_act = np.empty(na)
        s_act = np.zeros(na if has_segment else 1, dtype=np.int64)
        for j in range(na):
            g_act[j] = group[act[j]]
            p_act[j] = prev_off[act[j]]
            if has_segment:
                s_act[j] = segment[act[j]]
        off_act = _allocate_layers(heads, durs, sgn, layers, layer_dur, used, g_act, p_act, greedy, s_act, has_segment)
        picked = np.zeros((n_tiers, 8, na))
        for j in range(na):
            for k in range(durs.size):
                if durs[k] == shortest[j]:
                    for t in range(n_tiers):
                        for x in range(8):
                            picked[t, x, j] = heads[t, k, x, j]
        pos = np.full(n, -1, dtype=np.int64)
        for j in range(na):
            pos[act[j]] = j
        for i in range(n):
            j = pos[i]
            if j >= 0:
                x = off_act[j]
                o_b, o_e, o_h = _split_at(x, picked, j)
                fl, rh, re, rb = floor[j], ref_h[j], ref_e[j], ref_b[j]
            else:
                x = sgn[group[i]] * 0.0  # as the allocation over every household gives it
                o_b = o_e = o_h = 0.0
                fl, rh, re, rb = P[TMIN, i], 0.0, 0.0, 0.0
            ctl = x != 0 or (not free[i] and asked[i] != 0)
            out[0, i], out[1, i], out[2, i], out[4, i], out[5, i] = _dispatch_at(
                P, sc, t_out, s, i, t_in[i], rem[i], soc[i], conn[i], dep[i], gains[i], eta[i], keep[i], fl,
                rh, re, rb, o_h, o_e, o_b, ctl, dp_h[i], dp_e[i], dp_b[i], x,
            )  # fmt: skip
            out[3, i] = x
            out[6, i] = asked[i] if ctl else 0.0
            if j >= 0:
                exact[j] = free[i] and not ctl


if HAVE_NUMBA:

    @njit(cache=True)
    def _order_layers(layers, layer_dur, target, no_duration):
        """HouseholdFleet's order of a step's layers (see order_layers), the same comparisons."""
        n_layers, n_groups = layers.shape
        used = np.empty((n_layers, n_groups), dtype=np.bool_)
        rank = 0
        for g in range(n_groups):
            m = 0
            for lvl in range(n_layers):
                used[lvl, g] = layers[lvl, g] != 0 and target[g] != 0
                m += used[lvl, g]
            rank = max(rank, m)
        rank = max(rank, 1)
        lay = np.empty((rank, n_groups))
        dur = np.empty((rank, n_groups), dtype=np.int64)
        use = np.empty((rank, n_groups), dtype=np.bool_)
        shortest = np.empty(n_groups, dtype=np.int64)
        longest = np.empty(n_groups, dtype=np.int64)
        order = np.empty(n_layers, dtype=np.int64)
        key = np.empty(n_layers, dtype=np.int64)
        found = np.empty(n_layers * n_groups, dtype=np.int64)
        n_found = 0
        for g in range(n_groups):
            for lvl in range(n_layers):  # a stable insertion sort on (-duration if used else 1)
                key[lvl] = -layer_dur[lvl, g] if used[lvl, g] else 1
                j = lvl
                while j > 0 and key[order[j - 1]] > key[lvl]:
                    order[j] = order[j - 1]
                    j -= 1
                order[j] = lvl
            lo, hi = no_duration, 0
            for r in range(rank):
                lvl = order[r]
                lay[r, g], dur[r, g], use[r, g] = layers[lvl, g], layer_dur[lvl, g], used[lvl, g]
                if used[lvl, g]:
                    d = layer_dur[lvl, g]
                    lo, hi = min(lo, d), max(hi, d)
                    new = True
                    for f in range(n_found):
                        new = new and found[f] != d
                    if new:
                        found[n_found] = d
                        n_found += 1
            shortest[g] = lo if target[g] != 0 else 1
            longest[g] = hi
        needed = np.sort(found[:n_found]) if n_found else np.ones(1, dtype=np.int64)
        return lay, dur, use, needed, shortest, longest

    @njit(cache=True)
    def _start_twins(in_event, asked, t_in, rem, soc, tw_t, tw_rem, tw_soc, conn, arriving, energy, free, out):
        """HouseholdFleet._controlled's fresh reference plans: households not in control last step, or asked
        now for the opposite change, start their twins from their actual state; the others' twins take this
        step's EV events (ev_events)."""
        for i in range(t_in.size):
            e = in_event[i]
            f = e == 0 or e != asked[i]
            free[i] = f
            if f:
                out[0, i], out[1, i], out[2, i] = t_in[i], rem[i], soc[i]
            else:
                r = tw_rem[i]
                unmet = 0.0 if conn[i] else r
                out[0, i], out[1, i], out[2, i] = tw_t[i], energy[i] if arriving[i] else r - unmet, tw_soc[i]


def order_layers(
    layers: np.ndarray, layer_dur: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A group-target step's layers (layers, groups) sorted as HouseholdFleet._controlled allocates them, compiled
    (fleet.order_layers is the numpy reference): (layers, durations, used, distinct durations used (or [1]),
    per group its shortest and longest used duration)."""
    c = np.ascontiguousarray
    return _order_layers(
        c(layers, dtype=float), c(layer_dur, dtype=np.int64), c(target, dtype=float), np.iinfo(np.int64).max
    )


def start_twins(
    in_event: np.ndarray,
    asked: np.ndarray,
    state: tuple[np.ndarray, np.ndarray, np.ndarray],
    twins: tuple[np.ndarray, np.ndarray, np.ndarray],
    ev: EvStep,
) -> tuple[np.ndarray, np.ndarray]:
    """(free, twins' state t_in/EV kWh/SoC as rows) at the start of a controlled step, compiled; see _start_twins."""
    n = state[0].size
    free, out = np.empty(n, dtype=np.bool_), np.empty((3, n))
    c = np.ascontiguousarray
    _start_twins(
        c(in_event, dtype=float), c(asked, dtype=float), *state, *twins, ev.connected, ev.arriving, ev.energy, free,
        out,
    )  # fmt: skip
    return free, out


def headroom(
    P: np.ndarray,
    sc: np.ndarray,
    tr: Trajectory,
    durations: np.ndarray,
    s0: int,
    force: np.ndarray | None,
    act: np.ndarray,
    state: tuple[np.ndarray, np.ndarray, np.ndarray],
    start: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Headroom of the households ``act`` (the plans ``tr``'s columns, P = pack() of them) over each of
    ``durations`` steps from now, as (tiers, durations, 8, act): DeviceFlex's fields of window_flex with the
    deviation of the fleet's ``state`` (t_in, EV kWh, SoC) from the plans' ``start``; tier 1 (when ``force``,
    per household of act, is given) forced where ``force``."""
    durs = np.ascontiguousarray(durations, dtype=np.int64)
    if durs.size and not 1 <= durs.min() <= durs.max() <= tr.heat.shape[0]:
        raise ValueError(f"durations must be within 1..{tr.heat.shape[0]}")
    if tr.t_floor is None:
        raise ValueError("the plans need their floor")
    tiers = 1 if force is None else 2
    f = np.zeros(act.size, dtype=np.bool_) if force is None else np.ascontiguousarray(force, dtype=np.bool_)
    out = np.empty((tiers, durs.size, 8, act.size))
    c = np.ascontiguousarray
    _headroom(  # type: ignore[call-arg]
        P, float(sc[0]), durs, int(s0), f, tiers, c(act, dtype=np.int64), *state, *(c(x) for x in start),
        c(tr.t_in), c(tr.t_floor), c(tr.eta), c(tr.heat), c(tr.ev), c(tr.ev_rem_end), c(tr.conn), c(tr.dep),
        c(tr.bat), c(tr.soc_end), out,
    )  # fmt: skip
    return out


def controlled_tail(
    P: np.ndarray,
    sc: np.ndarray,
    t_out: float,
    s: int,
    state: tuple[np.ndarray, np.ndarray, np.ndarray],
    ev: EvStep,
    gains: np.ndarray,
    eta: np.ndarray,
    keep: np.ndarray,
    default: tuple[np.ndarray, np.ndarray, np.ndarray],
    group: np.ndarray,
    free: np.ndarray,
    asked: np.ndarray,
    act: np.ndarray,
    heads: np.ndarray,
    durations: np.ndarray,
    shortest: np.ndarray,
    tr: Trajectory,
    sign: np.ndarray,
    layers: np.ndarray,
    layer_dur: np.ndarray,
    used: np.ndarray,
    prev_off: np.ndarray,
    mode: Literal["greedy", "proportional"],
    segment: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """A group-target step after its headroom ``heads`` (from :func:`headroom`), compiled: allocation of the
    layers (as :func:`allocate_layers`), the split over devices on each household's shortest commitment
    (``shortest``, per household of ``act``) and the dispatch of every household (as :func:`dispatch`, the
    plans ``tr`` of ``act`` as reference). Returns rows heat, EV, battery, allocated, achieved, shortfall,
    event direction after the step (all households), and per household of ``act`` whether it was free and
    stays out of control."""
    if mode not in ("greedy", "proportional"):
        raise ValueError(f"unknown allocation {mode!r}")
    c = np.ascontiguousarray
    n = state[0].size
    out = np.empty((7, n))
    exact = np.zeros(act.size, dtype=np.bool_)
    assert tr.t_floor is not None
    floor = tr.t_floor[1] if tr.t_floor.shape[0] > 1 else np.empty(act.size)
    seg = np.zeros(1, dtype=np.int64) if segment is None else c(segment, dtype=np.int64)
    _controlled_tail(
        P, sc, float(t_out), int(s), *state, ev.connected, c(ev.dep_step), gains, eta, c(keep), *default,
        c(group, dtype=np.int64), c(free), c(asked, dtype=float), c(act, dtype=np.int64), c(heads),
        c(durations, dtype=np.int64), c(shortest, dtype=np.int64), c(floor), c(tr.heat[0]), c(tr.ev[0]),
        c(tr.bat[0]), c(sign, dtype=float), c(layers, dtype=float), c(layer_dur, dtype=np.int64),
        c(used, dtype=np.bool_), c(prev_off, dtype=float), mode == "greedy", seg, segment is not None, out, exact,
    )  # fmt: skip
    return out, exact


def allocate(
    head: np.ndarray,
    group: np.ndarray,
    need: np.ndarray,
    prev: np.ndarray,
    mode: Literal["greedy", "proportional"] = "greedy",
    segment: np.ndarray | None = None,
) -> np.ndarray:
    """flex.allocate, compiled (the same result bit for bit, up to the sign of a zero)."""
    if mode not in ("greedy", "proportional"):
        raise ValueError(f"unknown allocation {mode!r}")
    c = np.ascontiguousarray
    seg = np.zeros(1, dtype=np.int64) if segment is None else c(segment, dtype=np.int64)
    return _allocate(
        c(head, dtype=float), c(group, dtype=np.int64), c(need, dtype=float), c(prev, dtype=float),
        mode == "greedy", seg, segment is not None,
    )  # fmt: skip


def allocate_layers(
    heads: np.ndarray,
    durations: np.ndarray,
    sign: np.ndarray,
    layers: np.ndarray,
    layer_dur: np.ndarray,
    used: np.ndarray,
    group: np.ndarray,
    prev_off: np.ndarray,
    mode: Literal["greedy", "proportional"],
    segment: np.ndarray | None,
) -> np.ndarray:
    """The greedy/proportional allocation of a group-target step's layers (HouseholdFleet._controlled),
    compiled: per household the signed offset (kW). ``heads`` (tiers, durations, 6, n): each tier's
    DeviceFlex fields heat/EV/battery down/up (row 0) per duration of ``durations``; ``sign``: per
    group, the sign of its net target; ``layers``, ``layer_dur``, ``used`` (layers, groups): the
    targets longest first, their durations, which carry a change; ``prev_off``: last step's offsets;
    ``segment``: the owners of a shared copy (see flex.allocate)."""
    if mode not in ("greedy", "proportional"):
        raise ValueError(f"unknown allocation {mode!r}")
    c = np.ascontiguousarray
    seg = np.zeros(1, dtype=np.int64) if segment is None else c(segment, dtype=np.int64)
    return _allocate_layers(
        c(heads, dtype=float), c(durations, dtype=np.int64), c(sign, dtype=float), c(layers, dtype=float),
        c(layer_dur, dtype=np.int64), c(used, dtype=np.bool_), c(group, dtype=np.int64), c(prev_off, dtype=float),
        mode == "greedy", seg, segment is not None,
    )  # fmt: skip
