"""Device physics and default (uncontrolled) behaviour, vectorised over households.

Sign convention everywhere: power is consumption in kW (battery > 0 = charging,
PV is reported as positive generation and subtracted in net power).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .ev import EvStep
from .population import HouseholdParams


@dataclass(frozen=True)
class StepInputs:
    """Exogenous inputs of one step (weather is common to the fleet: Bornholm is small)."""

    t_out: float
    irr: float
    base: np.ndarray
    ev: EvStep


@dataclass(frozen=True)
class DefaultPowers:
    eta: np.ndarray  # thermal kW per electric kW this step
    gains: np.ndarray
    pv: np.ndarray
    heat: np.ndarray
    ev: np.ndarray
    bat: np.ndarray


def thermal_step(
    t_in: np.ndarray, t_out: float | np.ndarray, q_kw: np.ndarray, r: np.ndarray, a: np.ndarray
) -> np.ndarray:
    """Exact step of C dT/dt = (T_out - T)/R + q for inputs constant over the step.

    T(t+dt) = T_ss + (T - T_ss)·exp(-dt/RC), T_ss = T_out + R·q; `a` = exp(-dt/RC).
    Exact, so long steps neither overshoot nor lose energy (forward Euler would).
    """
    t_ss = t_out + r * q_kw
    return t_ss + (t_in - t_ss) * a


def heat_to_reach(
    p: HouseholdParams, t_in: np.ndarray, t_target: np.ndarray, t_out: float, gains: np.ndarray, eta: np.ndarray
) -> np.ndarray:
    """Electric power (unclipped) that puts T_in exactly at `t_target` at the end of the step."""
    t_ss = t_target + p.a * (t_target - t_in) / p.oma  # inverse of thermal_step
    q = (t_ss - t_out) / p.r - gains
    return np.divide(q, eta, out=np.zeros_like(q), where=eta > 0)


def gains_kw(p: HouseholdParams, irr: float) -> np.ndarray:
    return p.gain_int + p.solar_ap * (irr * 1e-3)


def pv_kw(p: HouseholdParams, irr: float) -> np.ndarray:
    """kWp × irradiance/1000 W/m² × performance ratio; zero at night by construction."""
    return p.kwp * p.pr * (irr * 1e-3)


def battery_limits(p: HouseholdParams, soc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(most negative, most positive) battery power this step within power and SoC limits."""
    hi = np.clip((p.soc_max - soc) / (p.eta_c * p.dt_h), 0.0, p.bat_pmax)
    lo = -np.clip((soc - p.soc_min) * p.eta_d / p.dt_h, 0.0, p.bat_pmax)
    return lo, hi


def battery_step(p: HouseholdParams, soc: np.ndarray, bat: np.ndarray) -> np.ndarray:
    """Charge stores eta_c of the energy; discharge removes 1/eta_d of it."""
    soc = soc + np.where(bat > 0, bat * p.eta_c, bat / p.eta_d) * p.dt_h
    return np.clip(soc, p.soc_min, p.soc_max)  # only trims float round-off


def ev_events(rem: np.ndarray, ev: EvStep) -> tuple[np.ndarray, np.ndarray]:
    """Apply arrivals/departures at the start of a step: (remaining kWh, unmet kWh of departed cars).

    Idempotent for a given step, so callers may apply it more than once.
    """
    unmet = np.where(ev.connected, 0.0, rem)
    return np.where(ev.arriving, ev.energy, rem - unmet), unmet


def ev_max(p: HouseholdParams, rem: np.ndarray, ev: EvStep) -> np.ndarray:
    """Most the car can draw this step: charger limit, energy still needed, plugged in."""
    return np.where(ev.connected, np.minimum(p.ev_pmax, rem / p.dt_h), 0.0)


def default_powers(
    p: HouseholdParams, t_in: np.ndarray, rem: np.ndarray, soc: np.ndarray, inp: StepInputs
) -> DefaultPowers:
    """Uncontrolled operation: heat toward the setpoint (clipped), EV charges at full power on
    arrival, battery absorbs PV surplus / covers deficit (self-consumption)."""
    eta = p.cop(inp.t_out)
    g = gains_kw(p, inp.irr)
    pv = pv_kw(p, inp.irr)
    heat = np.clip(heat_to_reach(p, t_in, p.t_set, inp.t_out, g, eta), 0.0, p.p_heat_max)
    ev = ev_max(p, rem, inp.ev)
    lo, hi = battery_limits(p, soc)
    bat = np.clip(pv - inp.base - heat - ev, lo, hi)
    return DefaultPowers(eta, g, pv, heat, ev, bat)


# How far past a window a shed home must still be able to recover on its own heater (see recovery_floor).
RECOVERY_HOURS = 24.0


def recovery_floor(p: HouseholdParams, t_out: np.ndarray, irr: np.ndarray, t_ref: np.ndarray) -> np.ndarray:
    """Comfort floor along a trajectory: (K+1, n) rows aligned with ``t_ref`` (its t_in).

    Why: a home shed to T_min whose heater at full power cannot outrun the losses falls below its
    band after release. Row k is the lowest temperature at the start of step k from which heating at
    full power keeps T >= T_min at the end of every later step of the inputs ``t_out``/``irr``
    (forecast weather from the trajectory's first step; at least K steps, more to look past it). One
    backward pass: x_k = max(T_min, inverse thermal step of x_{k+1} at full power), x_end = T_min.
    Then capped at the reference ``t_ref`` (and never below T_min): a home whose own plan cannot
    recover gives nothing, but is not pushed above its plan either.
    """
    k1 = t_ref.shape[0]
    if t_out.size < k1 - 1:
        raise ValueError(f"recovery needs at least {k1 - 1} steps of weather, got {t_out.size}")
    t_out = np.asarray(t_out, float)[:, None]
    gains = p.gain_int + p.solar_ap * (np.asarray(irr, float)[:, None] * 1e-3)  # gains_kw, all steps at once
    # Full-power steady state; T_min for homes without heating (their floor then stays T_min exactly).
    t_ss = np.where(p.has_heat, t_out + p.r * (p.cop(t_out) * p.p_heat_max + gains), p.t_min)
    x = p.t_min.copy()
    out = np.empty_like(t_ref)
    for k in range(t_ss.shape[0] - 1, -1, -1):
        if k + 1 < k1:
            out[k + 1] = x
        x = np.maximum(p.t_min, t_ss[k] + (x - t_ss[k]) / p.a)
    out[0] = x
    return np.maximum(p.t_min, np.minimum(out, t_ref))


@dataclass(frozen=True)
class Trajectory:
    """Default-operation trajectory over K steps; t_in has K+1 rows (start of each step + end).

    ``t_floor`` (K+1 rows, or None = T_min): the comfort floor dispatch keeps the home above
    (recovery_floor); flexibility is measured down to it."""

    t_in: np.ndarray
    eta: np.ndarray
    heat: np.ndarray
    ev: np.ndarray
    ev_rem_end: np.ndarray  # remaining kWh after each step's charging
    conn: np.ndarray
    dep: np.ndarray
    bat: np.ndarray
    soc_end: np.ndarray
    net: np.ndarray
    t_floor: np.ndarray | None = None

    def head(self, k: int) -> Trajectory:
        """The first k steps."""
        per_step: dict[str, Any] = {f.name: getattr(self, f.name)[:k] for f in fields(self)[1:-1]}
        t_floor = None if self.t_floor is None else self.t_floor[: k + 1]
        return Trajectory(self.t_in[: k + 1], t_floor=t_floor, **per_step)


def simulate_default(
    p: HouseholdParams,
    t0: np.ndarray,
    rem0: np.ndarray,
    soc0: np.ndarray,
    s0: int,
    k_steps: int,
    inputs: Callable[[int], StepInputs],
) -> Trajectory:
    """Run default operation for `k_steps` from step `s0` (used for forecasts and headroom)."""
    n = p.n
    t_in = np.empty((k_steps + 1, n))
    eta, heat, ev, rem_end, bat, soc_end, net = (np.empty((k_steps, n)) for _ in range(7))
    conn, dep = np.empty((k_steps, n), bool), np.empty((k_steps, n), np.int64)
    t, rem, soc = t0.copy(), rem0.copy(), soc0.copy()
    t_in[0] = t
    for k in range(k_steps):
        inp = inputs(s0 + k)
        rem, _ = ev_events(rem, inp.ev)
        d = default_powers(p, t, rem, soc, inp)
        t = np.where(p.has_heat, thermal_step(t, inp.t_out, d.eta * d.heat + d.gains, p.r, p.a), p.t_set)
        rem = np.maximum(rem - d.ev * p.dt_h, 0.0)
        soc = battery_step(p, soc, d.bat)
        t_in[k + 1], eta[k], heat[k], ev[k], rem_end[k] = t, d.eta, d.heat, d.ev, rem
        conn[k], dep[k], bat[k], soc_end[k] = inp.ev.connected, inp.ev.dep_step, d.bat, soc
        net[k] = inp.base + d.heat + d.ev + d.bat - d.pv
    return Trajectory(t_in, eta, heat, ev, rem_end, conn, dep, bat, soc_end, net)
