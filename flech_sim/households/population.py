"""Static per-household parameters drawn from a FleetSpec (structure-of-arrays).

Arrays of length N so every physics step is a handful of vectorised numpy ops.
Households lacking a device get zero power/capacity for it, which makes the
device inert without branching.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .params import FleetSpec, SeedLike, as_seed_sequence, draw

NO_HEAT, HEAT_PUMP, PANEL = 0, 1, 2


@dataclass(frozen=True)
class HouseholdParams:
    """Per-household constants. Units: kW, kWh, K/kW, kWh/K, °C, hours; dt_h = step in hours."""

    dt_h: float
    heat_type: np.ndarray  # NO_HEAT / HEAT_PUMP / PANEL
    r: np.ndarray  # thermal resistance K/kW
    c: np.ndarray  # thermal capacity kWh/K
    a: np.ndarray  # exp(-dt/RC): decay per step of the exact discretisation
    oma: np.ndarray  # 1 - a, computed with expm1 for accuracy when RC >> dt
    p_heat_max: np.ndarray
    cop_at_7c: np.ndarray
    cop_slope: float
    cop_min: float
    cop_max: float
    t_min: np.ndarray
    t_max: np.ndarray
    t_set: np.ndarray  # default controller's target, inside the band
    gain_int: np.ndarray  # internal gains kW
    solar_ap: np.ndarray  # effective solar aperture m² (gains = ap × irradiance)
    ev_pmax: np.ndarray
    ev_arr_h: np.ndarray
    ev_dep_h: np.ndarray
    ev_energy: np.ndarray  # mean energy per session kWh
    ev_use_prob: float
    bat_cap: np.ndarray
    bat_pmax: np.ndarray
    eta_c: np.ndarray  # one-way efficiencies sqrt(round trip)
    eta_d: np.ndarray
    soc_min: np.ndarray  # kWh
    soc_max: np.ndarray
    soc_init: np.ndarray
    kwp: np.ndarray
    pr: np.ndarray
    annual_kwh: np.ndarray

    @property
    def n(self) -> int:
        return int(self.r.size)

    @property
    def has_heat(self) -> np.ndarray:
        return self.heat_type != NO_HEAT

    @property
    def has_ev(self) -> np.ndarray:
        return self.ev_pmax > 0

    def subset(self, idx: np.ndarray) -> HouseholdParams:
        """Parameters of households `idx` (for chunked forecasts)."""
        kw = {f.name: (v[idx] if isinstance(v := getattr(self, f.name), np.ndarray) else v) for f in fields(self)}
        return HouseholdParams(**kw)

    def cop(self, t_out: float | np.ndarray) -> np.ndarray:
        """Thermal kW per electric kW: COP for heat pumps (falls as it gets colder), 1 for panels."""
        c = np.clip(self.cop_at_7c + self.cop_slope * (np.asarray(t_out) - 7.0), self.cop_min, self.cop_max)
        return np.where(self.heat_type == HEAT_PUMP, c, np.where(self.heat_type == PANEL, 1.0, 0.0))


def build_params(spec: FleetSpec, n: int, dt_minutes: int, seed_seq: SeedLike) -> HouseholdParams:
    """Draw N households. Draw order is fixed, so the same seed gives identical arrays."""
    rng = np.random.default_rng(as_seed_sequence(seed_seq))
    d = lambda name: draw(getattr(spec, name), n, rng, name)  # noqa: E731
    u_heat, u_ev, u_bat, u_pv = rng.random((4, n))
    heat_type = np.where(
        u_heat < spec.share_heat_pump,
        HEAT_PUMP,
        np.where(u_heat < spec.share_heat_pump + spec.share_panel_heater, PANEL, NO_HEAT),
    )
    r, c = d("r_k_per_kw"), d("c_kwh_per_k")
    hp_p, pan_p, cop7 = d("hp_power_kw"), d("panel_power_kw"), d("cop_at_7c")
    t_min = d("t_min_c")
    t_max = t_min + d("band_width_k")
    t_set = np.minimum(t_min + d("setpoint_offset_k"), t_max)
    p_heat = np.where(heat_type == HEAT_PUMP, hp_p, np.where(heat_type == PANEL, pan_p, 0.0))
    # Sizing: make the house no leakier than its heater can hold at the design temperature.
    cop_design = np.clip(cop7 + spec.cop_slope_per_k * (spec.design_temp_c - 7.0), spec.cop_min, spec.cop_max)
    eta_design = np.where(heat_type == HEAT_PUMP, cop_design, 1.0)
    with np.errstate(divide="ignore"):
        r_cover = np.where(p_heat > 0, (t_set - spec.design_temp_c) / (eta_design * p_heat), 0.0)
    r = np.maximum(r, r_cover)
    dt_h = dt_minutes / 60.0
    has_ev, has_bat, has_pv = u_ev < spec.share_ev, u_bat < spec.share_battery, u_pv < spec.share_pv
    ev_p, arr_h, dep_h, ev_e = d("ev_charger_kw"), d("ev_arrival_h"), d("ev_departure_h"), d("ev_energy_kwh")
    cap, bat_p, rte, soc0 = (d("battery_capacity_kwh"), d("battery_power_kw"), d("battery_rte"), d("battery_soc_init"))
    kwp, pr = d("pv_kwp"), d("pv_performance_ratio")
    cap = np.where(has_bat, cap, 0.0)
    eta1 = np.sqrt(np.clip(rte, 1e-6, 1.0))
    return HouseholdParams(
        dt_h=dt_h,
        heat_type=heat_type.astype(np.int8),
        r=r,
        c=c,
        a=np.exp(-dt_h / (r * c)),
        oma=-np.expm1(-dt_h / (r * c)),
        p_heat_max=p_heat,
        cop_at_7c=cop7,
        cop_slope=spec.cop_slope_per_k,
        cop_min=spec.cop_min,
        cop_max=spec.cop_max,
        t_min=t_min,
        t_max=t_max,
        t_set=t_set,
        gain_int=d("internal_gain_kw"),
        solar_ap=d("solar_aperture_m2"),
        ev_pmax=np.where(has_ev, ev_p, 0.0),
        ev_arr_h=arr_h,
        ev_dep_h=dep_h,
        ev_energy=np.where(has_ev, ev_e, 0.0),
        ev_use_prob=spec.ev_daily_use_prob,
        bat_cap=cap,
        bat_pmax=np.where(has_bat, bat_p, 0.0),
        eta_c=eta1,
        eta_d=eta1,
        soc_min=cap * spec.battery_soc_min,
        soc_max=cap * spec.battery_soc_max,
        soc_init=np.clip(cap * soc0, cap * spec.battery_soc_min, cap * spec.battery_soc_max),
        kwp=np.where(has_pv, kwp, 0.0),
        pr=pr,
        annual_kwh=d("annual_kwh"),
    )
