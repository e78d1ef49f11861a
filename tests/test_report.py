"""The admin page: its embedded data equals the tables, it is self-contained, and a real browser shows a market.

The browser test runs Debian's Chromium headless on the written file with
``#market=<id>`` and reads the DOM after the page's script ran. In CI
(``CI`` set) a missing Chromium is a failure, so the check cannot silently
vanish; locally it is a skip that says how to install it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flech_sim.cli import main
from flech_sim.plots import KINDS
from flech_sim.report import write_report
from flech_sim.results import Run, open_run
from flech_sim.scenario import load_scenario, scenario_from_dict
from flech_sim.simulation import run

from .conftest import REPO, scenario_dict

INSTALL = "apt-get update && apt-get install -y chromium"
BROWSERS = ("chromium", "chromium-browser")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, Path, str]:
    out = tmp_path_factory.mktemp("report") / "run"
    result = run(load_scenario(REPO / "scenarios" / "default.yaml"), out)
    assert result.completed, result.error
    path = write_report(out)
    return open_run(out), path, path.read_text(encoding="utf-8")


def _data(text: str) -> dict[str, Any]:
    blob = re.search(r'<script id="flech-data" type="application/json">(.*?)</script>', text, re.S)
    assert blob, "no embedded data"
    return dict(json.loads(blob.group(1)))


def _section(data: dict[str, Any], market_id: str, key: str) -> pd.DataFrame:
    sec = next(s for s in data["details"][market_id] if s["key"] == key)
    return pd.DataFrame(sec["rows"], columns=sec["columns"])


def test_embedded_markets_bids_awards_and_settlements_equal_the_tables(page: tuple[Run, Path, str]) -> None:
    r, _, text = page
    data = _data(text)
    markets = r.table("markets")
    assert [m["market_id"] for m in data["markets"]] == markets.market_id.tolist()
    assert set(data["details"]) == set(markets.market_id)
    bids, awards, settlements = r.table("bids"), r.table("awards"), r.table("settlements")
    for mid, minutes in zip(markets.market_id, markets.interval_minutes, strict=True):
        b = bids[bids.market_id == mid]
        shown = _section(data, mid, "bids")
        assert sorted(shown.bid_id) == sorted(b.bid_id.unique())
        for _, row in shown.iterrows():  # quantities per interval, as bid
            q = b[b.bid_id == row.bid_id].sort_values("interval").quantity_kw.tolist()
            assert [row[f"kW[{i}]"] for i in range(len(q))] == pytest.approx(q)
        a = awards[awards.market_id == mid]
        shown = _section(data, mid, "awards").set_index("bid_id")
        per_bid = a.groupby("bid_id").agg(kw=("accepted_kw", "sum"), pay=("payment_dkk", "sum"))
        assert sorted(shown.index) == sorted(per_bid.index)
        assert shown.loc[per_bid.index, "accepted_kwh"].tolist() == pytest.approx((per_bid.kw * minutes / 60).tolist())
        assert shown.loc[per_bid.index, "payment_dkk"].tolist() == pytest.approx(per_bid.pay.tolist())
        s = settlements[settlements.market_id == mid]
        shown = _section(data, mid, "settlement")
        assert len(shown) == len(s) and shown.net_dkk.sum() == pytest.approx(s.net_dkk.sum(), abs=1e-4)
        clearings = r.table("clearings", filter={"market_id": mid})
        assert _section(data, mid, "clearing").status.tolist() == clearings.status.tolist()
        request = _section(data, mid, "request").set_index("field").value
        assert request["buyer"] == markets.set_index("market_id").buyer[mid]


def test_product_summary_equals_the_tables(page: tuple[Run, Path, str]) -> None:
    r, _, text = page
    data = _data(text)
    summary = pd.DataFrame(data["products"]["rows"], columns=data["products"]["columns"]).set_index("product_id")
    markets = r.table("markets")
    awards = r.table("awards").merge(markets[["market_id", "interval_minutes"]], on="market_id")
    for product, m in markets.groupby("product_id"):
        a = awards[awards.product_id == product]
        assert summary.markets[product] == len(m)
        assert summary.accepted_kwh[product] == pytest.approx((a.accepted_kw * a.interval_minutes / 60).sum())
        assert summary.award_payments_dkk[product] == pytest.approx(a.payment_dkk.sum())
        s = r.table("settlements", filter={"role": "seller", "product_id": product})
        assert summary.penalties_dkk[product] == pytest.approx(s.penalty_dkk.sum())
        assert summary.delivered_kwh[product] == pytest.approx(s.delivered_kwh.sum())
    assert f"<td>{markets.product_id.iloc[0]}</td>" in text  # rendered without script too


def test_page_is_self_contained(page: tuple[Run, Path, str]) -> None:
    _, _, text = page
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', text), "external reference"
    assert "<link" not in text and not re.search(r"<script[^>]+src=", text)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == len(KINDS)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)


def test_cli_and_a_run_without_markets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = scenario_dict(horizon_hours=48)
    doc["buyers"][0]["markets"] = []
    assert run(scenario_from_dict(doc), tmp_path / "empty").completed
    out = tmp_path / "pages" / "empty.html"
    assert main(["report", str(tmp_path / "empty"), "--out", str(out), "--format", "svg"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text()
    assert "No markets were opened in this run." in text and _data(text)["markets"] == []
    assert text.count('src="data:image/svg+xml;base64,') == len(KINDS)


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    message = (
        f"Chromium is needed to test the report in a real browser; install it with "
        f"bash scripts/install-chromium.sh, or as root: {INSTALL}"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _dom(browser: str, url: str, tmp: Path) -> str:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    return done.stdout


def test_a_headless_browser_shows_the_market_named_in_the_url(page: tuple[Run, Path, str], tmp_path: Path) -> None:
    browser = _browser()
    r, path, _ = page
    markets = r.table("markets")
    assert len(markets) >= 2
    chosen, other = markets.iloc[1], markets.iloc[0]  # not the first: the hash must do the choosing
    dom = _dom(browser, f"{path.as_uri()}#market={chosen.market_id}", tmp_path)
    details = dom.split('id="market-details"', 1)[1].split('<h2 id="figures"', 1)[0]
    assert details.startswith(f' data-market-id="{chosen.market_id}"')
    assert f'<h3 id="market-title">{chosen.market_id}</h3>' in details
    sections = dict(re.findall(r'<section data-section="([a-z_]+)">(.*?)</section>', details, re.S))
    assert {"request", "bids", "clearing", "clearing_intervals", "awards", "activations", "settlement"} <= set(sections)
    bids = r.table("bids")
    for bid_id in bids[bids.market_id == chosen.market_id].bid_id.unique():
        assert f">{bid_id}<" in sections["bids"]
    for bid_id in bids[bids.market_id == other.market_id].bid_id.unique():
        assert bid_id not in details  # only the chosen market is shown
    awards = r.table("awards", filter={"market_id": chosen.market_id})
    for seller in awards.seller.unique():
        assert f">{seller}<" in sections["awards"]
    status = r.table("clearings", filter={"market_id": chosen.market_id}).status.iloc[0]
    assert f">{status}<" in sections["clearing"]
    parties = r.table("settlements", filter={"market_id": chosen.market_id}).party.unique()
    assert all(f">{p}<" in sections["settlement"] for p in parties)
    selected = re.findall(r'<tr data-market-id="([^"]+)" class="selected">', dom)
    assert selected and set(selected) == {chosen.market_id}  # highlighted in the market lists
    # the delivery window as a reader says it, human headers with units, and the headline figures
    summary = re.search(r'<p id="market-summary">(.*?)</p>', details).group(1)
    start, end = chosen.delivery_start, chosen.delivery_end
    assert f"delivery {start:%Y-%m-%d %H:%M} → {end:%H:%M}" in summary  # same day: the date once
    assert "<th>interval start</th>" in sections["settlement"] and "<th>net (DKK)</th>" in sections["settlement"]
    n_intervals = int(chosen.n_intervals)
    assert f"<th>interval {n_intervals - 1} (kW)</th>" in sections["bids"]
    assert f"<th>interval {n_intervals} (kW)</th>" not in sections["bids"]  # no columns of longer markets
    headline = dom.split('id="headline"', 1)[1].split("<nav>", 1)[0]
    assert re.search(rf'data-kpi="markets"><div class="kpi-value">{len(markets)}</div>', headline)


def test_a_headless_browser_lists_the_markets_open_at_a_chosen_time(
    page: tuple[Run, Path, str], tmp_path: Path
) -> None:
    browser = _browser()
    r, path, _ = page
    markets = r.table("markets")
    m = markets.iloc[0]
    t = (m.requested_at + (m.gate_close - m.requested_at) / 2).strftime("%Y-%m-%dT%H:%M")
    dom = _dom(browser, f"{path.as_uri()}#t={t}", tmp_path)
    open_box = dom.split('id="open-markets"', 1)[1].split("</div></div>", 1)[0]
    expected = markets[(markets.requested_at <= pd.Timestamp(t)) & (markets.gate_close > pd.Timestamp(t))]
    assert re.findall(r'data-market-id="([^"]+)"', open_box) == expected.market_id.tolist() == [m.market_id]


def test_a_missing_browser_fails_in_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no chromium on it
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=re.escape(INSTALL)):
        _browser()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=re.escape(INSTALL)):
        _browser()


def test_headline_figures_equal_the_tables(page: tuple[Run, Path, str]) -> None:
    r, _, text = page
    h = {x["key"]: x for x in _data(text)["headline"]}
    markets = r.table("markets")
    awards = r.table("awards").merge(markets[["market_id", "interval_minutes"]], on="market_id")
    sellers = r.table("settlements", filter={"role": "seller"})
    assert h["markets"]["value"] == len(markets)
    assert h["volume"]["value"] == pytest.approx((awards.accepted_kw * awards.interval_minutes / 60).sum())
    assert h["cost"]["value"] == pytest.approx(awards.payment_dkk.sum())
    assert h["delivery_ratio"]["value"] == pytest.approx(sellers.delivered_kwh.sum() / sellers.ordered_kwh.sum())
    assert h["penalties"]["value"] == pytest.approx(sellers.penalty_dkk.sum())
    fc = r.table("feeder_compare")  # the run's no-flexibility twin says what flexibility avoided or caused
    hours = r.scenario["households"]["dt_minutes"] / 60
    with_kwh = (fc.load_kw - fc.limit_kw).clip(lower=0).sum() * hours
    without_kwh = (fc.twin_load_kw - fc.limit_kw).clip(lower=0).sum() * hours
    assert h["overload"]["value"] == pytest.approx(abs(without_kwh - with_kwh))
    assert h["overload"]["label"] == ("overload avoided" if without_kwh >= with_kwh else "overload caused")
    assert 'data-kpi="delivery_ratio"' in text  # rendered without script too


def test_overload_avoided_comes_from_the_twin_when_present(page: tuple[Run, Path, str], tmp_path: Path) -> None:
    """feeder_compare (feeder, interval_start, load_kw, load_no_flex_kw, limit_kw): 15-min steps above 100 kW."""
    import shutil

    from flech_sim.report import headline

    r, _, _ = page
    d = tmp_path / "run"
    shutil.copytree(r.path, d)
    pd.DataFrame(
        {
            "feeder": ["feeder-1"] * 3,
            "interval_start": pd.date_range("2026-01-12", periods=3, freq="15min"),
            "load_kw": [120.0, 90.0, 100.0],
            "load_no_flex_kw": [140.0, 130.0, 90.0],
            "limit_kw": [100.0] * 3,
        }
    ).to_parquet(d / "feeder_compare.parquet")
    h = {x["key"]: x for x in headline(open_run(d))}["overload"]
    assert h["label"] == "overload avoided"
    assert h["value"] == pytest.approx((40 + 30 - 20) * 0.25)  # without 70 kW x 0.25 h, with 20 kW x 0.25 h


def test_labels_and_rounding_for_readers() -> None:
    from flech_sim.report import _fmt, label

    assert label("need_kwh") == "need (kWh)" and label("price_cap") == "price cap (DKK/kWh)"
    assert label("kW[3]") == "interval 3 (kW)" and label("market_id") == "market"
    assert [_fmt(x) for x in (1234.567, 12.3456, 0.123456, 3, None)] == ["1,235", "12.35", "0.123", "3", ""]
