"""Data exchanged with the fleet: a step's control, its result, and a forecast.

Power changes are relative to each household's reference plan (its default
operation, as it would run from the moment it entered control); negative means
consume less ("down", shed), positive consume more ("up").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

GroupBy = Literal["owner", "feeder"] | np.ndarray


@dataclass(frozen=True)
class Control:
    """Instruction for one step: per-household offsets, or per-group targets the fleet allocates.

    duration_steps: steps the request still lasts, this one included (an int, or one
    per group/household when several requests share a step); a household only takes
    a share it can hold that long. force: ignore comfort band and EV
    deadline (the breaches are recorded), keep physical limits; a bool, or one
    per group/household (like duration_steps) when only some owners may force.

    Layers: ``target_kw`` of shape (layers, groups) with ``duration_steps`` (layers,) or
    (layers, groups) asks each group for several commitments at once, each held for its own
    duration (a 15-minute call inside a day-long award); the group's change this step is their
    sum. The fleet allocates them longest first, each on the headroom the longer ones left, so
    a short call is not sized as if it had to be held as long as the award around it.
    """

    offset_kw: np.ndarray | None = None
    target_kw: np.ndarray | None = None
    by: GroupBy = "owner"
    duration_steps: int | np.ndarray = 1  # or one per group / per household
    force: bool | np.ndarray = False  # or one per group / per household
    allocation: Literal["greedy", "proportional"] = "greedy"

    def __post_init__(self) -> None:
        if (self.offset_kw is None) == (self.target_kw is None):
            raise ValueError("give exactly one of offset_kw (per household) or target_kw (per group)")
        if np.any(np.asarray(self.duration_steps) < 1):
            raise ValueError("duration_steps must be >= 1")
        if self.target_kw is not None and np.ndim(self.target_kw) == 2:
            d = np.asarray(self.duration_steps)
            if d.ndim not in (1, 2) or d.shape[0] != np.shape(self.target_kw)[0]:
                raise ValueError("layered target_kw needs duration_steps with one row per layer")
        elif self.target_kw is not None and np.ndim(self.target_kw) != 1:
            raise ValueError("target_kw must be (groups,) or (layers, groups)")

    def layers(self, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
        """(targets, durations), both (layers, n_groups): a plain target is one layer."""
        if self.target_kw is None:
            raise ValueError("a per-household offset has no layers")
        layered = np.ndim(self.target_kw) == 2
        target = np.asarray(self.target_kw, dtype=float)
        if not layered:
            target = target[None, :]
        d = np.asarray(self.duration_steps, dtype=np.int64)
        if d.ndim == 1 and layered:
            d = d[:, None]
        elif d.ndim <= 1:
            d = d.reshape(1, -1)
        return target, np.broadcast_to(d, (target.shape[0], n_groups))


@dataclass(frozen=True)
class StepResult:
    """Outcome of one step; per-household arrays have length N, group arrays length G."""

    step: int
    net_kw: np.ndarray  # consumption - PV; what a meter sees
    base_kw: np.ndarray
    heat_kw: np.ndarray
    ev_kw: np.ndarray
    battery_kw: np.ndarray
    pv_kw: np.ndarray
    allocated_kw: np.ndarray  # change asked of each household (0 = not controlled)
    achieved_kw: np.ndarray  # actual - reference power of controlled households
    shortfall_kw: np.ndarray  # per household: |allocated| not achieved (>= 0)
    by_feeder_kw: np.ndarray
    by_owner_kw: np.ndarray
    group_target_kw: np.ndarray | None = None
    group_achieved_kw: np.ndarray | None = None
    group_shortfall_kw: np.ndarray | None = None  # |target| not achieved (>= 0), incl. unallocatable


@dataclass(frozen=True)
class Forecast:
    """Uncontrolled forecast from the current state, by step (rows) and group (columns).

    flex_down_kw[k, g]: reduction group g can hold for `duration_steps` steps starting
    at step start_step + k; flex_up_kw likewise for an increase. rebound_down_kwh:
    extra energy drawn after such a full down activation; rebound_up_kwh: energy not
    drawn after a full up activation. `household` holds the same per household
    (columns = `household_index`) when asked for.
    """

    start_step: int
    duration_steps: int
    baseline_kw: np.ndarray
    flex_down_kw: np.ndarray
    flex_up_kw: np.ndarray
    rebound_down_kwh: np.ndarray
    rebound_up_kwh: np.ndarray
    household: dict[str, np.ndarray] | None = None
    household_index: np.ndarray | None = None


def group_sum(values: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum per group along the last axis: (n,) -> (G,), (K, n) -> (K, G); one bincount call."""
    if values.ndim == 1:
        return np.bincount(group, values, n_groups)
    k = values.shape[0]
    idx = group[None, :] + n_groups * np.arange(k)[:, None]
    return np.bincount(idx.ravel(), values.ravel(), k * n_groups).reshape(k, n_groups)
