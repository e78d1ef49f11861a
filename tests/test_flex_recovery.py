"""The comfort floor of flexibility includes the recovery after release (physics.recovery_floor).

A home whose heater at full power cannot outrun the losses may only be shed down to the temperature
from which full-power heating keeps it at or above T_min over the following steps; otherwise it falls
below its band after release and dispatch is blamed for it (tests/test_comfort.py)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import numpy as np
import pytest

from flech_sim.households import Control, HouseholdFleet, Weather, generate_weather
from flech_sim.households.flex import window_flex
from flech_sim.households.physics import gains_kw, recovery_floor, thermal_step
from flech_sim.households.population import HouseholdParams

DT = 15


def _cold_weather(days: int, t_out: float) -> Weather:
    w = generate_weather("winter", datetime(2024, 1, 8), days * 96, DT, np.random.SeedSequence(1))
    return Weather(w.start, w.dt_minutes, np.full(w.n_steps, t_out), np.zeros(w.n_steps))


@pytest.fixture(scope="module")
def cold_fleet() -> HouseholdFleet:
    """Heaters sized for 0 °C in a -8 °C spell."""
    return HouseholdFleet.create(
        300, _cold_weather(4, -8.0), np.random.SeedSequence(3), {"design_temp_c": 0.0}, perfect_forecast=True
    )


def _full_power_path(p: HouseholdParams, x0: np.ndarray, t_out: np.ndarray, irr: np.ndarray) -> np.ndarray:
    """Temperatures at the end of each step when heating at full power from x0 (rows: steps)."""
    out, x = [], x0
    for to, ir in zip(t_out, irr, strict=True):
        x = thermal_step(x, to, p.cop(to) * p.p_heat_max + gains_kw(p, ir), p.r, p.a)
        out.append(x)
    return np.array(out)


def test_floor_by_hand_under_constant_weather(cold_fleet: HouseholdFleet) -> None:
    """Constant weather: T_ss = T_out + R (eta Pmax + gains) and the floor m steps before the end is
    T_ss + (T_min - T_ss) / a^m, or T_min where full power holds T_min anyway."""
    p, m = cold_fleet.p, 40
    t_out, irr = np.full(m, -8.0), np.zeros(m)
    t_ref = np.full((m + 1, p.n), 50.0)  # a reference far above: the cap does not bind
    got = recovery_floor(p, t_out, irr, t_ref)
    t_ss = -8.0 + p.r * (p.cop(-8.0) * p.p_heat_max + gains_kw(p, 0.0))
    steps_left = np.arange(m, -1, -1)[:, None]
    hand = np.maximum(p.t_min, t_ss + (p.t_min - t_ss) / p.a**steps_left)
    hand = np.where(p.has_heat, hand, p.t_min)
    np.testing.assert_allclose(got, hand, rtol=0, atol=1e-9)
    weak = p.has_heat & (t_ss < p.t_min)
    assert weak.sum() > 20 and (got[0, weak] > p.t_min[weak]).all()  # undersized: the floor is raised
    assert (got[0, weak] - p.t_min[weak]).max() > 1.0
    assert (got[:, ~weak] == p.t_min[~weak]).all()  # a heater that holds T_min leaves the floor at T_min
    assert (got[-1] == p.t_min).all()


def test_from_the_floor_full_power_stays_in_band_and_just_below_it_does_not(cold_fleet: HouseholdFleet) -> None:
    """The defining property, on varying weather: from the floor full power keeps T >= T_min over every
    later step; from a little below a raised floor it does not."""
    p = cold_fleet.p
    w = generate_weather("winter", datetime(2024, 1, 8), 120, DT, np.random.SeedSequence(4))
    t_out, irr = w.outdoor_temp_c - 6.0, w.irradiance_w_m2
    floor = recovery_floor(p, t_out, irr, np.full((31, p.n), 50.0))
    for k in (0, 10, 30):
        ok = _full_power_path(p, floor[k], t_out[k:], irr[k:])
        assert (ok[:, p.has_heat] >= p.t_min[p.has_heat] - 1e-9).all()
        raised = p.has_heat & (floor[k] > p.t_min + 1e-6)
        assert raised.sum() > 10
        low = _full_power_path(p, floor[k] - 1e-3, t_out[k:], irr[k:])
        assert (low[:, raised].min(axis=0) < p.t_min[raised]).all()


def test_floor_is_capped_at_the_reference_and_never_below_t_min(cold_fleet: HouseholdFleet) -> None:
    p = cold_fleet.p
    t_ref = np.full((11, p.n), 15.0)  # below every T_min
    got = recovery_floor(p, np.full(30, -8.0), np.zeros(30), t_ref)
    np.testing.assert_array_equal(got, np.broadcast_to(p.t_min, got.shape))
    mid = recovery_floor(p, np.full(30, -8.0), np.zeros(30), np.full((11, p.n), 50.0))
    t_ref = np.broadcast_to((p.t_min + mid[0]) / 2, (11, p.n))
    capped = recovery_floor(p, np.full(30, -8.0), np.zeros(30), t_ref)
    np.testing.assert_array_equal(capped, np.maximum(p.t_min, np.minimum(mid, t_ref)))
    with pytest.raises(ValueError, match="at least 10 steps"):
        recovery_floor(p, np.full(9, -8.0), np.zeros(9), t_ref)


def test_window_flex_gives_less_with_the_recovery_floor(cold_fleet: HouseholdFleet) -> None:
    fleet = cold_fleet
    tr = fleet._simulate(None, fleet.t_in, fleet.ev_remaining_kwh, fleet.soc_kwh, 0, 16)
    assert tr.t_floor is not None
    with_floor = window_flex(fleet.p, tr, 16, 0, starts=np.zeros(1, np.int64))
    at_t_min = window_flex(fleet.p, dataclasses.replace(tr, t_floor=None), 16, 0, starts=np.zeros(1, np.int64))
    assert (with_floor.heat_down <= at_t_min.heat_down + 1e-12).all()
    assert with_floor.heat_down.sum() < at_t_min.heat_down.sum() - 1.0
    np.testing.assert_array_equal(with_floor.heat_up, at_t_min.heat_up)
    np.testing.assert_array_equal(with_floor.bat_down, at_t_min.bat_down)


def _shed_and_release(recovery_steps: int | None, engine: str) -> HouseholdFleet:
    fleet = HouseholdFleet.create(
        300,
        _cold_weather(4, -8.0),
        np.random.SeedSequence(3),
        {"design_temp_c": 0.0},
        perfect_forecast=True,
        n_owners=3,
        engine=engine,  # type: ignore[arg-type]
    )
    if recovery_steps is not None:
        fleet.recovery_steps = recovery_steps
    for _ in range(8):
        fleet.step()
    ask = fleet.forecast(16, 16).baseline_kw.max(axis=0)  # shed everything, force off, for 4 hours
    for j in range(16):
        fleet.step(Control(target_kw=-ask, duration_steps=16 - j))
    for _ in range(24 * 4):  # released: a day of recovery on their own heaters
        fleet.step()
    return fleet


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_shed_homes_recover_on_their_own_heaters_after_release(engine: str) -> None:
    """Force off, heaters too small for the cold: with the recovery floor no breach is caused by dispatch;
    with the floor looking no further than the window (the former bound) dispatch causes breaches."""
    fleet = _shed_and_release(None, engine)
    c = fleet.comfort
    assert c.dispatched_steps.sum() > 100 and c.breach_steps.sum() > 0  # some homes breach on their own
    assert c.forced_steps.sum() == 0 and c.forced_degree_minutes.sum() == 0
    short_sighted = _shed_and_release(0, engine).comfort
    assert short_sighted.forced_steps.sum() > 10 and short_sighted.forced_degree_minutes.sum() > 1.0
