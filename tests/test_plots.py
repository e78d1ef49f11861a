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

from flech_sim import plots
from flech_sim.cli import main
from flech_sim.results import Run, open_run
from flech_sim.scenario import load_scenario, scenario_from_dict
from flech_sim.schema import TABLES, Column, Table
from flech_sim.simulation import run

from .conftest import REPO, scenario_dict


@pytest.fixture(scope="module")
def r(tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("plots") / "run"
    result = run(load_scenario(REPO / "scenarios" / "default.yaml"), out)
    assert result.completed, result.error
    return open_run(out)


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


def test_feeder_load_with_and_without_flexibility_against_the_limit(r: Run) -> None:
    fig = plots.feeder_load(r)
    load = r.table("portfolio_load")
    feeders = sorted(load.location.unique())
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == feeders
    for ax, loc in zip(fig.axes, feeders, strict=True):
        g = load[load.location == loc].groupby("interval_start")[["load_kw", "reduction_kw"]].sum()
        with_flex, without = _line(ax, "with flexibility"), _line(ax, "without flexibility")
        np.testing.assert_allclose(with_flex.get_ydata(), g.load_kw)
        np.testing.assert_allclose(without.get_ydata(), g.load_kw + g.reduction_kw)
        np.testing.assert_allclose(_xdata(with_flex), _x(g.index))
        limit = r.manifest["scenario"]["feeders"][loc]["limit_kw"]
        assert list(_line(ax, f"limit {limit:g} kW").get_ydata()) == [limit, limit]
    # flexibility was delivered on feeder-1 only: the two lines differ there and nowhere else
    f1 = fig.axes[feeders.index("feeder-1")]
    assert (_line(f1, "without flexibility").get_ydata() > _line(f1, "with flexibility").get_ydata()).any()


def test_market_timeline_bars_are_the_market_times(r: Run) -> None:
    fig = plots.market_timeline(r)
    ax = fig.axes[0]
    m = r.table("markets").sort_values(["product_id", "requested_at", "market_id"]).reset_index(drop=True)
    ticks = dict(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels()), strict=True))
    bidding = _bars(ax, "bidding (request → gate closure)")
    # top to bottom: markets grouped by product, in order of request, each labelled with its product, ID and state
    rows = [ticks[b.get_y() + b.get_height() / 2] for b in bidding]
    assert rows == [f"{p} · {i} ({s})" for p, i, s in zip(m.product_id, m.market_id, m.state, strict=True)]
    assert [b.get_y() for b in bidding] == sorted((b.get_y() for b in bidding), reverse=True)
    delivery = _bars(ax, "delivery window")
    np.testing.assert_allclose([b.get_x() for b in bidding], _x(m.requested_at))
    np.testing.assert_allclose([b.get_x() + b.get_width() for b in bidding], _x(m.gate_close))
    np.testing.assert_allclose([b.get_x() for b in delivery], _x(m.delivery_start))
    np.testing.assert_allclose([b.get_x() + b.get_width() for b in delivery], _x(m.delivery_end))


def test_clearing_prices_and_volumes_per_product(r: Run) -> None:
    fig = plots.clearing(r)
    ci = r.table("clearing_intervals")
    products = sorted(ci.product_id.unique())
    assert len(fig.axes) == 2 * len(products)
    for k, product in enumerate(products):
        ax_p, ax_v = fig.axes[2 * k], fig.axes[2 * k + 1]
        assert ax_p.get_title().startswith(product)
        c = ci[ci.product_id == product].sort_values(["interval_start", "market_id"], kind="stable")
        np.testing.assert_allclose(_line(ax_p, "clearing price").get_ydata(), c.clearing_price)
        g = c.groupby("interval_start")[["need_kw", "accepted_kw", "unmet_kw"]].sum()
        np.testing.assert_allclose([b.get_height() for b in _bars(ax_v, "accepted")], g.accepted_kw)
        np.testing.assert_allclose([b.get_height() for b in _bars(ax_v, "unmet")], g.unmet_kw)
        np.testing.assert_allclose(_line(ax_v, "need").get_ydata(), g.need_kw)
        np.testing.assert_allclose([b.get_x() for b in _bars(ax_v, "accepted")], _x(g.index))


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
    if plots.TEMPERATURE_TABLE in TABLES and r.count(plots.TEMPERATURE_TABLE):
        assert not hasattr(fig, "_flech_no_data")  # the run recorded temperatures: they are drawn
    else:
        assert "no data for indoor temperatures" in fig._flech_no_data  # type: ignore[attr-defined]
        assert plots.TEMPERATURE_TABLE in fig._flech_no_data  # type: ignore[attr-defined]
    # a version without the table; the shared TABLES is left alone (its order is the docs' and fingerprint's)
    monkeypatch.setattr(plots, "TABLES", {k: v for k, v in TABLES.items() if k != plots.TEMPERATURE_TABLE})
    fig = plots.indoor_temperatures(r)
    assert "writes no 'household_temperatures' table" in fig._flech_no_data  # type: ignore[attr-defined]


def _temperature_table() -> Table:
    """The schema's table if the household model defines it, else a stand-in of the expected shape."""
    if plots.TEMPERATURE_TABLE in TABLES:
        return TABLES[plots.TEMPERATURE_TABLE]
    return Table(plots.TEMPERATURE_TABLE, "stand-in", (
        Column("household", "int", "-", "household"), Column("interval_start", "time", "timestamp", "time"),
        Column("t_in_c", "float", "degC", "indoor"), Column("t_min_c", "float", "degC", "comfort low"),
        Column("t_max_c", "float", "degC", "comfort high")))


def test_indoor_temperatures_are_drawn_from_their_table(r: Run, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The drawing path, on a table with the schema's columns and known values (two households, four steps)."""
    table = _temperature_table()
    monkeypatch.setitem(TABLES, table.name, table)
    indoor, low, high = plots._temperature_columns(list(table.names), {c.name: c.unit for c in table.columns})
    assert indoor and low and high, f"cannot tell the temperature columns of {table.names}"
    values = {indoor: [20.0, 21.0, 20.5, 21.5, 19.0, 22.0, 20.0, 20.0], low: [19.0] * 8, high: [23.0] * 8}
    times = pd.date_range("2026-01-12", periods=4, freq="15min").repeat(2).astype("datetime64[s]")
    fill = {"str": ["x"] * 8, "int": [0, 1] * 4, "bool": [False] * 8, "float": [0.0] * 8, "time": times}
    columns = {c.name: values.get(c.name, fill[c.type]) for c in table.columns}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text((r.path / "manifest.json").read_text())
    pq.write_table(pa.table(columns, schema=table.arrow_schema()), run_dir / f"{table.name}.parquet")
    ax = plots.indoor_temperatures(run_dir).axes[0]
    np.testing.assert_allclose(_line(ax, "mean indoor temperature").get_ydata(), [20.5, 21.0, 20.5, 20.0])
    assert set(_line(ax, "comfort band (mean)").get_ydata()) == {19.0}
    np.testing.assert_allclose(_xdata(_line(ax, "mean indoor temperature")), _x(times.unique()))


def test_every_kind_degrades_to_a_message_on_a_run_without_markets(empty_run: Run) -> None:
    has_rows = {"feeder_load": empty_run.count("portfolio_load") > 0,  # the households still ran
                "temperatures": plots.TEMPERATURE_TABLE in TABLES and empty_run.count(plots.TEMPERATURE_TABLE) > 0}
    assert has_rows["feeder_load"]
    for kind, make in plots.KINDS.items():
        fig = make(empty_run)
        if has_rows.get(kind):
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
