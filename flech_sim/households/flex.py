"""Flexibility of households along a default trajectory, and allocating requests to them.

Flexibility of a window of d steps = the largest *constant* change of a device's
power (vs its default trajectory) that can be held for all d steps without
leaving the comfort band, missing the EV deadline or breaking SoC limits. The
thermal model is linear, so with G_m = sum of step responses
(G_m = a·G_{m-1} + (1-a)·R·eta_m) a change r moves the temperature by -r·G_m after
m steps, and the bound is exact (not a heuristic) for heating; EV is exact too;
the battery bound is conservative (efficiency losses taken at their worst).
The heating floor is the trajectory's recovery floor (physics.recovery_floor), not T_min: a home may
only give what leaves it able to stay in its band after release on its own heater.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from .physics import Trajectory
from .population import HouseholdParams

_INF = np.inf


@dataclass(frozen=True)
class Deviation:
    """Actual minus reference state at the window start (non-zero inside an event)."""

    t_in: np.ndarray
    ev_rem: np.ndarray
    soc: np.ndarray


@dataclass(frozen=True)
class DeviceFlex:
    """Sustainable kW changes (>= 0) by window start (rows) and household (columns)."""

    heat_down: np.ndarray
    heat_up: np.ndarray
    ev_down: np.ndarray
    ev_up: np.ndarray
    bat_down: np.ndarray
    bat_up: np.ndarray
    rebound_down: np.ndarray  # kWh drawn extra after a full down window (recovering heat/EV/SoC)
    rebound_up: np.ndarray  # kWh not drawn after a full up window

    @property
    def down(self) -> np.ndarray:
        return self.heat_down + self.ev_down + self.bat_down

    @property
    def up(self) -> np.ndarray:
        return self.heat_up + self.ev_up + self.bat_up


def window_flex(
    p: HouseholdParams,
    tr: Trajectory,
    d: int,
    s0: int,
    dev: Deviation | None = None,
    force: bool = False,
    starts: np.ndarray | None = None,
) -> DeviceFlex:
    """Flex for every window [j, j+d) that fits in `tr` (j = 0..K-d), as arrays (K-d+1, n).

    `force` drops comfort and EV-deadline limits (physical power/SoC limits stay).
    `starts`: only these window starts (rows of the result, in that order). The cost is
    O(d x windows x n), so a caller that needs one long window asks for just that one.
    """
    k_steps = tr.heat.shape[0]
    if not 1 <= d <= k_steps:
        raise ValueError(f"duration {d} must be within 1..{k_steps}")
    dt = p.dt_h
    if starts is None:
        w = k_steps - d + 1
        j0 = np.arange(w)

        def at(off: int) -> slice | np.ndarray:
            return slice(off, off + w)
    else:
        j0 = np.asarray(starts, dtype=np.int64)
        if j0.size and (j0.min() < 0 or j0.max() > k_steps - d):
            raise ValueError(f"window starts must be within 0..{k_steps - d}")
        w = j0.size

        def at(off: int) -> slice | np.ndarray:
            return j0 + off

    z = np.zeros(p.n)
    dev = dev or Deviation(z, z, z)
    # Heating: temperature bounds along the window, and 0 <= P_ref - r, P_ref + r <= Pmax.
    # G > 0 exactly for heated households; others get G + 1 (finite) and zero power headroom.
    no_heat = (~p.has_heat).astype(float)
    g = np.zeros((w, p.n))
    decay = np.ones(p.n)
    t_dn = t_up = p_lo = p_sp = np.full((w, p.n), _INF)
    for m in range(1, d + 1):
        sl = at(m - 1)
        g = p.a * g + p.oma * p.r * tr.eta[sl]
        decay = decay * p.a
        t = tr.t_in[at(m)] + decay * dev.t_in
        inv_g = 1.0 / (g + no_heat)
        t_dn = np.minimum(t_dn, (t - (p.t_min if tr.t_floor is None else tr.t_floor[at(m)])) * inv_g)
        t_up = np.minimum(t_up, (p.t_max - t) * inv_g)
        p_lo = np.minimum(p_lo, tr.heat[sl])
        p_sp = np.minimum(p_sp, p.p_heat_max - tr.heat[sl])
    heat_dn = np.maximum(p_lo if force else np.minimum(p_lo, t_dn), 0.0)
    heat_up = np.maximum(p_sp if force else np.minimum(p_sp, t_up), 0.0)
    heat_kwh = g * p.c / (tr.eta[at(d - 1)] + no_heat)  # electric kWh per kW of change
    # EV: plugged in through the window (same session); energy still deliverable by departure.
    ok = np.ones((w, p.n), bool)
    dep0 = tr.dep[at(0)]
    e_lo = e_sp = np.full((w, p.n), _INF)
    for m in range(d):
        sl = at(m)
        ok &= tr.conn[sl] & (tr.dep[sl] == dep0)
        e_lo = np.minimum(e_lo, tr.ev[sl])
        e_sp = np.minimum(e_sp, p.ev_pmax - tr.ev[sl])
    rem_after = tr.ev_rem_end[at(d - 1)] + dev.ev_rem
    steps_left = dep0 - (s0 + j0[:, None] + d)
    slack = (p.ev_pmax * dt * steps_left - rem_after) / (d * dt)
    ev_dn = np.where(ok, np.maximum(e_lo if force else np.minimum(e_lo, slack), 0.0), 0.0)
    ev_up = np.where(ok, np.maximum(np.minimum(e_sp, rem_after / (d * dt)), 0.0), 0.0)
    # Battery: power limits and SoC, charging/discharging losses at their worst (1/eta_d per kWh).
    b_dn = b_up = s_dn = s_up = np.full((w, p.n), _INF)
    for m in range(1, d + 1):
        sl = at(m - 1)
        b_dn = np.minimum(b_dn, tr.bat[sl] + p.bat_pmax)
        b_up = np.minimum(b_up, p.bat_pmax - tr.bat[sl])
        soc = tr.soc_end[sl] + dev.soc
        s_dn = np.minimum(s_dn, (soc - p.soc_min) * p.eta_d / (m * dt))
        s_up = np.minimum(s_up, (p.soc_max - soc) * p.eta_d / (m * dt))
    bat_dn = np.maximum(np.minimum(b_dn, s_dn), 0.0)
    bat_up = np.maximum(np.minimum(b_up, s_up), 0.0)
    rte = p.eta_c * p.eta_d
    return DeviceFlex(
        heat_dn,
        heat_up,
        ev_dn,
        ev_up,
        bat_dn,
        bat_up,
        rebound_down=heat_dn * heat_kwh + ev_dn * d * dt + bat_dn * d * dt / rte,
        rebound_up=heat_up * heat_kwh + ev_up * d * dt + bat_up * d * dt * rte,
    )


def flex_for_durations(
    p: HouseholdParams,
    tr: Trajectory,
    durations: np.ndarray,
    s0: int,
    dev: Deviation | None = None,
    force: bool = False,
    window: Callable[..., DeviceFlex] | None = None,
) -> DeviceFlex:
    """Flex of the window starting now, each household over its own duration (rows: 1).

    Lets one step serve several requests (e.g. aggregators) with different remaining lengths.
    `window(tr, d, s0, dev, force)` replaces window_flex (the compiled kernel, same results).
    """
    out: DeviceFlex | None = None
    win: Callable[..., Any] = window or (lambda *a: window_flex(p, *a))
    for d in np.unique(durations):
        f = win(tr.head(int(d)), int(d), s0, dev, force)
        out = (
            f
            if out is None
            else DeviceFlex(
                *(np.where(durations == d, getattr(f, x.name), getattr(out, x.name)) for x in fields(DeviceFlex))
            )
        )
    assert out is not None
    return out


def allocate(
    head: np.ndarray,
    group: np.ndarray,
    need: np.ndarray,
    prev: np.ndarray,
    mode: Literal["greedy", "proportional"] = "greedy",
    segment: np.ndarray | None = None,
) -> np.ndarray:
    """Split each group's need (kW >= 0) over its households within their headroom.

    greedy: households already in this event keep their share first (releasing one
    mid-event would trigger its rebound inside the event), then the rest is filled
    largest-headroom-first, so few households are disturbed. proportional: every
    household gives the same fraction of its headroom (more robust to forecast error).
    ``segment`` (per household, constant within a group, ascending with the group): the greedy
    running sums restart at each segment, so every segment gets, bit for bit, what it gets alone.
    """
    n_groups = need.size
    if mode == "proportional":
        tot = np.bincount(group, head, n_groups)
        frac = np.divide(need, tot, out=np.zeros(n_groups), where=tot > 0)
        return head * np.minimum(frac, 1.0)[group]
    if mode != "greedy":
        raise ValueError(f"unknown allocation {mode!r}")
    keep = np.minimum(prev, head)
    ksum = np.bincount(group, keep, n_groups)
    scale = np.divide(need, ksum, out=np.ones(n_groups), where=ksum > need)
    keep = keep * scale[group]
    rest = np.maximum(need - np.bincount(group, keep, n_groups), 0.0)
    extra = np.maximum(head - keep, 0.0)
    order = np.lexsort((-extra, prev <= 0, group))
    h, g = extra[order], group[order]
    cs = np.cumsum(h)
    base = cs
    if segment is not None:
        starts = np.flatnonzero(np.diff(segment[order])) + 1
        if starts.size:
            for a, b in zip(starts.tolist(), [*starts[1:].tolist(), h.size], strict=True):
                cs[a:b] = np.cumsum(h[a:b])
            base = cs.copy()
            base[starts - 1] = 0.0  # a segment's first group starts from nothing, as it would alone
    group_base = np.concatenate(([0.0], base))[np.searchsorted(g, np.arange(n_groups))]
    take = np.clip(rest[g] - (cs - h - group_base[g]), 0.0, h)
    out = keep.copy()
    out[order] += take
    return out


def split_devices(
    offset: np.ndarray, tiers: list[DeviceFlex], row: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split household offsets (kW, signed) over battery, EV, then heating within headroom.

    Order: storage first (no comfort effect), EV deferral next, heating last. `tiers`
    are nested headrooms (e.g. comfort-respecting, then physical for forced requests):
    each tier is used up over all devices before the next. Returns signed
    (battery, ev, heat) offsets; any remainder is not delivered.
    """
    left, down = np.abs(offset), offset < 0
    taken = [np.zeros_like(left) for _ in range(3)]
    for f in tiers:
        for i, (dn, up) in enumerate(((f.bat_down, f.bat_up), (f.ev_down, f.ev_up), (f.heat_down, f.heat_up))):
            take = np.clip(np.where(down, dn[row], up[row]) - taken[i], 0.0, left)
            left = left - take
            taken[i] = taken[i] + take
    return tuple(np.where(down, -t, t) for t in taken)
