"""Comfort breaches per household, and which of them dispatch caused.

A breach is a step ending below T_min, or above T_max while heating (passive overheating is not the
controller's doing); degree-minutes use the end-of-step temperature (the exact trajectory is monotone
within a step, so the end is its worst point).

*Caused by dispatch* (and so compensated by the aggregator): a breach that begins in a step where
dispatch gave the home less heat than its own controller would have (below T_min) or more (above
T_max), and every following step of the same breach - the recovery after release included - until the
home is back inside its band. A breach the home's own controller could not avoid (a heater too small
for the cold) is recorded but not blamed. With ``force`` off, dispatch keeps every controlled home
inside its band, so nothing is blamed on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .population import HouseholdParams

TOL_K = 1e-9  # temperature slack before a breach is recorded (float round-off only)
TOL_KW = 1e-9  # heat change below this is not dispatch's doing


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
    blame_below: np.ndarray  # in a breach below T_min caused by dispatch (state)
    blame_above: np.ndarray

    @classmethod
    def empty(cls, n: int) -> ComfortRecord:
        f, i, b = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        return cls(f, f, i, i, i, f, f, b, b)

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
        default_heat: np.ndarray,
        allocated: np.ndarray,
        dt_minutes: float,
    ) -> ComfortRecord:
        """The record after one step that ended at ``t_in`` with ``heat`` (kW) where the home's own
        controller would have used ``default_heat``; ``allocated``: the change asked of each home."""
        lo = p.has_heat & (t_in < p.t_min - TOL_K)
        hi = p.has_heat & (heat > 0) & (t_in > p.t_max + TOL_K)
        controlled = allocated != 0
        blame_lo = lo & (self.blame_below | (controlled & (heat < default_heat - TOL_KW)))
        blame_hi = hi & (self.blame_above | (controlled & (heat > default_heat + TOL_KW)))
        below = np.where(lo, p.t_min - t_in, 0.0) * dt_minutes
        above = np.where(hi, t_in - p.t_max, 0.0) * dt_minutes
        return ComfortRecord(
            self.below_degree_minutes + below,
            self.above_degree_minutes + above,
            self.breach_steps + (lo | hi),
            self.dispatched_steps + controlled,
            self.forced_steps + (blame_lo | blame_hi),
            self.forced_below_degree_minutes + np.where(blame_lo, below, 0.0),
            self.forced_above_degree_minutes + np.where(blame_hi, above, 0.0),
            blame_lo,
            blame_hi,
        )
