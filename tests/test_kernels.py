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


def test_split_and_dispatch_kernels_equal_numpy_on_random_cases(weather):
    """kernels.split_devices and kernels.dispatch (the tail of a controlled step) against the numpy
    path, on random headrooms, offsets, states, EV sessions and force/ctl masks that hit every clip."""
    from types import SimpleNamespace

    from flech_sim.households.ev import EvStep
    from flech_sim.households.flex import DeviceFlex, split_devices
    from flech_sim.households.physics import StepInputs, default_powers

    rng = np.random.default_rng(8)
    fleet = HouseholdFleet.create(N, weather, np.random.SeedSequence(5), engine="numpy")
    p, pk, sc = fleet.p, kernels.pack(fleet.p), kernels.scalars(fleet.p)
    clipped = 0
    for case in range(6):
        tiers = [
            DeviceFlex(*rng.uniform(0.0, 2.0, (8, 1, N)) * (rng.random((8, 1, N)) < 0.7)) for _ in range(1 + case % 2)
        ]
        off = rng.normal(0.0, 1.5, N) * (rng.random(N) < 0.8)
        ref = split_devices(off, tiers)
        fields = list(DeviceFlex.__dataclass_fields__)[:6]
        fast = kernels.split_devices(off, np.array([[getattr(f, x)[0] for x in fields] for f in tiers]))
        for r, f, what in zip(ref, fast, ("battery", "ev", "heat"), strict=True):
            assert_same(r, f, f"split {what}")
        s = 30 + case
        conn = rng.random(N) < 0.5
        dep = np.where(conn, s + rng.integers(0, 12, N), -1)
        ev = EvStep(conn, dep, conn & (rng.random(N) < 0.2), rng.uniform(0, 20, N))
        t_in = p.t_min + rng.uniform(-1.0, 3.0, N) * (p.t_max - p.t_min)
        rem = rng.uniform(0.0, 30.0, N) * conn
        soc = rng.uniform(p.soc_min, p.soc_max)
        inp = StepInputs(float(rng.uniform(-10, 10)), float(rng.uniform(0, 400)), rng.uniform(0.1, 1.0, N), ev)
        dp = default_powers(p, t_in, rem, soc, inp)
        act = np.flatnonzero(rng.random(N) < 0.7)
        tr = SimpleNamespace(
            t_floor=np.vstack([t_in[act], p.t_min[act] + rng.uniform(0.0, 1.0, act.size)]),
            heat=rng.uniform(0, 3, (1, act.size)),
            ev=rng.uniform(0, 7, (1, act.size)),
            bat=rng.uniform(-3, 3, (1, act.size)),
        )
        force = rng.random(N) < (0.0, 0.3, 1.0)[case % 3]
        ctl = rng.random(N) < 0.8
        o = [rng.normal(0.0, 2.0, N) for _ in range(3)]
        fleet.t_in, fleet.ev_remaining_kwh, fleet.soc_kwh = t_in, rem, soc
        want = fleet._dispatch_numpy(s, inp, dp, tr, act, force, off, ctl, *o)
        floor = p.t_min.copy()
        floor[act] = tr.t_floor[1]
        refs = tuple(np.bincount(act, x[0], N) for x in (tr.heat, tr.ev, tr.bat))
        got = kernels.dispatch(
            pk, sc, inp.t_out, s, t_in, rem, soc, ev, dp.gains, dp.eta, ~force, floor, refs, tuple(o), ctl,
            (dp.heat, dp.ev, dp.bat), off,
        )  # fmt: skip
        for w, g, what in zip(want, got, ("heat", "ev", "battery", "achieved", "shortfall"), strict=True):
            assert_same(w, g, f"dispatch {what} case {case}")
        clipped += int(np.sum(ctl & (want[0] != refs[0] + o[2])))
    assert clipped > 100  # the limits bound often, not only the plan plus offset


def test_forecast_copies_share_inputs_equal_to_the_fleets(weather):
    """A copy's cached EV status and base load equal the fleet's at the same households, step by
    step and in blocks across midnights; copies of the same households share them."""
    fleet = HouseholdFleet.create(N, weather, np.random.SeedSequence(5), engine="numba")
    hh = np.arange(3, N, 7)
    a, b = fleet.forecast_copy(hh), fleet.forecast_copy(hh.copy())
    assert a.ev_schedule is b.ev_schedule and a._packed is b._packed and a.p is b.p
    sub = np.array([0, 4, 5, 30])
    for start, k in ((0, 1), (50, 130), (95, 7), (200, 90)):
        blk = a.ev_schedule.block(start, k, sub)
        ref = fleet.ev_schedule.block(start, k, hh[sub])
        for f in ("connected", "dep_step", "arriving", "energy"):
            assert getattr(blk, f).dtype == getattr(ref, f).dtype
            np.testing.assert_array_equal(getattr(blk, f), getattr(ref, f))
        for s in (start, start + k - 1):
            for f in ("connected", "dep_step", "arriving", "energy"):
                np.testing.assert_array_equal(getattr(a.ev_schedule.at(s), f), getattr(fleet.ev_schedule.at(s, hh), f))
        want = np.stack([fleet.base_load.expected(s, hh[sub]) for s in range(start, start + k)])
        np.testing.assert_array_equal(a.base_load.expected_block(start, k, sub), want)
    assert fleet.ev_schedule.block(50, 130, hh).energy.max() > 0
    # a copy of a copy reads the fleet's sources at the composed indices
    cc = a.forecast_copy(sub)
    want = fleet.ev_schedule.block(60, 100, hh[sub]).energy
    np.testing.assert_array_equal(cc.ev_schedule.block(60, 100).energy, want)
    np.testing.assert_array_equal(cc.base_load.expected(70), fleet.base_load.expected(70, hh[sub]))


@pytest.mark.parametrize("homes", [12, 150])
def test_controlled_rollout_of_a_copy_equal_in_both_engines(weather, homes):
    """100 steps of a forecast copy under layered commitments (a long shed, calls against it, a gap),
    as benchmarks/bench_households.py --rollout runs them: both engines give the same outcomes (the
    numba engine reuses last step's plans, the numpy reference simulates them afresh each step)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_households.py"
    spec = importlib.util.spec_from_file_location("bench_households", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = {}
    for e in ("numpy", "numba"):
        fleet, hh = bench.rollout_case(homes, e)
        twin = fleet.forecast_copy(hh)
        out[e] = [twin.step(c) for c in bench.rollout_controls(fleet, hh)]
        assert (twin._plan is not None) == (e == "numba")
    controlled = 0
    for x, y in zip(out["numpy"], out["numba"], strict=True):
        for f in ("net_kw", "heat_kw", "ev_kw", "battery_kw", "allocated_kw", "achieved_kw", "shortfall_kw"):
            assert_same(getattr(x, f), getattr(y, f), f"step {x.step} {f}")
        if x.group_target_kw is not None:
            assert_same(x.group_achieved_kw, y.group_achieved_kw, f"step {x.step} group achieved")
        controlled += int(np.any(x.allocated_kw))
    assert controlled > 80
