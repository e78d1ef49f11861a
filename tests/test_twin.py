"""The no-flexibility twin, the inputs tables and the study tables of a real (small) run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from flech_sim.cli import main
from flech_sim.results import open_run, open_runs, sql
from flech_sim.scenario import scenario_from_dict
from flech_sim.schema import TABLES
from flech_sim.simulation import run
from flech_sim.twin import twin_scenario

from .conftest import REPO, scenario_dict


@pytest.fixture(scope="module")
def with_twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("twin") / "run"
    result = run(scenario_from_dict(scenario_dict(horizon_hours=72)), out)
    assert result.completed, result.error
    return out


def test_twin_is_a_marked_run_directory_without_markets(with_twin: Path) -> None:
    m = json.loads((with_twin / "manifest.json").read_text())
    assert m["twin"]["completed"] and m["twin"]["wall_seconds"] > 0 and m["twin"]["run_dir"].endswith("twin")
    t = open_run(with_twin / "twin")
    assert t.manifest["is_twin"] is True and t.manifest["scenario"]["twin"] is False
    assert t.count("markets") == 0 and t.count("awards") == 0 and t.count("settlements") == 0
    assert open_run(with_twin).count("awards") > 0
    # the same households, weather and spot: only the flexibility differs
    main_run = open_run(with_twin)
    for name in ("weather", "spot_prices", "feeder_limits"):
        pd.testing.assert_frame_equal(main_run.table(name), t.table(name))
    cols = ["household", "owner", "feeder", "heating", "has_ev", "t_min_c", "t_max_c"]
    pd.testing.assert_frame_equal(main_run.table("households", cols), t.table("households", cols))
    assert open_runs(with_twin.parent).run_ids == ["run"]  # searches do not list the twin beside its run


def test_feeder_compare_and_rebound_against_the_twin(with_twin: Path) -> None:
    r, t = open_run(with_twin), open_run(with_twin / "twin")
    cmp = r.table("feeder_compare")
    assert len(cmp) == r.count("feeder_load") == t.count("feeder_load")
    fl = r.table("feeder_load").sort_values(["feeder", "interval_start"]).reset_index(drop=True)
    np.testing.assert_array_equal(cmp.load_kw, fl.load_kw)
    np.testing.assert_allclose(cmp.load_kw - cmp.twin_load_kw, cmp.change_kw)
    ev = r.table("rebound_events")
    assert len(ev) > 0 and set(ev.participant) <= {"agg-a", "agg-b"}
    assert (ev.direction == "down").all() and (ev.shifted_kwh > 0).all()  # the DSO buys down-regulation
    assert (ev.recovery_end >= ev.event_end).all()


def test_kpis_conserve_money_and_bound_delivery(with_twin: Path) -> None:
    k = open_run(with_twin).table("kpis")
    key = ["scope", "product_id", "participant", "feeder"]
    wide = k.fillna({c: "" for c in key}).pivot_table(index=key, columns="metric", values="value", aggfunc="first")
    money = wide.dropna(subset=["net_dkk"])
    assert len(money) >= 4  # run, product, two aggregators
    np.testing.assert_allclose(money.payments_dkk - money.penalties_dkk, money.net_dkk, atol=1e-9)
    assert (money.delivered_kwh <= money.ordered_kwh + 1e-9).all()
    s = open_run(with_twin).table("settlements")
    assert money.loc[("run", "", "", ""), "net_dkk"] == pytest.approx(s[s.role == "seller"].net_dkk.sum())
    assert {"overload_kwh_without_flex", "rebound_ratio", "baseline_mae_kw"} <= set(k.metric)
    summary = json.loads((with_twin / "manifest.json").read_text())["summary"]["kpis"]
    assert summary["delivery_ratio"] == pytest.approx(money.loc[("run", "", "", ""), "delivery_ratio"], abs=1e-6)


def test_duckdb_views_hold_every_row(with_twin: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert run(scenario_from_dict(scenario_dict(horizon_hours=48, seed=3, twin=False)), other).completed
    con = sql([with_twin, other])
    for name in TABLES:
        expected = {p.name: pq.ParquetFile(p / f"{name}.parquet").metadata.num_rows for p in (with_twin, other)}
        got = dict(con.sql(f'select run_id, count(*) from "{name}" group by run_id').fetchall())
        assert {rid: got.get(rid, 0) for rid in expected} == expected, name


def test_twin_equals_the_run_when_no_flexibility_is_traded(tmp_path: Path) -> None:
    doc = scenario_dict(horizon_hours=56)  # the day-1 market settles at 54 h (meter data): it is opened
    doc["buyers"][0]["markets"][0]["price_cap"] = 0.001  # every bid is priced above it: nothing is awarded
    result = run(scenario_from_dict(doc), tmp_path / "r")
    assert result.completed, result.error
    r = open_run(tmp_path / "r")
    assert r.count("markets") > 0 and r.table("awards").accepted_kw.sum() == 0
    assert r.count("flex_forecasts") > 0  # the aggregators did forecast and bid: only no award
    cmp = r.table("feeder_compare")
    assert len(cmp) > 0 and (cmp.change_kw == 0).all()  # identical draws: keyed seed streams
    pd.testing.assert_frame_equal(r.table("portfolio_load"), open_run(tmp_path / "r" / "twin").table("portfolio_load"))
    assert r.count("rebound_events") == 0


def test_imbalance_table_is_the_series_the_tso_bought(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "tests" / "reference_scenarios" / "products_mix.yaml").read_text())
    hours = 32  # day 0's meter data is out at 30 h: the TSO opens the markets it can settle
    doc.update(horizon_hours=hours, twin=False)
    assert run(scenario_from_dict(doc), tmp_path / "r").completed
    r = open_run(tmp_path / "r")
    imb = r.table("imbalance")
    assert len(imb) == hours * 60 // imb.interval_minutes.iloc[0] and set(imb.buyer) == {"tso-ref"}
    mk = r.table("markets")
    mk = mk[mk.buyer == "tso-ref"].merge(imb, left_on="delivery_start", right_on="interval_start")
    assert len(mk) > 0
    np.testing.assert_allclose(mk.need_kwh, mk.need_kw.abs() * mk.interval_minutes_x / 60, atol=1e-3)  # need rounded
    w = r.table("weather")
    assert len(w) == hours * 60 // doc.get("households", {}).get("dt_minutes", 15) and w.outdoor_temp_c.notna().all()
    assert r.table("feeder_limits").to_dict("records") == [
        {"feeder": "feeder-1", "limit_kw": 1285.0, "households": 470}
    ]


def test_cli_no_twin_and_kpis_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario_dict(horizon_hours=48)))
    assert main(["run", str(path), "--out", str(tmp_path / "r"), "--no-progress", "--no-twin"]) == 0
    out = capsys.readouterr().out
    assert "delivered/ordered" in out and "without flexibility n/a" in out
    assert not (tmp_path / "r" / "twin").exists()
    r = open_run(tmp_path / "r")
    assert r.manifest["twin"] is None and r.count("feeder_compare") == 0
    assert not any(m.endswith("_without_flex") for m in r.table("kpis").metric)
    assert main(["kpis", str(tmp_path / "r"), "--scope", "run"]) == 0
    printed = capsys.readouterr().out
    assert "delivery_ratio" in printed and "feeder-1" not in printed


def test_twin_scenario_withholds_every_buyers_markets() -> None:
    s = scenario_from_dict(scenario_dict())
    t = twin_scenario(s)
    assert t.twin is False and t.seed == s.seed and t.households == s.households
    assert [b.id for b in t.buyers] == [b.id for b in s.buyers]
    assert all(not b.markets and b.congestion is None and b.balancing is None for b in t.buyers)
