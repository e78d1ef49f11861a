"""Comfort breaches per household, and which of them dispatch caused.

A breach is a step ending below T_min, or above T_max while heating (passive overheating is not the
controller's doing); degree-minutes use the end-of-step temperature (the exact trajectory is monotone
within a step, so the end is its worst point).

*Caused by dispatch* (and so compensated by the aggregator): the part of a breach the home would not
have had undisturbed. Heating depends on nothing but the indoor temperature and the weather, so each
home's undisturbed temperature is stepped alongside (its thermostat heating toward the setpoint, on the
same inputs): exactly the no-flexibility twin's. Per step, the breach caused by dispatch is the
household's breach minus the one it would have had undisturbed (never negative): a breach its own
heater could not avoid (too small for the cold) is not blamed, one in the recovery after a release is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .physics import heat_to_reach, thermal_step
from .population import HouseholdParams

TOL_K = 1e-9  # temperature slack before a breach is recorded (float round-off only)


@dataclass(frozen=True)
class ComfortRecord:
    """Per household, totals since the start of the run. Immutable: each step makes a new record, so a
    forecast copy of the fleet (a shallow copy) never writes into the real fleet's record."""

    below_degree_minutes: np.ndarray
    above_degree_minutes: np.ndarray
    breach_steps: np.ndarray
    dispatched_steps: np.ndarray  # steps with a non-zero change asked of the home
    forced_steps: np.ndarray  # breach steps caused by dispatch
    forced_below_degree_minutes: np.ndarray
    forced_above_degree_minutes: np.ndarray
    t_undisturbed: np.ndarray  # indoor temperature the home would have without any dispatch (state)
    heat_undisturbed: np.ndarray  # its heating power in the last step (kW)

    @classmethod
    def empty(cls, t_start: np.ndarray) -> ComfortRecord:
        n = len(t_start)
        f, i = np.zeros(n), np.zeros(n, dtype=np.int64)
        return cls(f, f, i, i, i, f, f, np.asarray(t_start, dtype=float).copy(), f)

    @property
    def degree_minutes(self) -> np.ndarray:
        return self.below_degree_minutes + self.above_degree_minutes

    @property
    def forced_degree_minutes(self) -> np.ndarray:
        return self.forced_below_degree_minutes + self.forced_above_degree_minutes

    def after_step(
        self,
        p: HouseholdParams,
        t_in: np.ndarray,
        heat: np.ndarray,
        allocated: np.ndarray,
        t_out: float,
        gains: np.ndarray,
        eta: np.ndarray,
        dt_minutes: float,
    ) -> ComfortRecord:
        """The record after one step that ended at ``t_in`` with ``heat`` (kW); ``allocated``: the change
        asked of each home; ``t_out``, ``gains``, ``eta``: the step's inputs (to step the undisturbed home)."""
        h_u = np.clip(heat_to_reach(p, self.t_undisturbed, p.t_set, t_out, gains, eta), 0.0, p.p_heat_max)
        t_u = np.where(p.has_heat, thermal_step(self.t_undisturbed, t_out, eta * h_u + gains, p.r, p.a), p.t_set)
        below, above = _breach(p, t_in, heat, dt_minutes)
        below_u, above_u = _breach(p, t_u, h_u, dt_minutes)
        # round-off between the compiled and the numpy step is ~1e-14 K: a thousandth of TOL_K
        f_below = np.where(below > below_u + TOL_K * dt_minutes, below - below_u, 0.0)
        f_above = np.where(above > above_u + TOL_K * dt_minutes, above - above_u, 0.0)
        return ComfortRecord(
            self.below_degree_minutes + below,
            self.above_degree_minutes + above,
            self.breach_steps + ((below > 0) | (above > 0)),
            self.dispatched_steps + (allocated != 0),
            self.forced_steps + ((f_below > 0) | (f_above > 0)),
            self.forced_below_degree_minutes + f_below,
            self.forced_above_degree_minutes + f_above,
            t_u,
            h_u,
        )


def _breach(p: HouseholdParams, t: np.ndarray, heat: np.ndarray, dt_minutes: float) -> tuple[np.ndarray, np.ndarray]:
    """Degree-minutes below T_min and above T_max (while heating) of a step ending at ``t``."""
    lo = p.has_heat & (t < p.t_min - TOL_K)
    hi = p.has_heat & (heat > 0) & (t > p.t_max + TOL_K)
    return np.where(lo, p.t_min - t, 0.0) * dt_minutes, np.where(hi, t - p.t_max, 0.0) * dt_minutes
