"""Horizon honesty (issue 10 item 7): a buyer opens no market that cannot settle inside the horizon.

Meter data for day D is published on day D + 1 at 06:00 (the default data provider), so a market
delivered on day D settles at (D + 1) x 24 h + 6 h at the earliest -- later if its product's meter window
reaches into the next day (a before/after baseline reads the hour after delivery).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from flech_sim.agents.buyers import horizon_reason, meter_data_due
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run

from .conftest import scenario_dict

DAY = 24 * 60


def test_meter_data_due_is_the_publication_of_the_last_day_read() -> None:
    assert meter_data_due(2 * DAY + 21 * 60, delay_days=1, publish_minute=360) == 3 * DAY + 360
    assert meter_data_due(3 * DAY, delay_days=1, publish_minute=360) == 3 * DAY + 360  # [.., midnight): day 2
    assert meter_data_due(3 * DAY + 15, delay_days=2, publish_minute=0) == 5 * DAY


def _run(tmp: Path, **overrides: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    doc = scenario_dict(
        twin=False, aggregators=[{"id": "agg-a", "households": {"feeder-1": 60, "feeder-2": 40}}], **overrides
    )
    result = run(scenario_from_dict(doc), tmp)
    assert result.completed, result.error
    return result.summary, pd.read_parquet(tmp / "markets.parquet")


def _srp(count: int, start: str = "17:00", need: list[float] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "product": "SRP",
        "location": "feeder-1",
        "count": count,
        "delivery_start_time": start,
        "need_kw": need or [20, 30, 30, 20],
        "price_cap": 3.0,
        **kw,
    }


def test_markets_delivered_or_settled_after_the_horizon_are_not_opened(tmp_path: Path) -> None:
    # markets sent on days 0, 1, 2 for 17-21 on days 1, 2, 3; day 2's data is out at 78 h, day 3's at 102 h
    for hours, opened in [(80, 2), (77, 1)]:  # 80 h: day 3 delivers after it; 77 h: day 2 settles after it
        summary, markets = _run(
            tmp_path / f"h{hours}", horizon_hours=hours, buyers=[{"id": "dso-1", "role": "dso", "markets": [_srp(3)]}]
        )
        assert summary["markets_opened"] == len(markets) == opened
        assert summary["markets_skipped_horizon"] == 3 - opened
        assert summary["markets_settled"] == opened and set(markets.state) == {"settled"}


def test_a_meter_window_past_midnight_needs_the_next_days_data(tmp_path: Path) -> None:
    # 22-24 on day 1: SRP reads day 1 only (due 54 h); BL's before/after fallback reads 00-01 of day 2 (due 78 h)
    late = {"delivery_start_time": "22:00", "need": [10, 10]}
    buyers = [
        {
            "id": "dso-1",
            "role": "dso",
            "markets": [_srp(1, **late), {**_srp(1, **late), "product": "BL", "location": "feeder-2"}],
        }
    ]
    summary, markets = _run(tmp_path, horizon_hours=60, products={"SRP": "builtin", "BL": "builtin"}, buyers=buyers)
    assert list(markets.product_id) == ["SRP"] and set(markets.state) == {"settled"}
    assert summary["markets_skipped_horizon"] == 1


def test_the_tso_opens_no_regulating_power_market_it_cannot_settle(tmp_path: Path) -> None:
    tso = {
        "id": "tso-1",
        "role": "tso",
        "balancing": {
            "product": "mFRR",
            "min_need_kw": 1.0,
            "imbalance": {"sd_kw": 60, "autocorrelation": 0.5},
            "params": {"min_bid_kw": 5},
        },
    }
    summary, markets = _run(tmp_path, horizon_hours=31, products={"mFRR": "builtin"}, buyers=[tso])
    # day 0's data is out at 30 h: every market delivered on day 0 can settle, none after midnight can
    start = pd.Timestamp("2026-01-12")
    assert len(markets) > 0 and set(markets.state) == {"settled"}
    assert (pd.to_datetime(markets.delivery_end) <= start + pd.Timedelta(hours=24)).all()
    assert summary["markets_skipped_horizon"] > 0
    assert summary["markets_opened"] == len(markets)
    # at exactly 30 h the clock stops before the publication due at that minute: nothing could settle
    summary, markets = _run(tmp_path / "h30", horizon_hours=30, products={"mFRR": "builtin"}, buyers=[tso])
    assert markets.empty and summary["markets_skipped_horizon"] > 0


def test_horizon_reason_names_what_falls_after_the_horizon() -> None:
    assert horizon_reason(delivery_end=100, settle_due=200, horizon=99) == "delivery_after_horizon"
    assert horizon_reason(delivery_end=99, settle_due=99, horizon=99) == "settlement_after_horizon"  # clock stops
    assert horizon_reason(delivery_end=99, settle_due=98, horizon=99) is None


def test_congestion_markets_that_cannot_settle_are_not_opened(tmp_path: Path) -> None:
    # a limit so low that the whole day is congested: on days 0, 1, 2 the DSO asks for all of days 1, 2, 3;
    # at 74 h day 1 (data out at 54 h) settles, day 2 ends at 72 h but its data is out at 78 h, day 3 ends at 96 h
    dso = {
        "id": "dso-1",
        "role": "dso",
        "congestion": {"product": "SRP", "feeders": ["feeder-1"], "price_cap": 3.0},
    }
    summary, markets = _run(
        tmp_path, horizon_hours=74, feeders={"feeder-1": {"limit_kw": 20}, "feeder-2": {"limit_kw": 300}}, buyers=[dso]
    )
    assert len(markets) == summary["markets_opened"] == 1 and set(markets.state) == {"settled"}
    assert summary["markets_skipped_horizon"] == 2
    assert summary["markets_skipped_horizon_by_source"] == {"congestion": 2}
    assert summary["markets_skipped_horizon_by_reason"] == {"delivery_after_horizon": 1, "settlement_after_horizon": 1}


def test_option_activations_fall_inside_markets_that_settle(tmp_path: Path) -> None:
    # CRP bought against forecast congestion and activated on measured congestion: every activation is
    # inside the window of a market that was opened, and every such market settles inside the horizon
    dso = {
        "id": "dso-1",
        "role": "dso",
        "congestion": {
            "product": "CRP",
            "feeders": ["feeder-1"],
            "threshold": 0.5,
            "price_cap": 3.0,
            "activate": True,
        },
    }
    feeders = {"feeder-1": {"limit_kw": 40}, "feeder-2": {"limit_kw": 300}}
    doc = scenario_dict(
        twin=False,
        horizon_hours=80,
        products={"CRP": "builtin"},
        feeders=feeders,
        aggregators=[{"id": "agg-a", "households": {"feeder-1": 60, "feeder-2": 40}}],
        buyers=[dso],
    )
    result = run(scenario_from_dict(doc), tmp_path)
    assert result.completed, result.error
    markets = pd.read_parquet(tmp_path / "markets.parquet")
    acts = pd.read_parquet(tmp_path / "activations.parquet")
    assert len(acts) > 0 and set(markets.state) == {"settled"}
    assert result.summary["markets_skipped_horizon_by_source"] == {"congestion": 1}
    window = acts.merge(markets[["market_id", "delivery_start", "delivery_end"]], on="market_id", validate="m:1")
    assert set(acts.market_id) <= set(markets.market_id)
    start = pd.to_datetime(window.interval_start)
    assert (start >= pd.to_datetime(window.delivery_start)).all()
    assert (start < pd.to_datetime(window.delivery_end)).all()
    assert (pd.to_datetime(markets.delivery_end) <= pd.Timestamp("2026-01-12") + pd.Timedelta(hours=80)).all()


def test_the_summary_says_why_markets_were_not_opened(tmp_path: Path) -> None:
    from flech_sim.cli import skipped_line

    summary, _ = _run(tmp_path, horizon_hours=77, buyers=[{"id": "dso-1", "role": "dso", "markets": [_srp(3)]}])
    # day 2 (delivered 65-69 h, its data out at 78 h) and day 3 (delivered after 77 h) are not opened
    assert summary["markets_skipped_horizon_by_reason"] == {
        "delivery_after_horizon": 1,
        "settlement_after_horizon": 1,
    }
    line = skipped_line(summary)
    assert line.startswith("2 (") and "delivery after it 1" in line and "timetable 2" in line
