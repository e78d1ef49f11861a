"""Households, aggregators and the data provider in whole runs (the physics is in test_households_*)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flech_sim.scenario import Scenario, load_scenario
from flech_sim.simulation import run

from .conftest import REPO


def default() -> Scenario:
    return load_scenario(REPO / "scenarios" / "default.yaml")


def with_households(s: Scenario, **kw) -> Scenario:  # type: ignore[no-untyped-def]
    return s.model_copy(update={"households": s.households.model_copy(update=kw)})


def tables(out: Path, *names: str) -> list[pd.DataFrame]:
    return [pd.read_parquet(out / f"{n}.parquet") for n in names]


@pytest.fixture(scope="module")
def default_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "run"
    assert run(default(), out).completed
    return out


def test_feeder_load_is_the_sum_of_its_households(default_out: Path) -> None:
    feeder, portfolio = tables(default_out, "feeder_load", "portfolio_load")
    summed = portfolio.groupby(["location", "interval_start"]).load_kw.sum()
    joined = feeder.set_index(["feeder", "interval_start"]).load_kw
    assert len(joined) == len(summed) > 0
    pd.testing.assert_series_equal(summed.sort_index(), joined.sort_index(), check_names=False, rtol=1e-9)
    assert (feeder.groupby("feeder").limit_kw.nunique() == 1).all()


def test_comfort_bands_hold_under_dispatch(default_out: Path) -> None:
    hh, temps, awards = tables(default_out, "households", "household_temperatures", "awards")
    assert awards.accepted_kw.sum() > 0  # households were really dispatched
    assert len(hh) == 590 and (hh.comfort_violation_steps == 0).all()
    heated = temps.merge(hh[["household", "heating"]], on="household")
    heated = heated[heated.heating != "none"]
    assert len(heated) > 0
    assert (heated.t_in_c >= heated.t_min_c - 1e-6).all() and (heated.t_in_c <= heated.t_max_c + 1e-6).all()


def test_commitments_never_exceed_forecast_flexibility(default_out: Path) -> None:
    fc, awards, bids = tables(default_out, "flex_forecasts", "awards", "bids")
    assert (fc.offered_kw + fc.committed_kw <= fc.flex_kw + 1e-6).all()
    flex = fc.groupby(["market_id", "aggregator", "interval"]).flex_kw.sum()
    offered = bids.groupby(["market_id", "seller", "interval"]).quantity_kw.sum()
    awarded = awards.groupby(["market_id", "seller", "interval"]).accepted_kw.sum()
    offered.index.names = awarded.index.names = flex.index.names
    assert (awarded <= offered + 1e-6).all() and (offered <= flex.loc[offered.index] + 1e-3).all()


def test_perfect_forecast_delivers_the_award(tmp_path: Path) -> None:
    out = tmp_path / "perfect"
    assert run(with_households(default(), perfect_forecast=True), out).completed
    (st,) = tables(out, "settlements")
    sellers = st[st.role == "seller"]
    assert sellers.ordered_kwh.sum() > 0
    # tolerance: baselines are declared rounded to 1 W, so 0.01 kWh per interval
    assert (sellers.delivered_kwh >= sellers.ordered_kwh - 0.01).all()


def test_forecast_error_brings_penalised_shortfalls(tmp_path: Path) -> None:
    out = tmp_path / "noisy"
    assert run(default().model_copy(update={"seed": 2}), out).completed
    (st,) = tables(out, "settlements")
    short = st[(st.role == "seller") & (st.delivered_kwh < st.ordered_kwh - 0.01)]
    assert len(short) > 0
    assert (short.penalty_dkk > 0).all()
    m = default().buyers[0].markets[0]  # the market's penalty price, else penalty_factor x its price cap
    penalty = m.penalty_price if m.penalty_price is not None else default().settlement.penalty_factor * m.price_cap
    assert short.penalty_dkk.sum() == pytest.approx(((short.ordered_kwh - short.delivered_kwh) * penalty).sum())


def test_data_provider_gaps_and_household_meters(tmp_path: Path) -> None:
    s = default()
    s = s.model_copy(
        update={
            "data_provider": s.data_provider.model_copy(
                update={"gap_probability": 0.3, "household_meters": True, "noise": 0.01}
            )
        }
    )
    out = tmp_path / "gaps"
    assert run(s, out).completed
    meter, st, hh = tables(out, "meter_data", "settlements", "households")
    assert meter.consumption_kw.isna().any()
    owned = hh[hh.owner != "unaggregated"]
    assert {f"{p}#{h}" for p, h in zip(owned.metering_point, owned.household, strict=True)} <= set(meter.metering_point)
    gaps = st[(st.role == "seller") & st.meter_gap]
    assert len(gaps) > 0 and (gaps.delivered_kwh == 0).all()  # the declared rule: no_delivery


def test_every_simulated_step_is_written(tmp_path: Path) -> None:
    out = tmp_path / "partial"
    assert run(default().model_copy(update={"horizon_hours": 30}), out).completed
    feeder, portfolio, temps = tables(out, "feeder_load", "portfolio_load", "household_temperatures")
    steps = 30 * 60 // 15
    assert (feeder.groupby("feeder").size() == steps).all()
    assert (portfolio.groupby("metering_point").size() == steps).all()
    assert (temps.groupby("household").size() == steps).all()
    assert feeder.interval_start.max() == pd.Timestamp("2026-01-13 05:45")


def test_weather_and_base_load_from_csv(tmp_path: Path) -> None:
    """Series named in the scenario replace the generated ones (hourly, read at each step's midpoint)."""
    hours = pd.date_range("2026-01-11", periods=24 * 7, freq="h")
    weather = pd.DataFrame({"timestamp": hours, "outdoor_temp_c": -5.0, "irradiance_w_m2": 0.0})
    weather.to_csv(tmp_path / "w.csv", index=False)
    peaky = [2.0 if 17 <= h.hour <= 19 else 0.3 for h in hours]
    pd.DataFrame({"timestamp": hours, "flat": 0.5, "peaky": peaky}).to_csv(tmp_path / "b.csv", index=False)
    s = default().model_copy(update={"horizon_hours": 48})
    s = with_households(
        s,
        weather_csv=str(tmp_path / "w.csv"),
        base_load_csv=str(tmp_path / "b.csv"),
        fleet={
            "share_heat_pump": 0.0,
            "share_panel_heater": 0.0,
            "share_ev": 0.0,
            "share_battery": 0.0,
            "share_pv": 0.0,
        },
    )
    out = tmp_path / "csv"
    assert run(s, out).completed
    (feeder,) = tables(out, "feeder_load")
    f2 = feeder[feeder.feeder == "feeder-2"].set_index("interval_start").load_kw
    n2 = 80 + 150  # households on feeder-2, alternating flat / peaky profiles (no devices: base load only)
    assert f2.loc["2026-01-12 03:00"] == pytest.approx(n2 / 2 * 0.5 + n2 / 2 * 0.3, rel=1e-6)
    assert f2.loc["2026-01-12 18:00"] == pytest.approx(n2 / 2 * 0.5 + n2 / 2 * 2.0, rel=1e-6)
