"""Comfort is real (issue 10 item 6): dispatch keeps homes in their band unless the aggregator forces it;
forced breaches are recorded per home, compensated by the aggregator (money conserved) and reported as
KPIs; the temperature sample holds dispatched homes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import simpy
import yaml

from flech_sim.households import Control, HouseholdFleet, child_seed, generate_weather
from flech_sim.kpis import comfort_kpis, net_margin_kpis
from flech_sim.persistor import Persistor
from flech_sim.scenario import COMFORT_COMPENSATION_DKK_PER_DEGREE_HOUR, ScenarioError, scenario_from_dict
from flech_sim.world import World

from .conftest import REPO

DT = 15
PRICE = 40.0  # DKK per K h for the forcing aggregator (not the default, so the test sees it used)


# -- the fleet --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weather():  # type: ignore[no-untyped-def]
    from datetime import datetime

    return generate_weather("winter", datetime(2024, 1, 8), 3 * 96, DT, np.random.SeedSequence(2024))


def _shed_everything(weather, force):  # type: ignore[no-untyped-def]
    fleet = HouseholdFleet.create(300, weather, np.random.SeedSequence(7), n_owners=3, perfect_forecast=True)
    for _ in range(88):  # 22:00: a cold night ahead
        fleet.step()
    ask = fleet.forecast(16, 16).baseline_kw.max(axis=0)  # shed everything for 4 hours
    short = np.zeros(3)
    for j in range(16):
        res = fleet.step(Control(target_kw=-ask, duration_steps=16 - j, force=force))
        short += res.group_shortfall_kw
    for _ in range(24):  # released: the homes recover, still blamed until back in their band
        fleet.step()
    return fleet, short


def test_force_per_owner_breaches_only_the_forcing_owners_homes(weather) -> None:  # type: ignore[no-untyped-def]
    fleet, short = _shed_everything(weather, np.array([True, False, False]))
    soft, soft_short = _shed_everything(weather, False)
    c, p = fleet.comfort, fleet.p
    mine = fleet.owner == 0
    assert (c.breach_steps[mine] > 0).sum() > 10
    assert (c.breach_steps[~mine] == 0).all() and (soft.comfort.breach_steps == 0).all()
    # every breach of the forcing owner's homes is dispatch's doing: they sat in their band before
    np.testing.assert_array_equal(c.forced_steps, c.breach_steps)
    np.testing.assert_allclose(c.forced_degree_minutes, c.degree_minutes, rtol=0, atol=1e-12)
    assert (c.forced_steps[c.breach_steps > 0] > 0).all() and (c.dispatched_steps[c.forced_steps > 0] > 0).all()
    # forcing delivers more of the same ask; the others are exactly as without force
    assert short[0] < soft_short[0] - 1.0
    np.testing.assert_allclose(short[1:], soft_short[1:], rtol=1e-12, atol=1e-9)
    # a breach is measured from the end-of-step temperature, and only heated homes have one
    assert (c.breach_steps[~p.has_heat] == 0).all()
    np.testing.assert_array_equal(fleet.violation_steps, c.breach_steps)


def test_a_forecast_copy_never_writes_into_the_real_record(weather) -> None:  # type: ignore[no-untyped-def]
    fleet, _ = _shed_everything(weather, True)
    before = fleet.comfort
    twin = fleet.forecast_copy()
    ask = twin.forecast(8, 8).baseline_kw.max(axis=0)
    for j in range(8):
        twin.step(Control(target_kw=-ask, duration_steps=8 - j, force=True))
    # the copy was driven out of band, but a forecast is thrown away: it keeps no record of its own
    # (stepping one costs 11 % less so), and the real record is untouched
    assert (twin.p.has_heat & (twin.t_in < twin.p.t_min - 1e-6)).any()
    np.testing.assert_array_equal(twin.comfort.breach_steps, before.breach_steps)
    assert fleet.comfort is before


def test_a_breach_the_homes_own_heater_cannot_avoid_is_recorded_not_blamed() -> None:
    """Heaters sized for 0 °C in a -15 °C week: homes fall below their band undisturbed."""
    from datetime import datetime

    from flech_sim.households import Weather

    w = generate_weather("winter", datetime(2024, 1, 8), 2 * 96, DT, np.random.SeedSequence(1))
    w = Weather(w.start, w.dt_minutes, np.full(w.n_steps, -15.0), np.zeros(w.n_steps))
    fleet = HouseholdFleet.create(200, w, np.random.SeedSequence(3), {"design_temp_c": 0.0}, perfect_forecast=True)
    for _ in range(96):
        fleet.step()
    c = fleet.comfort
    assert (c.breach_steps > 0).sum() > 10 and c.degree_minutes.sum() > 0
    assert c.forced_steps.sum() == 0 and c.forced_degree_minutes.sum() == 0 and c.dispatched_steps.sum() == 0


# -- the world: a portfolio ordered to shed more than comfort allows -------------------------------
def _scenario(force: dict[str, bool], fleet: dict[str, Any] | None = None, weather_csv: str | None = None) -> Any:
    doc = yaml.safe_load((REPO / "scenarios" / "default.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["horizon_hours"] = 40
    doc["twin"] = False
    doc["households"]["perfect_forecast"] = True
    doc["households"]["record_households"] = 2
    if fleet:
        doc["households"]["fleet"].update(fleet)
    if weather_csv:
        doc["households"]["weather_csv"] = weather_csv
    for a in doc["aggregators"]:
        a["dispatch"] = {"force": force[a["id"]], "comfort_compensation_dkk_per_degree_hour": PRICE}
    return scenario_from_dict(doc)


def _world_run(tmp: Path, force: dict[str, bool], shed_share: float | None, **kw: Any) -> dict[str, pd.DataFrame]:
    """Both aggregators shed ``shed_share`` of their feeder-1 load 17:00-21:00 (None: no order: the twin)."""
    s = _scenario(force, **kw)
    persistor = Persistor(tmp, s.start)
    env = simpy.Environment()
    world = World(env, s, child_seed(np.random.SeedSequence(s.seed), 1), persistor)
    world.start()
    first, steps = 17 * 60 // DT, 4 * 60 // DT
    env.run(until=first * DT - DT)
    if shed_share is not None:
        for owner in ("agg-north", "agg-south"):
            pf = world.portfolio_of(owner)
            base = pf.forecast(first, steps).baseline_kw[first - env.now // DT :][:steps].mean(axis=0)
            change = np.where(np.array(pf.feeders) == "feeder-1", -shed_share * base, 0.0)
            pf.schedule(first * DT, 60, change[:, None].repeat(4, axis=1))
    env.run(until=s.horizon_minutes)
    world.finalize()
    assert not persistor.close()
    names = ("comfort", "comfort_compensation", "households", "household_temperatures", "portfolio_load")
    return {n: pd.read_parquet(tmp / f"{n}.parquet") for n in names}


@pytest.fixture(scope="module")
def forced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    return _world_run(tmp_path_factory.mktemp("forced"), {"agg-north": True, "agg-south": False}, 1.0)


def test_forced_dispatch_breaches_are_recorded_per_home(forced: dict[str, pd.DataFrame]) -> None:
    c = forced["comfort"]
    north, south = c[c.owner == "agg-north"], c[c.owner == "agg-south"]
    hit = north[north.forced_breach_steps > 0]
    assert len(hit) > 5 and (hit.forced_degree_hours_below > 0).all() and (hit.dispatched_steps > 0).all()
    assert (hit.feeder == "feeder-1").all()  # the order was for feeder-1 only
    assert (south.breach_steps == 0).all() and (south.dispatched_steps > 0).any()  # dispatched, kept in band
    assert (c[c.owner == "unaggregated"].dispatched_steps == 0).all()
    # the households table carries the same breaches (all of them; here all caused by dispatch)
    hh = forced["households"].set_index("household").loc[c.household]
    np.testing.assert_array_equal(hh.comfort_violation_steps.to_numpy(), c.breach_steps.to_numpy())
    total = (c.degree_hours_below + c.degree_hours_above).to_numpy()
    np.testing.assert_allclose(hh.comfort_violation_degree_minutes.to_numpy() / 60, total, rtol=1e-12)


def test_compensation_is_degree_hours_times_price_and_money_is_conserved(forced: dict[str, pd.DataFrame]) -> None:
    c, pay = forced["comfort"], forced["comfort_compensation"]
    assert set(pay.aggregator) == {"agg-north"} and (pay.payee == "households").all()
    assert (pay.price_dkk_per_degree_hour == PRICE).all()
    north = c[c.owner == "agg-north"]
    dh = float((north.forced_degree_hours_below + north.forced_degree_hours_above).sum())
    assert dh > 0.5
    assert pay.degree_hours.sum() == pytest.approx(dh, rel=1e-9)
    assert pay.compensation_dkk.sum() == pytest.approx(PRICE * dh, rel=1e-9)
    np.testing.assert_allclose(pay.compensation_dkk, pay.degree_hours * PRICE, rtol=1e-12)
    # what the aggregator pays is what its households receive, home by home
    assert c.compensation_dkk.sum() == pytest.approx(pay.compensation_dkk.sum(), rel=1e-9)
    np.testing.assert_allclose(
        north.compensation_dkk, PRICE * (north.forced_degree_hours_below + north.forced_degree_hours_above)
    )
    assert (c[c.owner != "agg-north"].compensation_dkk == 0).all()
    assert pd.Timestamp(pay.day.min()) == pd.Timestamp("2026-01-12")  # charged with the day of the breach


def test_degree_hours_by_hand_from_a_recorded_home(forced: dict[str, pd.DataFrame]) -> None:
    """A sampled home's degree-hours are the sum over its recorded steps of (T_min - T) x 0.25 h."""
    t, c = forced["household_temperatures"], forced["comfort"].set_index("household")
    hit = [h for h in t.household.unique() if c.loc[h, "forced_breach_steps"] > 0]
    assert hit, "the first-dispatched part of the sample holds a forced home"
    for h in hit:
        g = t[t.household == h]
        assert g.interval_start.min() == pd.Timestamp("2026-01-12 00:15")  # recorded from the day's start
        by_hand = float(((g.t_min_c - g.t_in_c).clip(lower=0) * (g.t_in_c < g.t_min_c - 1e-9)).sum() * DT / 60)
        assert c.loc[h, "forced_degree_hours_below"] == pytest.approx(by_hand, rel=1e-9)
        assert int((g.t_in_c < g.t_min_c - 1e-9).sum()) == c.loc[h, "forced_breach_steps"]


def test_the_temperature_sample_is_stratified_and_holds_dispatched_homes(forced: dict[str, pd.DataFrame]) -> None:
    t, c = forced["household_temperatures"], forced["comfort"].set_index("household")
    homes = t.groupby("household").agg(stratum=("stratum", "first"), selection=("selection", "first"))
    assert set(homes.stratum) == {"aggregated", "unaggregated"}
    owner = c.loc[homes.index, "owner"]
    assert ((homes.stratum == "unaggregated") == (owner == "unaggregated")).all()
    assert (c.loc[homes.index, "heating"] != "none").all()
    # per owner: 2 at random; each aggregator adds its first 2 dispatched homes
    assert (homes[homes.selection == "random"].groupby(owner).size() == 2).all()
    first = homes[homes.selection == "first_dispatched"]
    assert len(first) == 4 and (c.loc[first.index, "dispatched_steps"] > 0).all()
    # the per-step flag is the fleet's count of dispatched steps, home by home
    flagged = t.groupby("household").dispatched.sum()
    np.testing.assert_array_equal(flagged.to_numpy(), c.loc[flagged.index, "dispatched_steps"].to_numpy())
    assert t[t.stratum == "unaggregated"].dispatched.sum() == 0


def _cold(tmp_path: Path) -> dict[str, Any]:
    """Heaters sized for 0 °C in a -8 °C spell: undisturbed homes breach their band on their own."""
    hours = pd.date_range("2026-01-11", periods=24 * 5, freq="h")
    pd.DataFrame({"timestamp": hours, "outdoor_temp_c": -8.0, "irradiance_w_m2": 0.0}).to_csv(
        tmp_path / "cold.csv", index=False
    )
    return {"fleet": {"design_temp_c": 0.0}, "weather_csv": str(tmp_path / "cold.csv")}


OFF = {"agg-north": False, "agg-south": False}


def test_without_force_dispatch_causes_no_breach(tmp_path: Path) -> None:
    """Force off: the same over-order leaves every home's degree-hours as in the no-flexibility twin: 0."""
    ordered = _world_run(tmp_path / "ordered", OFF, 1.0)
    twin = _world_run(tmp_path / "twin", OFF, None)
    c, tc = ordered["comfort"], twin["comfort"]
    assert c.dispatched_steps.sum() > 100 and tc.dispatched_steps.sum() == 0
    assert c.forced_breach_steps.sum() == 0 and ordered["comfort_compensation"].empty
    assert (c.breach_steps == 0).all() and (tc.breach_steps == 0).all()


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    tmp = tmp_path_factory.mktemp("cold")
    kw = _cold(tmp)
    return _world_run(tmp / "ordered", OFF, 1.0, **kw)["comfort"], _world_run(tmp / "twin", OFF, None, **kw)["comfort"]


def test_breaches_caused_by_dispatch_are_the_excess_over_the_twin(cold: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """The undisturbed temperature stepped beside each home is the twin's: homes never dispatched have
    exactly the twin's breaches and none blamed on dispatch; a dispatched home is blamed at least its
    excess over the twin (per step: a pre-heat that spares a later breach does not offset one caused)."""
    c, tc = cold
    dh, tdh = (d.degree_hours_below + d.degree_hours_above for d in (c, tc))
    forced = c.forced_degree_hours_below + c.forced_degree_hours_above
    assert tdh.sum() > 10 and (tc.forced_breach_steps == 0).all()  # the twin's own breaches are nobody's doing
    never = c.dispatched_steps == 0
    np.testing.assert_allclose(dh[never], tdh[never], rtol=1e-9, atol=1e-9)
    assert (c.forced_breach_steps[never] == 0).all()
    assert (forced >= dh - tdh - 1e-9).all() and (forced <= dh + 1e-9).all()


def test_without_force_dispatch_causes_no_breach_even_with_undersized_heaters(
    cold: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    c, tc = cold
    assert c.forced_breach_steps.sum() == 0
    np.testing.assert_allclose(
        c.degree_hours_below + c.degree_hours_above, tc.degree_hours_below + tc.degree_hours_above, atol=1e-9
    )


# -- KPIs and the scenario --------------------------------------------------------------------------
def test_comfort_kpis_and_net_margin_by_hand() -> None:
    households = pd.DataFrame(
        {"owner": ["a", "a", "b", "unaggregated"], "comfort_violation_degree_minutes": [120.0, 30.0, 0.0, 60.0]}
    )
    comfort = households.assign(
        forced_degree_hours_below=[1.5, 0.0, 0.0, 0.0],
        forced_degree_hours_above=[0.0, 0.25, 0.0, 0.0],
        forced_breach_steps=[6, 1, 0, 0],
    )
    comp = pd.DataFrame({"aggregator": ["a", "a"], "compensation_dkk": [30.0, 5.0]})
    twin = households.assign(comfort_violation_degree_minutes=[0.0, 0.0, 0.0, 60.0])
    rows = comfort_kpis(households, comfort, comp, twin)
    money = [
        {"scope": "aggregator", "product_id": None, "participant": "a", "metric": "net_dkk", "value": 100.0},
        {"scope": "aggregator", "product_id": None, "participant": "b", "metric": "net_dkk", "value": -4.0},
        {"scope": "run", "product_id": None, "participant": None, "metric": "net_dkk", "value": 96.0},
    ]
    rows += net_margin_kpis(money + rows)
    got = {(r["scope"], r["participant"], r["metric"]): r["value"] for r in rows}
    assert got[("aggregator", "a", "comfort_degree_hours")] == 2.5  # (120 + 30) / 60
    assert got[("run", None, "comfort_degree_hours")] == 3.5  # unaggregated homes count in the run only
    assert got[("aggregator", "a", "comfort_degree_hours_forced")] == 1.75
    assert got[("aggregator", "b", "comfort_degree_hours_forced")] == 0.0
    assert got[("aggregator", "a", "comfort_degree_hours_without_flex")] == 0.0
    assert got[("run", None, "comfort_degree_hours_without_flex")] == 1.0
    assert got[("aggregator", "a", "comfort_breach_households")] == 2.0
    assert got[("aggregator", "a", "comfort_compensation_dkk")] == 35.0
    assert got[("aggregator", "a", "net_margin_dkk")] == 65.0
    assert got[("aggregator", "b", "net_margin_dkk")] == -4.0
    assert got[("run", None, "net_margin_dkk")] == 61.0


def test_dispatch_terms_in_the_scenario() -> None:
    s = _scenario({"agg-north": True, "agg-south": False})
    by = {a.id: a.dispatch for a in s.aggregators}
    assert by["agg-north"].force and not by["agg-south"].force
    doc = yaml.safe_load((REPO / "scenarios" / "default.yaml").read_text())
    default = scenario_from_dict(doc).aggregators[0].dispatch
    assert default.force is False
    assert default.comfort_compensation_dkk_per_degree_hour == COMFORT_COMPENSATION_DKK_PER_DEGREE_HOUR
    doc["aggregators"][0]["dispatch"] = {"force": True, "comfort_compensation_dkk_per_degree_hour": -1}
    with pytest.raises(ScenarioError, match="comfort_compensation"):
        scenario_from_dict(doc)
