"""Parameter draws, weather and base-load inputs: ranges, seeding, CSV handling, chunking."""

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from flech_sim.households import (
    BaseLoad,
    CsvBaseLoad,
    FleetSpec,
    build_params,
    draw,
    generate_weather,
    load_weather_csv,
)

START = datetime(2024, 1, 8)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


# --- params -------------------------------------------------------------------------------------


def test_draw_distributions_respect_bounds():
    x = draw({"dist": "uniform", "low": 2, "high": 10}, 10_000, rng())
    assert x.min() >= 2 and x.max() <= 10 and abs(x.mean() - 6) < 0.1
    y = draw({"dist": "normal", "mean": 17.5, "sd": 3, "low": 14, "high": 22}, 10_000, rng())
    assert y.min() >= 14 and y.max() <= 22 and np.unique(y).size == y.size  # truncated, not clipped
    assert np.all(draw(3.7, 5, rng()) == 3.7)
    assert np.all(draw({"dist": "constant", "value": 2}, 5, rng()) == 2.0)
    z = draw({"dist": "choice", "values": [3.7, 11], "p": [0.6, 0.4]}, 10_000, rng())
    assert set(np.unique(z)) == {3.7, 11.0} and abs((z == 3.7).mean() - 0.6) < 0.03


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"dist": "gamma"}, "unknown dist"),
        ({"dist": "uniform", "low": 5, "high": 1}, "low <= high"),
        ({"dist": "normal", "mean": 0}, "sd"),
        ({"dist": "uniform", "low": 1, "high": 2, "mu": 3}, "unexpected keys"),
        ({"dist": "choice", "values": [1, 2], "p": [0.5]}, "'p'"),
        ("five", "expected a number"),
    ],
)
def test_draw_rejects_bad_specs(spec, msg):
    with pytest.raises(ValueError, match=msg):
        draw(spec, 3, rng(), name="r_k_per_kw")


def test_fleet_spec_overrides_and_validation():
    spec = FleetSpec.from_dict({"share_ev": 0.5, "r_k_per_kw": {"dist": "uniform", "low": 3, "high": 4}})
    assert spec.share_ev == 0.5
    with pytest.raises(ValueError, match="unknown FleetSpec keys"):
        FleetSpec.from_dict({"share_evs": 0.5})
    with pytest.raises(ValueError, match="share_pv"):
        FleetSpec.from_dict({"share_pv": 1.5})
    with pytest.raises(ValueError, match="<= 1"):
        FleetSpec.from_dict({"share_heat_pump": 0.7, "share_panel_heater": 0.5})


def test_built_params_match_domain_ranges():
    p = build_params(FleetSpec(), 5000, 15, 11)
    hp, panel = p.heat_type == 1, p.heat_type == 2
    assert abs(hp.mean() - 0.5) < 0.03 and abs(panel.mean() - 0.3) < 0.03
    assert np.all((p.p_heat_max[hp] >= 1) & (p.p_heat_max[hp] <= 3))
    assert np.all((p.p_heat_max[panel] >= 3) & (p.p_heat_max[panel] <= 10))
    assert np.all(p.r >= 2) and np.all((p.c >= 5) & (p.c <= 20))
    assert np.all((p.t_min >= 19) & (p.t_min <= 21)) and np.all(p.t_min < p.t_set) and np.all(p.t_set < p.t_max)
    assert np.all((p.t_max - p.t_min >= 2) & (p.t_max - p.t_min <= 3))
    ev = p.ev_pmax > 0
    assert set(np.unique(p.ev_pmax[ev])) == {3.7, 11.0} and abs(ev.mean() - 0.3) < 0.03
    bat = p.bat_cap > 0
    assert np.all((p.bat_cap[bat] >= 5) & (p.bat_cap[bat] <= 13)) and np.allclose(p.eta_c * p.eta_d, 0.9)
    assert np.all((p.kwp[p.kwp > 0] >= 3) & (p.kwp[p.kwp > 0] <= 8))
    # Sizing: every heater holds the setpoint at -12 °C without gains.
    heated = p.heat_type > 0
    assert np.all(p.cop(-12.0)[heated] * p.p_heat_max[heated] * p.r[heated] >= p.t_set[heated] + 12 - 1e-9)


def test_params_same_seed_identical_different_seed_different():
    a, b, c = (build_params(FleetSpec(), 500, 15, s) for s in (1, 1, 2))
    for name in ("r", "c", "t_min", "ev_pmax", "bat_cap", "kwp", "annual_kwh"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.r, c.r)


# --- weather ------------------------------------------------------------------------------------


def test_generated_weather_is_danish_and_seeded():
    n = 90 * 96
    w = generate_weather("winter", datetime(2024, 1, 1), n, 15, 5)
    s = generate_weather("summer", datetime(2024, 6, 1), n, 15, 5)
    assert -2 < w.outdoor_temp_c.mean() < 4 and 13 < s.outdoor_temp_c.mean() < 19
    by_hour = s.outdoor_temp_c.reshape(-1, 96).mean(0)
    assert 12 * 4 <= by_hour.argmax() <= 17 * 4 and by_hour.argmin() <= 7 * 4  # afternoon max, night min
    assert 4 < by_hour.max() - by_hour.min() < 8
    january = w.irradiance_w_m2[: 30 * 96]
    assert s.irradiance_w_m2.max() > 3 * january.max() and s.irradiance_w_m2.max() < 1000
    again = generate_weather("winter", datetime(2024, 1, 1), n, 15, 5)
    other = generate_weather("winter", datetime(2024, 1, 1), n, 15, 6)
    assert np.array_equal(w.outdoor_temp_c, again.outdoor_temp_c)
    assert np.array_equal(w.irradiance_w_m2, again.irradiance_w_m2)
    assert not np.array_equal(w.outdoor_temp_c, other.outdoor_temp_c)
    with pytest.raises(ValueError, match="season"):
        generate_weather("autumn", START, 10, 15, 1)


def _write_weather(tmp_path, hours=48, drop=None):
    ts = pd.date_range(START, periods=hours, freq="h")
    df = pd.DataFrame(
        {"timestamp": ts, "outdoor_temp_c": np.arange(hours, dtype=float), "irradiance_w_m2": np.full(hours, 100.0)}
    )
    if drop:
        df = df.drop(columns=drop)
    path = tmp_path / "w.csv"
    df.to_csv(path, index=False)
    return path


def test_weather_csv_resamples_to_step_midpoints(tmp_path):
    w = load_weather_csv(_write_weather(tmp_path), START, 96, 15)
    # Temperature rises 1 K per hour, so the midpoint of step k (7.5 + 15k min) reads (k + 0.5) / 4.
    np.testing.assert_allclose(w.outdoor_temp_c, (np.arange(96) + 0.5) / 4)
    assert np.all(w.irradiance_w_m2 == 100.0) and w.dt_minutes == 15


def test_weather_csv_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="irradiance_w_m2"):
        load_weather_csv(_write_weather(tmp_path, drop=["irradiance_w_m2"]), START, 96, 15)
    with pytest.raises(ValueError, match="do not cover"):
        load_weather_csv(_write_weather(tmp_path, hours=10), START, 96, 15)
    with pytest.raises(ValueError, match="do not cover"):
        load_weather_csv(_write_weather(tmp_path), START - timedelta(hours=1), 4, 15)


# --- base load ----------------------------------------------------------------------------------


def test_base_load_is_chunking_independent_and_seeded():
    annual = np.linspace(2500, 5000, 2500)
    a = BaseLoad(annual, START, 15, np.random.SeedSequence(9))
    b = BaseLoad(annual, START, 15, np.random.SeedSequence(9))
    idx = np.array([3, 1500, 2499, 0])
    full = a.block(90, 200)  # crosses two midnights
    assert full.shape == (2500, 110)
    assert np.array_equal(b.block(90, 200, idx), full[idx])
    assert np.array_equal(np.stack([b.at(s) for s in range(150, 200)], axis=1), full[:, 60:])
    c = BaseLoad(annual, START, 15, np.random.SeedSequence(10))
    assert not np.array_equal(c.block(90, 91), full[:, :1])
    assert np.all(full > 0)


def test_base_load_shape_and_annual_energy():
    annual = np.full(40, 4000.0)
    bl = BaseLoad(annual, datetime(2023, 1, 2), 60, 3)  # hourly steps for speed
    year = bl.block(0, 8760)
    energy = year.sum(axis=1)
    assert abs(energy.mean() / 4000 - 1) < 0.03
    hourly = year[:, : 24 * 364].reshape(40, 364, 24).mean(axis=(0, 1))
    assert hourly.argmax() in (17, 18, 19) and hourly.argmin() in (2, 3, 4)
    assert 6 <= hourly[:12].argmax() <= 9  # a morning peak too
    winter, summer = year[:, : 24 * 30].mean(), year[:, 24 * 180 : 24 * 210].mean()
    assert winter > 1.3 * summer
    np.testing.assert_allclose(bl.expected(5), bl.mean_kw * bl._mean_shape(0)[5])


def test_csv_base_load_round_robin(tmp_path):
    ts = pd.date_range(START, periods=24, freq="h")
    pd.DataFrame({"timestamp": ts, "p1": 1.0, "p2": 2.0, "p3": 3.0}).to_csv(tmp_path / "b.csv", index=False)
    bl = CsvBaseLoad(tmp_path / "b.csv", 7, START, 93, 15)
    assert list(bl.at(10)) == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0]
    assert np.array_equal(bl.expected(500), bl.at(92))  # beyond the file: last value held
