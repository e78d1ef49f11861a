"""Parameter distributions given as plain scenario dicts, and the default fleet spec.

Scenarios (YAML) state every household parameter as a number or a small dict, so
`draw` turns either into ``n`` samples using the caller's Generator (never global
random state). `FleetSpec` keeps all defaults in one place; ranges follow the
"Households and DERs" section of the domain brief.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

DistSpec = float | int | Mapping[str, Any]
SeedLike = np.random.SeedSequence | int | None

_KEYS = {
    "constant": {"value"},
    "uniform": {"low", "high"},
    "normal": {"mean", "sd", "low", "high"},
    "choice": {"values", "p"},
}


def as_seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """Accept an int for convenience; `None` is rejected so runs are always reproducible."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None:
        raise ValueError("a seed (SeedSequence or int) is required for reproducible runs")
    return np.random.SeedSequence(int(seed))


def child_seed(seed: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """Derive a child stream by key without mutating `seed`.

    `SeedSequence.spawn` advances a counter, so calling it twice gives different
    children; keying by (purpose, block, day, ...) keeps results independent of call
    order and of chunking.
    """
    if any(k < 0 for k in key):
        raise ValueError(f"seed keys must be non-negative, got {key}")
    return np.random.SeedSequence(
        entropy=seed.entropy,
        spawn_key=tuple(seed.spawn_key) + tuple(int(k) for k in key),
        pool_size=seed.pool_size,
    )


def validate(spec: DistSpec, name: str = "spec") -> None:
    """Raise ValueError with the parameter name if `spec` is not a valid distribution."""
    if isinstance(spec, bool):
        raise ValueError(f"{name}: booleans are not numbers here")
    if isinstance(spec, (int, float)):
        if not math.isfinite(spec):
            raise ValueError(f"{name}: constant must be finite, got {spec}")
        return
    if not isinstance(spec, Mapping):
        raise ValueError(f"{name}: expected a number or a dict with 'dist', got {type(spec).__name__}")
    dist = spec.get("dist")
    if dist not in _KEYS:
        raise ValueError(f"{name}: unknown dist {dist!r}; expected one of {sorted(_KEYS)}")
    extra = set(spec) - _KEYS[dist] - {"dist"}
    if extra:
        raise ValueError(f"{name}: unexpected keys {sorted(extra)} for dist {dist!r}")
    if dist == "constant" and "value" not in spec:
        raise ValueError(f"{name}: constant needs 'value'")
    if dist == "uniform" and ("low" not in spec or "high" not in spec or float(spec["low"]) > float(spec["high"])):
        raise ValueError(f"{name}: uniform needs low <= high")
    if dist == "normal":
        if "mean" not in spec or "sd" not in spec or float(spec["sd"]) < 0:
            raise ValueError(f"{name}: normal needs mean and sd >= 0")
        if float(spec.get("low", -math.inf)) > float(spec.get("high", math.inf)):
            raise ValueError(f"{name}: normal truncation needs low <= high")
    if dist == "choice":
        values = list(spec.get("values", []))
        if not values:
            raise ValueError(f"{name}: choice needs non-empty 'values'")
        p = spec.get("p")
        if p is not None and (len(p) != len(values) or abs(sum(p) - 1.0) > 1e-9 or min(p) < 0):
            raise ValueError(f"{name}: choice 'p' must match values and sum to 1")


def draw(spec: DistSpec, n: int, rng: np.random.Generator, name: str = "spec") -> np.ndarray:
    """Draw `n` float64 samples of `spec` (number, or dict with 'dist')."""
    validate(spec, name)
    if isinstance(spec, (int, float)):
        return np.full(n, float(spec))
    dist = spec["dist"]
    if dist == "constant":
        return np.full(n, float(spec["value"]))
    if dist == "uniform":
        return rng.uniform(float(spec["low"]), float(spec["high"]), n)
    if dist == "choice":
        values = np.asarray(spec["values"], dtype=float)
        return values[rng.choice(len(values), size=n, p=spec.get("p"))]
    return _truncated_normal(spec, n, rng, name)


def _truncated_normal(spec: Mapping[str, Any], n: int, rng: np.random.Generator, name: str) -> np.ndarray:
    """Rejection sampling: exact truncation (clipping would pile mass on the bounds)."""
    mean, sd = float(spec["mean"]), float(spec["sd"])
    low, high = float(spec.get("low", -math.inf)), float(spec.get("high", math.inf))
    if sd == 0.0:
        if not low <= mean <= high:
            raise ValueError(f"{name}: sd=0 but mean outside [low, high]")
        return np.full(n, mean)
    out = np.empty(n)
    todo = np.arange(n)
    for _ in range(200):
        if todo.size == 0:
            return out
        x = rng.normal(mean, sd, todo.size)
        ok = (x >= low) & (x <= high)
        out[todo[ok]] = x[ok]
        todo = todo[~ok]
    if todo.size:
        raise ValueError(f"{name}: truncation interval [{low}, {high}] too unlikely under N({mean}, {sd})")
    return out


def _u(low: float, high: float) -> Any:
    return field(default_factory=lambda: {"dist": "uniform", "low": low, "high": high})


def _n(mean: float, sd: float, low: float, high: float) -> Any:
    return field(default_factory=lambda: {"dist": "normal", "mean": mean, "sd": sd, "low": low, "high": high})


@dataclass(frozen=True)
class FleetSpec:
    """Shares of devices and parameter distributions of a household fleet.

    Shares are independent per household (a household may have an EV and a battery).
    Heating: share_heat_pump + share_panel_heater <= 1; the rest heat otherwise
    (district heating is common on Bornholm) and are thermally not simulated.
    COP(T_out) = clip(cop_at_7c + cop_slope_per_k * (T_out - 7), cop_min, cop_max):
    it falls as the outdoor temperature falls (7 °C is the EN 14511 rating point).
    Heater sizing: a house's R is raised, if needed, so its heater can hold the
    setpoint at `design_temp_c` (DS 418 uses -12 °C for Denmark) - installers size
    heaters to houses, so small heat pumps sit in well-insulated houses.
    """

    share_heat_pump: float = 0.5
    share_panel_heater: float = 0.3
    share_ev: float = 0.3
    share_battery: float = 0.15
    share_pv: float = 0.3
    annual_kwh: DistSpec = _u(2500.0, 5000.0)
    r_k_per_kw: DistSpec = _u(2.0, 10.0)
    c_kwh_per_k: DistSpec = _u(5.0, 20.0)
    design_temp_c: float = -12.0
    hp_power_kw: DistSpec = _u(1.0, 3.0)
    cop_at_7c: DistSpec = _u(3.2, 4.0)
    cop_slope_per_k: float = 0.07
    cop_min: float = 1.5
    cop_max: float = 5.0
    panel_power_kw: DistSpec = _u(3.0, 10.0)
    t_min_c: DistSpec = _u(19.0, 21.0)
    band_width_k: DistSpec = _u(2.0, 3.0)
    setpoint_offset_k: DistSpec = _u(0.5, 1.0)
    internal_gain_kw: DistSpec = _u(0.1, 0.4)
    solar_aperture_m2: DistSpec = _u(1.0, 4.0)
    ev_charger_kw: DistSpec = field(default_factory=lambda: {"dist": "choice", "values": [3.7, 11.0], "p": [0.6, 0.4]})
    ev_arrival_h: DistSpec = _n(17.5, 1.5, 14.0, 22.0)
    ev_departure_h: DistSpec = _n(7.5, 1.0, 5.0, 10.0)
    ev_energy_kwh: DistSpec = _u(4.0, 16.0)
    ev_daily_use_prob: float = 0.85
    battery_capacity_kwh: DistSpec = _u(5.0, 13.0)
    battery_power_kw: DistSpec = _u(3.0, 5.0)
    battery_rte: DistSpec = 0.9
    battery_soc_init: DistSpec = _u(0.3, 0.7)
    battery_soc_min: float = 0.05
    battery_soc_max: float = 0.95
    pv_kwp: DistSpec = _u(3.0, 8.0)
    pv_performance_ratio: DistSpec = 0.8

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("share_") or f.name == "ev_daily_use_prob":
                if not 0.0 <= float(v) <= 1.0:
                    raise ValueError(f"{f.name} must be in [0, 1], got {v}")
            elif f.type == "DistSpec" or isinstance(v, Mapping):
                validate(v, f.name)
        if self.share_heat_pump + self.share_panel_heater > 1.0 + 1e-12:
            raise ValueError("share_heat_pump + share_panel_heater must be <= 1")
        if not 0.0 <= self.battery_soc_min < self.battery_soc_max <= 1.0:
            raise ValueError("need 0 <= battery_soc_min < battery_soc_max <= 1")

    @classmethod
    def from_dict(cls, overrides: Mapping[str, Any] | None) -> FleetSpec:
        """Defaults overridden by a scenario dict; unknown keys are errors (typos bite)."""
        overrides = dict(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown FleetSpec keys: {sorted(unknown)}")
        return replace(cls(), **overrides)
