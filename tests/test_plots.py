"""Figures show what the tables say: the data of every line and bar is compared with the grouped tables."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from flech_sim import plots
from flech_sim.cli import main
from flech_sim.results import Run, open_run
from flech_sim.scenario import load_scenario, scenario_from_dict
from flech_sim.schema import TABLES
from flech_sim.simulation import run

from .conftest import REPO, scenario_dict


@pytest.fixture(scope="module")
def r(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The default scenario without its twin: tests add twin and input tables of their own shapes."""
    out = tmp_path_factory.mktemp("plots") / "run"
    scenario = load_scenario(REPO / "scenarios" / "default.yaml").model_copy(update={"twin": False})
    result = run(scenario, out)
    assert result.completed, result.error
    for name in ("feeder_compare", "weather"):  # written by every run since the inputs tables landed
        (out / f"{name}.parquet").unlink()
    return open_run(out)


def test_feeder_load_of_a_real_twin_run_plots_the_twins_load(tmp_path: Path) -> None:
    out = tmp_path / "with-twin"
    result = run(load_scenario(REPO / "scenarios" / "default.yaml"), out)
    assert result.completed, result.error
    real = open_run(out)
    fig = plots.feeder_load(real)
    fc = real.table("feeder_compare")
    assert "twin run (feeder_compare)" in fig.legends[0].get_title().get_text()
    feeders = sorted(fc.feeder.unique())
    for ax, loc in zip(fig.axes[: len(feeders)], feeders, strict=True):
        g = fc[fc.feeder == loc].set_index("interval_start").sort_index()
        np.testing.assert_allclose(_line(ax, "without flexibility").get_ydata(), g.twin_load_kw)
        np.testing.assert_allclose(_line(ax, "with flexibility").get_ydata(), g.load_kw)


@pytest.fixture(scope="module")
def empty_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A real run in which no market is opened: every market table is empty."""
    doc = scenario_dict(horizon_hours=48)  # meter data of day 0 is published on day 1
    doc["buyers"][0]["markets"] = []
    out = tmp_path_factory.mktemp("plots") / "no-markets"
    assert run(scenario_from_dict(doc), out).completed
    return open_run(out)


def _line(ax: Axes, label: str):  # type: ignore[no-untyped-def]
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, f"no single line {label!r} in {[ln.get_label() for ln in ax.get_lines()]}"
    return found[0]


def _bars(ax: Axes, label: str):  # type: ignore[no-untyped-def]
    found = [c for c in ax.containers if c.get_label() == label]
    assert len(found) == 1, f"no bar container {label!r}"
    return found[0]


def _x(values: pd.Series | pd.Index) -> np.ndarray:
    return np.asarray(mdates.date2num(pd.DatetimeIndex(values).to_pydatetime()))


def _xdata(line) -> np.ndarray:  # type: ignore[no-untyped-def]
    x = line.get_xdata()
    return _x(pd.DatetimeIndex(x)) if not np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x)


def _title(ax: Axes) -> str:
    return ax.get_title(loc="left") or ax.get_title()


def _synthetic(r: Run, tmp_path: Path, **tables: pd.DataFrame) -> Path:
    """A run directory holding ``r``'s tables plus the given ones (the twin's and inputs' shapes)."""
    import shutil

    run_dir = tmp_path / "synthetic"
    shutil.copytree(r.path, run_dir)
    for name, df in tables.items():
        df.to_parquet(run_dir / f"{name}.parquet", index=False)
    return run_dir


def test_feeder_load_without_a_twin_says_so_and_draws_the_runs_own_tables(r: Run) -> None:
    fig = plots.feeder_load(r)
    fl = r.table("feeder_load")
    red = r.table("portfolio_load").groupby(["location", "interval_start"]).reduction_kw.sum()
    feeders = sorted(fl.feeder.unique())
    load_axes = fig.axes[: len(feeders)]
    assert [_title(ax).split(":")[0] for ax in load_axes] == feeders
    assert "no twin in this run" in fig.legends[0].get_title().get_text()
    for ax, loc in zip(load_axes, feeders, strict=True):
        g = fl[fl.feeder == loc].set_index("interval_start").sort_index()
        with_flex, without = _line(ax, "with flexibility"), _line(ax, "without flexibility")
        np.testing.assert_allclose(with_flex.get_ydata(), g.load_kw)
        expected = g.load_kw + red.loc[loc].reindex(g.index).fillna(0).to_numpy()
        np.testing.assert_allclose(without.get_ydata(), expected)
        np.testing.assert_allclose(_xdata(with_flex), _x(g.index))
        limit = r.manifest["scenario"]["feeders"][loc]["limit_kw"]
        assert list(_line(ax, "feeder limit").get_ydata()) == [limit, limit]
        assert f"limit {limit:g} kW" in _title(ax)
    f1 = load_axes[feeders.index("feeder-1")]
    assert (_line(f1, "without flexibility").get_ydata() > _line(f1, "with flexibility").get_ydata()).any()
    assert "no 'weather' table" in fig.axes[-1].texts[0].get_text()  # the temperature panel says why it is empty


def test_delivery_shading_stops_at_the_end_of_the_run(r: Run) -> None:
    end = plots.run_end(r)
    assert end == pd.Timestamp(r.scenario["start"]) + pd.Timedelta(hours=r.scenario["horizon_hours"])
    fig = Figure()
    ax = fig.subplots()
    markets = pd.DataFrame(
        {
            "delivery_start": [end - pd.Timedelta(hours=2), end + pd.Timedelta(hours=1)],
            "delivery_end": [end + pd.Timedelta(hours=22), end + pd.Timedelta(hours=5)],
        }
    )
    plots._shade_delivery(ax, markets, end)
    assert len(ax.patches) == 1  # the window starting after the end is not drawn
    span = ax.patches[0]
    assert span.get_x() + span.get_width() == pytest.approx(mdates.date2num(end.to_pydatetime()))


def test_feeder_load_from_the_twins_feeder_compare_with_outdoor_temperature(r: Run, tmp_path: Path) -> None:
    """feeder_compare: feeder, interval_start, load_kw (with), load_no_flex_kw (twin), limit_kw; a rebound
    (with > without after delivery) must show as drawn; weather: interval_start, t_out_c."""
    times = pd.date_range("2026-01-12 16:00", periods=8, freq="15min")
    fc = pd.DataFrame(
        {
            "feeder": ["feeder-1"] * 8,
            "interval_start": times,
            "load_kw": [900, 700, 700, 900, 1000, 950, 900, 900.0],
            "load_no_flex_kw": [900, 900, 900, 900, 880, 890, 900, 900.0],
            "limit_kw": [800.0] * 8,
        }
    )
    weather = pd.DataFrame(
        {"interval_start": times, "t_out_c": [-2.0, -2.5, -3.0, -3.5, -4.0, -4.0, -3.0, -2.0], "wind_ms": [3.0] * 8}
    )
    fig = plots.feeder_load(_synthetic(r, tmp_path, feeder_compare=fc, weather=weather))
    ax, ax_t = fig.axes[0], fig.axes[-1]
    assert len(fig.axes) == 2 and _title(ax).startswith("feeder-1")
    assert "twin run (feeder_compare)" in fig.legends[0].get_title().get_text()
    np.testing.assert_allclose(_line(ax, "with flexibility").get_ydata(), fc.load_kw)
    np.testing.assert_allclose(_line(ax, "without flexibility").get_ydata(), fc.load_no_flex_kw)
    assert (_line(ax, "with flexibility").get_ydata() > _line(ax, "without flexibility").get_ydata()).sum() == 2
    np.testing.assert_allclose(_line(ax_t, "outdoor temperature").get_ydata(), weather.t_out_c)
    np.testing.assert_allclose(_xdata(_line(ax_t, "outdoor temperature")), _x(times))


def test_feeder_load_from_a_twin_run_directory(r: Run, tmp_path: Path) -> None:
    """No feeder_compare but a twin/ run: its feeder_load is the "without" line."""
    import shutil

    run_dir = _synthetic(r, tmp_path)
    shutil.copytree(r.path, run_dir / "twin")
    twin = r.table("feeder_load")
    twin["load_kw"] = twin.load_kw + 10.0
    twin.to_parquet(run_dir / "twin" / "feeder_load.parquet", index=False)
    fig = plots.feeder_load(run_dir)
    own = r.table("feeder_load")
    g = own[own.feeder == "feeder-1"].sort_values("interval_start")
    ax = fig.axes[0]
    np.testing.assert_allclose(_line(ax, "without flexibility").get_ydata(), g.load_kw + 10.0)
    assert "twin/feeder_load" in fig.legends[0].get_title().get_text()


def test_market_timeline_bars_are_the_market_times(r: Run) -> None:
    fig = plots.market_timeline(r)
    ax = fig.axes[0]
    m = r.table("markets").sort_values(["product_id", "requested_at", "market_id"]).reset_index(drop=True)
    ticks = dict(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels()), strict=True))
    bidding = _bars(ax, "bidding (request → gate closure)")
    rows = [ticks[b.get_y() + b.get_height() / 2] for b in bidding]
    assert rows == [f"{p} · {i} ({s})" for p, i, s in zip(m.product_id, m.market_id, m.state, strict=True)]
    assert [b.get_y() for b in bidding] == sorted((b.get_y() for b in bidding), reverse=True)
    delivery = _bars(ax, "delivery window")
    np.testing.assert_allclose([b.get_x() for b in bidding], _x(m.requested_at))
    np.testing.assert_allclose([b.get_x() + b.get_width() for b in bidding], _x(m.gate_close))
    np.testing.assert_allclose([b.get_x() for b in delivery], _x(m.delivery_start))
    np.testing.assert_allclose([b.get_x() + b.get_width() for b in delivery], _x(m.delivery_end))


def test_market_timeline_counts_every_market_per_product_and_day_when_there_are_many(r: Run) -> None:
    m = r.table("markets")
    fig = plots.market_timeline(r, max_markets=1)  # more markets than rows: the aggregated view
    (ax,) = fig.axes
    days = m.delivery_start.dt.floor("D")
    for state, part in m.groupby("state"):
        bars = _bars(ax, str(state))
        counts = part.groupby(days[part.index]).size()
        np.testing.assert_allclose([b.get_height() for b in bars], counts.to_numpy())
        np.testing.assert_allclose([b.get_x() for b in bars], _x(counts.index))
    assert f"{len(m)} markets" in fig.texts[0].get_text() or f"{len(m)} markets" in fig._suptitle.get_text()
    # a zoom window keeps the markets whose life overlaps it, drawn one per row
    first = m.sort_values("requested_at").iloc[0]
    fig = plots.market_timeline(r, window=(first.requested_at, first.gate_close))
    overlapping = m[(m.delivery_end > first.requested_at) & (m.requested_at < first.gate_close)]
    assert len(_bars(fig.axes[0], "delivery window")) == len(overlapping) >= 1


def test_clearing_prices_and_volumes_per_product(r: Run) -> None:
    fig = plots.clearing(r)
    ci = r.table("clearing_intervals")
    products = sorted(ci.product_id.unique())
    assert len(fig.axes) == 2 * len(products)
    for k, product in enumerate(products):
        ax_p, ax_v = fig.axes[2 * k], fig.axes[2 * k + 1]
        assert _title(ax_p).startswith(product)
        c = ci[ci.product_id == product].sort_values(["interval_start", "market_id"], kind="stable")
        np.testing.assert_allclose(_line(ax_p, "clearing price").get_ydata(), c.clearing_price)
        cap = load_scenario(REPO / "scenarios" / "default.yaml").buyers[0].markets[0].price_cap
        lo, hi = ax_p.get_ylim()  # fitted to the prices, not to the cap (6.5 DKK/kWh) ...
        assert lo <= c.clearing_price.min() and c.clearing_price.max() <= hi < cap
        assert any(f"price cap {cap:g}" in t.get_text() for t in ax_p.texts)  # ... which is noted instead
        g = c.groupby("interval_start")[["need_kw", "accepted_kw", "unmet_kw"]].sum()
        np.testing.assert_allclose([b.get_height() for b in _bars(ax_v, "accepted")], g.accepted_kw)
        np.testing.assert_allclose([b.get_height() for b in _bars(ax_v, "unmet")], g.unmet_kw)
        np.testing.assert_allclose(_line(ax_v, "need").get_ydata(), g.need_kw)
        np.testing.assert_allclose([b.get_x() for b in _bars(ax_v, "accepted")], _x(g.index))


def test_a_cap_within_the_price_range_is_drawn_as_a_line() -> None:
    fig = Figure()
    ax = fig.subplots()
    plots._fit_price_axis(ax, np.array([0.2, 0.5]), pd.Series([0.52]))
    assert _line(ax, "price cap 0.52").get_ydata()[0] == pytest.approx(0.52)
    assert not ax.texts


def test_ordered_versus_delivered(r: Run) -> None:
    fig = plots.ordered_vs_delivered(r)
    s = r.table("settlements")
    s = s[s.role == "seller"]
    ax_t, ax_s = fig.axes[0], fig.axes[1]
    g = s.groupby("interval_start")[["ordered_kwh", "delivered_kwh"]].sum()
    np.testing.assert_allclose(_line(ax_t, "ordered").get_ydata(), g.ordered_kwh)
    np.testing.assert_allclose(_line(ax_t, "delivered").get_ydata(), g.delivered_kwh)
    by = s.groupby("party")[["ordered_kwh", "delivered_kwh"]].sum().sort_index()
    assert [t.get_text() for t in ax_s.get_xticklabels()] == by.index.tolist()
    np.testing.assert_allclose([b.get_height() for b in _bars(ax_s, "ordered")], by.ordered_kwh)
    np.testing.assert_allclose([b.get_height() for b in _bars(ax_s, "delivered")], by.delivered_kwh)


def test_aggregator_revenue_and_penalties(r: Run) -> None:
    fig = plots.aggregator_revenue(r)
    s = r.table("settlements", filter={"role": "seller"})
    by = s.groupby("party")[["payment_dkk", "penalty_dkk", "net_dkk"]].sum().sort_index()
    ax_b, ax_c = fig.axes
    np.testing.assert_allclose([b.get_height() for b in _bars(ax_b, "payments")], by.payment_dkk)
    np.testing.assert_allclose([b.get_height() for b in _bars(ax_b, "penalties")], -by.penalty_dkk)
    np.testing.assert_allclose([b.get_height() for b in _bars(ax_b, "net")], by.net_dkk)
    assert by.penalty_dkk.sum() > 0  # the default run has shortfalls, so the figure shows some
    for party, net in by.net_dkk.items():
        assert _line(ax_c, str(party)).get_ydata()[-1] == pytest.approx(net)


def test_indoor_temperatures_say_plainly_when_there_is_no_data(r: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    fig = plots.indoor_temperatures(r)
    t = r.table(plots.TEMPERATURE_TABLE)
    moved = (t.groupby("household").t_in_c.agg(lambda x: x.max() - x.min()) > plots.HELD_K).sum()
    if moved:
        assert not hasattr(fig, "_flech_no_data")  # dispatched homes were recorded: they are drawn
    else:  # the default run's recorded homes were never dispatched: held at their setpoint, and the figure says so
        assert "no recorded home was dispatched" in fig._flech_no_data  # type: ignore[attr-defined]
        assert f"{t.household.nunique()} recorded home(s) not drawn" in fig._flech_no_data  # type: ignore[attr-defined]
    monkeypatch.setattr(plots.temperatures, "TABLES", {k: v for k, v in TABLES.items() if k != plots.TEMPERATURE_TABLE})
    fig = plots.indoor_temperatures(r)
    assert "writes no 'household_temperatures' table" in fig._flech_no_data  # type: ignore[attr-defined]


def test_indoor_temperatures_are_each_homes_own_against_its_own_band(r: Run, tmp_path: Path) -> None:
    """Three homes, four steps: two dispatched (moving) with different bands, one held at its setpoint;
    the lower panel compares the strata by each home's position in its own band."""
    table = TABLES[plots.TEMPERATURE_TABLE]
    times = pd.date_range("2026-01-12 00:15", periods=4, freq="15min").astype("datetime64[s]")
    temps = {7: [20.0, 20.4, 20.1, 20.3], 9: [21.0, 21.0, 21.0, 21.0], 11: [19.5, 18.5, 19.8, 19.6]}
    bands = {7: (19.5, 22.0), 9: (20.0, 23.0), 11: (19.0, 21.5)}
    flags = {7: [False, True, True, False], 9: [False] * 4, 11: [False, True, False, False]}
    rows = [
        {
            "household": h,
            "metering_point": f"{'unaggregated' if h == 9 else 'agg-north'}@feeder-{1 if h != 11 else 2}",
            "stratum": "unaggregated" if h == 9 else "aggregated",
            "selection": "random",
            "interval_start": t,
            "t_in_c": v,
            "t_min_c": bands[h][0],
            "t_max_c": bands[h][1],
            "dispatched": d,
        }
        for h, vs in temps.items()
        for t, v, d in zip(times, vs, flags[h], strict=True)
    ]
    df = pd.DataFrame(rows)[list(table.names)]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text((r.path / "manifest.json").read_text())
    pq.write_table(
        pa.Table.from_pandas(df, schema=table.arrow_schema(), preserve_index=False), run_dir / f"{table.name}.parquet"
    )
    fig = plots.indoor_temperatures(run_dir)
    homes, strata = fig.axes[:2], fig.axes[2]
    # home 11 left its band (18.5 < 19.0): drawn first
    assert [_title(ax).split(" · ")[0] for ax in homes] == ["home 11", "home 7"]
    assert fig._flech_held_homes == 1  # type: ignore[attr-defined]
    assert fig._flech_strata == {"dispatched": 2, "eligible": 0, "unaggregated": 1}  # type: ignore[attr-defined]
    for ax, h in zip(homes, (11, 7), strict=True):
        np.testing.assert_allclose(_line(ax, "indoor temperature").get_ydata(), temps[h])
        np.testing.assert_allclose(_xdata(_line(ax, "indoor temperature")), _x(times))
        limits = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert sorted({float(v) for ln in limits for v in ln.get_ydata()}) == list(bands[h])
    labels = [c.get_label() for c in homes[0].collections]
    assert "outside own band" in labels and "dispatched step" in labels
    pos = {h: (np.array(v) - bands[h][0]) / (bands[h][1] - bands[h][0]) for h, v in temps.items()}
    mean = _line(strata, "dispatched (aggregated): mean, range (2 homes)").get_ydata()
    np.testing.assert_allclose(mean, (pos[7] + pos[11]) / 2)
    np.testing.assert_allclose(_line(strata, "unaggregated: mean, range (1 homes)").get_ydata(), pos[9])
    assert "1 recorded home(s) never dispatched" in fig.legends[0].get_title().get_text()


def test_kpis_across_seeds_from_the_runs_kpis_tables(r: Run, tmp_path: Path) -> None:
    """kpis (long: scope, product_id, participant, feeder, metric, value, unit) in three seeds' runs: mean and a
    Student t 95 % interval (t = 4.303 for 2 degrees of freedom), drawn as error bars."""
    import shutil

    values = [0.8, 0.9, 1.0]
    for seed, v in enumerate(values):
        d = tmp_path / "sweep" / f"seed{seed}"
        shutil.copytree(r.path, d)
        pd.DataFrame(
            {
                "scope": ["product", "product"],
                "product_id": ["SRP", "SRP"],
                "participant": [None, None],
                "feeder": [None, None],
                "metric": ["delivery_ratio", "cost_dkk"],
                "value": [v, 100.0 * (seed + 1)],
                "unit": ["-", "DKK"],
            }
        ).to_parquet(d / "kpis.parquet")
    s = plots.kpi_summary_frame(tmp_path / "sweep").set_index("metric")
    assert s.loc["delivery_ratio", "mean"] == pytest.approx(0.9)
    assert s.loc["delivery_ratio", "ci_high"] - 0.9 == pytest.approx(4.303 * 0.1 / np.sqrt(3))
    fig = plots.kpis_across_seeds(tmp_path / "sweep")
    ax = next(a for a in fig.axes if _title(a) == "delivery ratio")
    (bars,) = [c for c in ax.containers if c.get_label() == "mean ± 95 % CI"]
    assert bars.lines[0].get_ydata()[0] == pytest.approx(0.9)
    assert "n=3" in ax.get_xticklabels()[0].get_text()
    assert "no 'kpis_summary' table" in plots.kpis_across_seeds(tmp_path / "nothing")._flech_no_data  # type: ignore


def test_kpis_across_seeds_from_a_summary_with_a_swept_parameter_draws_a_band(r: Run, tmp_path: Path) -> None:
    """kpis_summary: per grid point (here a numeric parameter) and metric: n, mean, std, ci_low, ci_high, unit."""
    summary = pd.DataFrame(
        {
            "penalty_factor": [1.0, 1.5, 2.0],
            "scope": "run",
            "product_id": "SRP",
            "participant": None,
            "feeder": None,
            "metric": "net_margin_dkk",
            "unit": "DKK",
            "n": 6,
            "mean": [10.0, 12.0, 15.0],
            "std": 1.0,
            "ci_low": [9.0, 11.0, 14.0],
            "ci_high": [11.0, 13.0, 16.0],
        }
    )
    (tmp_path / "sw").mkdir()
    summary.to_parquet(tmp_path / "sw" / "kpis_summary.parquet")
    ax = plots.kpis_across_seeds(tmp_path / "sw").axes[0]
    mean = next(ln for ln in ax.get_lines() if ln.get_label().endswith("(mean)"))
    np.testing.assert_allclose(mean.get_xdata(), summary.penalty_factor)
    np.testing.assert_allclose(mean.get_ydata(), summary["mean"])
    (band,) = ax.collections
    ys = band.get_paths()[0].vertices[:, 1]
    assert ys.min() == pytest.approx(9.0) and ys.max() == pytest.approx(16.0)


def test_every_kind_degrades_to_a_message_on_a_run_without_markets(empty_run: Run) -> None:
    has_rows = {
        "feeder_load": empty_run.count("portfolio_load") > 0,  # the households still ran
        "temperatures": plots.TEMPERATURE_TABLE in TABLES and empty_run.count(plots.TEMPERATURE_TABLE) > 0,
    }
    assert has_rows["feeder_load"]
    for kind, make in plots.KINDS.items():
        fig = make(empty_run)
        if kind == "temperatures" and has_rows[kind]:  # recorded, but nobody was dispatched: said so
            assert "no recorded home was dispatched" in fig._flech_no_data  # type: ignore[attr-defined]
        elif has_rows.get(kind):
            assert not hasattr(fig, "_flech_no_data") and fig.axes, kind
        else:
            assert "no data for" in fig._flech_no_data, kind  # type: ignore[attr-defined]


def test_no_pyplot_figures_accumulate(r: Run) -> None:
    for make in plots.KINDS.values():
        make(r)
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_cli_writes_files_and_prints_their_paths(r: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(r.path), "--kind", "clearing", "revenue", "--out", str(tmp_path / "png")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "png" / "clearing.png"), str(tmp_path / "png" / "revenue.png")]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in printed)
    assert main(["plot", str(r.path), "--all", "--format", "svg", "--out", str(tmp_path / "svg")]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).stem for p in printed] == list(plots.KINDS)
    assert all("<svg" in Path(p).read_text()[:1000] for p in printed)
    assert main(["plot", str(tmp_path), "--all"]) == 2  # not a run directory: a message, not a traceback
    assert "not a run directory" in capsys.readouterr().err


def test_option_prices_are_drawn_apart(tmp_path: Path) -> None:
    """CRP: the activation price (awards.price) and the availability price (crp_bids.availability_price) of the
    accepted bids, each on its own axis, instead of the score held in clearing_price."""
    out = tmp_path / "mix"
    assert run(load_scenario(REPO / "tests" / "reference_scenarios" / "products_mix.yaml"), out).completed
    r = open_run(out)
    fig = plots.clearing(r)
    ax_p = next(ax for ax in fig.axes if _title(ax).startswith("CRP"))
    aw = r.table("awards", filter={"product_id": "CRP"})
    aw = aw[aw.accepted_kw > 0]
    assert len(aw)
    bids = r.table("crp_bids")  # CRP's own table holds its product-specific bid field
    both = aw.merge(bids[["market_id", "bid_id", "availability_price"]], on=["market_id", "bid_id"])
    act = _line(ax_p, "activation price, accepted (mean)")
    np.testing.assert_allclose(act.get_ydata(), both.groupby("interval_start").price.mean())
    twin = next(ax for ax in fig.axes if ax is not ax_p and ax.bbox.bounds == ax_p.bbox.bounds)
    avail = _line(twin, "availability price, accepted (mean)")
    np.testing.assert_allclose(avail.get_ydata(), both.groupby("interval_start").availability_price.mean())
    assert "DKK/kW" in twin.get_ylabel()
