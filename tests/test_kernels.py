"""The numba kernels against the numpy reference (households/kernels.py vs physics.py).

Both paths compute the same IEEE operations in the same order, so they are
compared for exact equality (stricter than the 1e-9 agreement asked for); the
test fails if either path changes its arithmetic. Only the sign of a zero may
differ (numpy's own clip/maximum pick -0.0 or 0.0 depending on the SIMD lane and
on whether a bound is an array), and -0.0 == 0.0 in every later sum.
"""

from datetime import datetime

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, generate_weather, kernels

pytestmark = pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba not installed")

START = datetime(2024, 1, 8)
DAYS = 3
N = 400


def assert_same(a, b, what):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape, what
    np.testing.assert_array_equal(a, b, err_msg=what)


@pytest.fixture(scope="module")
def weather():
    return generate_weather("winter", START, (DAYS + 1) * 96, 15, np.random.SeedSequence(11))


def fleets(weather, **kw):
    return [
        HouseholdFleet.create(N, weather, np.random.SeedSequence(5), n_feeders=4, n_owners=3, engine=e, **kw)
        for e in ("numpy", "numba")
    ]


def drive(fleet, force_at=()):
    """A multi-day run: forecasts, group targets (greedy and proportional), forced and
    per-household requests, the steps between them in default operation."""
    out = []
    rng = np.random.default_rng(3)
    for s in range(DAYS * 96):
        slot = s % 96
        if slot in (28, 68):
            fc = fleet.forecast(8, 4, per_household=True)
            out.append(("forecast", fc))
            out.append(("forecast", fleet.forecast(12, 4, by="feeder", per_household=True, starts=np.array([0, 3, 8]))))
            fleet._target = -np.minimum(0.3 * fc.baseline_kw[0], fc.flex_down_kw[0]) * (1 if slot == 28 else -0.5)
        if slot in range(28, 32) or slot in range(68, 72):
            left = (32 if slot < 32 else 72) - slot
            alloc = "greedy" if slot < 32 else "proportional"
            r = fleet.step(Control(target_kw=fleet._target, duration_steps=left, allocation=alloc, force=s in force_at))
        elif slot == 50:
            off = np.where(rng.random(fleet.n) < 0.3, -0.5, 0.0)
            r = fleet.step(Control(offset_kw=off, duration_steps=2))
        else:
            r = fleet.step()
        out.append(("step", r))
    return out


@pytest.mark.parametrize("perfect", [True, False])
def test_numba_fleet_reproduces_numpy_fleet_over_days_with_control(weather, perfect):
    ref, fast = fleets(weather, perfect_forecast=perfect)
    a, b = drive(ref, force_at={30, 100}), drive(fast, force_at={30, 100})
    controlled = 0
    for (kind, x), (_, y) in zip(a, b, strict=True):
        if kind == "step":
            for f in (
                "net_kw",
                "heat_kw",
                "ev_kw",
                "battery_kw",
                "pv_kw",
                "allocated_kw",
                "achieved_kw",
                "shortfall_kw",
                "by_feeder_kw",
                "by_owner_kw",
            ):
                assert_same(getattr(x, f), getattr(y, f), f"step {x.step} {f}")
            controlled += int(np.any(x.allocated_kw))
        else:
            for f in ("baseline_kw", "flex_down_kw", "flex_up_kw", "rebound_down_kwh", "rebound_up_kwh"):
                assert_same(getattr(x, f), getattr(y, f), f"forecast {x.start_step} {f}")
            for k in x.household:
                assert_same(x.household[k], y.household[k], f"forecast {x.start_step} household {k}")
    assert controlled >= 4 * 2 * DAYS  # the run really exercised control
    for f in ("t_in", "ev_remaining_kwh", "soc_kwh", "violation_degree_minutes", "ev_unmet_kwh"):
        assert_same(getattr(ref, f), getattr(fast, f), f"final {f}")
    assert np.array_equal(ref.violation_steps, fast.violation_steps)


def test_engine_from_environment(weather, monkeypatch):
    monkeypatch.setenv("FLECH_KERNELS", "numpy")
    assert HouseholdFleet.create(10, weather, 1).engine == "numpy"
    monkeypatch.setenv("FLECH_KERNELS", "numba")
    assert HouseholdFleet.create(10, weather, 1).engine == "numba"
    monkeypatch.setenv("FLECH_KERNELS", "fortran")
    with pytest.raises(ValueError, match="FLECH_KERNELS"):
        HouseholdFleet.create(10, weather, 1)


def test_ev_block_equals_steps_stacked(weather):
    fleet = HouseholdFleet.create(N, weather, np.random.SeedSequence(5), engine="numpy")
    idx = np.arange(0, N, 3)
    for start, k in ((0, 1), (50, 130), (90, 7)):  # within a day and across midnights
        blk = fleet.ev_schedule.block(start, k, idx)
        for f in ("connected", "dep_step", "arriving", "energy"):
            ref = np.stack([getattr(fleet.ev_schedule.at(s, idx), f) for s in range(start, start + k)])
            assert getattr(blk, f).dtype == ref.dtype
            np.testing.assert_array_equal(getattr(blk, f), ref)
    assert fleet.ev_schedule.block(50, 130).energy.max() > 0


def test_recovery_floor_kernel_equals_numpy_on_varying_cold_weather(weather):
    from flech_sim.households.physics import recovery_floor

    fleet = HouseholdFleet.create(N, weather, np.random.SeedSequence(5), {"design_temp_c": 0.0}, engine="numba")
    p = fleet.p
    t_out, irr = weather.outdoor_temp_c[:140] - 8.0, weather.irradiance_w_m2[:140]
    t_ref = np.random.default_rng(1).uniform(18.0, 23.0, (41, N))
    ref = recovery_floor(p, t_out, irr, t_ref)
    fast = kernels.recovery_floor(kernels.pack(p), kernels.scalars(p), t_out, irr, t_ref)
    assert_same(ref, fast, "recovery floor")
    assert (ref > p.t_min).sum() > 100  # raised floors (undersized heaters) and capped ones are both exercised
    assert (ref == t_ref).sum() > 100


def test_numba_fleet_reproduces_numpy_fleet_with_undersized_heaters(weather):
    """The drive above on a cold spell with heaters sized for 0 °C: the recovery floor binds."""
    from flech_sim.households import Weather

    cold = Weather(weather.start, weather.dt_minutes, weather.outdoor_temp_c - 8.0, weather.irradiance_w_m2)
    ref, fast = (
        HouseholdFleet.create(
            N, cold, np.random.SeedSequence(5), {"design_temp_c": 0.0}, n_feeders=4, n_owners=3, engine=e
        )
        for e in ("numpy", "numba")
    )
    tr = ref._simulate(None, ref.t_in, ref.ev_remaining_kwh, ref.soc_kwh, 0, 8)
    assert (tr.t_floor > ref.p.t_min).sum() > 100
    a, b = drive(ref), drive(fast)
    for (kind, x), (_, y) in zip(a, b, strict=True):
        names = ("net_kw", "heat_kw", "allocated_kw", "achieved_kw") if kind == "step" else ("flex_down_kw",)
        for f in names:
            assert_same(getattr(x, f), getattr(y, f), f"{kind} {f}")
    for f in ("t_in", "soc_kwh", "violation_degree_minutes"):
        assert_same(getattr(ref, f), getattr(fast, f), f"final {f}")
    np.testing.assert_array_equal(ref.comfort.forced_steps, fast.comfort.forced_steps)
