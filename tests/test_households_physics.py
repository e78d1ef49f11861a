"""Thermal model exactness, COP and PV behaviour."""

from datetime import datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flech_sim.households import FleetSpec, HouseholdFleet, build_params, generate_weather, thermal_step
from flech_sim.households.physics import heat_to_reach, pv_kw

START = datetime(2024, 1, 8)


@settings(max_examples=200, deadline=None)
@given(
    r=st.floats(0.5, 50),
    c=st.floats(0.5, 50),
    dt_min=st.sampled_from([1, 5, 15, 60]),
    n=st.integers(1, 500),
    t0=st.floats(-10, 30),
    t_out=st.floats(-25, 35),
    q=st.floats(0, 15),
)
def test_thermal_step_equals_analytic_solution(r, c, dt_min, n, t0, t_out, q):
    dt_h = dt_min / 60.0
    a = np.exp(-dt_h / (r * c))
    t = np.array([t0])
    for _ in range(n):
        t = thermal_step(t, t_out, np.array([q]), np.array([r]), np.array([a]))
    t_ss = t_out + r * q
    exact = t_ss + (t0 - t_ss) * np.exp(-n * dt_h / (r * c))
    assert abs(t[0] - exact) <= 1e-9 * max(abs(exact), 1.0)


def test_fleet_temperature_follows_exact_step():
    """The fleet's update is the exact solution for the step's (constant) heat and gains."""
    w = generate_weather("winter", START, 8, 15, 3)
    fleet = HouseholdFleet.create(300, w, 5, perfect_forecast=True)
    p = fleet.p
    for _ in range(8):
        t0 = fleet.t_in.copy()
        res = fleet.step()
        s = res.step
        q = p.cop(w.outdoor_temp_c[s]) * res.heat_kw + p.gain_int + p.solar_ap * w.irradiance_w_m2[s] / 1000
        t_ss = w.outdoor_temp_c[s] + p.r * q
        exact = t_ss + (t0 - t_ss) * np.exp(-0.25 / (p.r * p.c))
        h = p.has_heat
        np.testing.assert_allclose(fleet.t_in[h], exact[h], rtol=1e-9)


def test_heat_to_reach_inverts_thermal_step():
    p = build_params(FleetSpec(share_heat_pump=1.0, share_panel_heater=0.0), 200, 15, 1)
    t0 = np.linspace(15, 23, p.n)
    g = np.full(p.n, 0.3)
    eta = p.cop(0.0)
    power = heat_to_reach(p, t0, p.t_set, 0.0, g, eta)
    t1 = thermal_step(t0, 0.0, eta * power + g, p.r, p.a)
    np.testing.assert_allclose(t1, p.t_set, rtol=1e-9)


def test_cop_falls_with_outdoor_temperature():
    p = build_params(FleetSpec(share_heat_pump=1.0, share_panel_heater=0.0), 100, 15, 2)
    temps = np.linspace(-15, 15, 31)
    cops = np.stack([p.cop(t) for t in temps])  # (T, N)
    assert np.all(np.diff(cops, axis=0) >= 0)
    assert np.all(cops[0] < cops[-1])
    at7 = p.cop(7.0)
    assert np.all((at7 >= 2.5) & (at7 <= 4.0))
    panel = build_params(FleetSpec(share_heat_pump=0.0, share_panel_heater=1.0), 10, 15, 2)
    assert np.all(panel.cop(-10.0) == 1.0) and np.all(panel.cop(10.0) == 1.0)


def test_pv_zero_at_night_and_positive_at_noon():
    w = generate_weather("summer", datetime(2024, 6, 20), 96, 15, 4)
    hours = (np.arange(96) + 0.5) / 4
    night = (hours < 3) | (hours > 23)
    assert np.all(w.irradiance_w_m2[night] == 0.0)
    assert np.all(w.irradiance_w_m2[(hours > 11) & (hours < 14)] > 0.0)
    fleet = HouseholdFleet.create(200, w, 6, FleetSpec(share_pv=1.0), perfect_forecast=True)
    assert np.all(fleet.p.kwp > 0)
    for s in range(96):
        res = fleet.step()
        if night[s]:
            assert np.all(res.pv_kw == 0.0)
        else:
            np.testing.assert_allclose(res.pv_kw, pv_kw(fleet.p, w.irradiance_w_m2[s]))
    assert res.pv_kw.max() <= 8.0
