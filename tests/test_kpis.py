"""KPIs as pure functions over small hand-built tables: every figure below is worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from flech_sim import kpis as K
from flech_sim.sweep import summarize_kpis, t_interval

T0 = pd.Timestamp("2026-01-12 00:00")


def _t(hours: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=hours)


def _markets() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "market_id": ["m-srp", "m-crp"],
            "product_id": ["SRP", "CRP"],
            "direction": ["down", "up"],
            "interval_minutes": [60, 60],
            "n_intervals": [2, 2],
            "location": ["f1", "f1"],
        }
    )


def _awards() -> pd.DataFrame:
    # SRP: agg-a 10 kW x 2 h at 0.5; CRP: agg-a reserves 4 kW at activation price 1.0, availability 6 DKK/kW
    return pd.DataFrame(
        {
            "market_id": ["m-srp", "m-srp", "m-crp", "m-crp"],
            "bid_id": ["b1", "b1", "c1", "c1"],
            "product_id": ["SRP", "SRP", "CRP", "CRP"],
            "seller": ["agg-a"] * 4,
            "interval_start": [_t(0), _t(1), _t(2), _t(3)],
            "accepted_kw": [10.0, 10.0, 4.0, 4.0],
            "price": [0.5, 0.5, 1.0, 1.0],
            "payment_dkk": [5.0, 5.0, 12.0, 12.0],
            "availability_dkk": [None, None, 12.0, 12.0],  # 6 DKK/kW x 4 kW / 2 intervals
        }
    )


def _activations() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "market_id": ["m-crp"],
            "product_id": ["CRP"],
            "seller": ["agg-a"],
            "bid_id": ["c1"],
            "interval_start": [_t(2)],
            "quantity_kw": [3.0],
        }
    )


def _settlements() -> pd.DataFrame:
    rows = [  # (market, product, party, role, ordered, delivered, payment, penalty)
        ("m-srp", "SRP", "agg-a", "seller", 10.0, 10.0, 5.0, 0.0),
        ("m-srp", "SRP", "agg-a", "seller", 10.0, 6.0, 5.0, 6.0),
        ("m-srp", "SRP", "dso", "buyer", 20.0, 16.0, 10.0, 6.0),
        ("m-crp", "CRP", "agg-a", "seller", 3.0, 3.0, 27.0, 0.0),
    ]
    df = pd.DataFrame(
        rows,
        columns=[
            "market_id",
            "product_id",
            "party",
            "role",
            "ordered_kwh",
            "delivered_kwh",
            "payment_dkk",
            "penalty_dkk",
        ],
    )
    df["net_dkk"] = [5.0, -1.0, -4.0, 27.0]
    return df


def _value(
    kpis: pd.DataFrame,
    metric: str,
    scope: str = "run",
    product: str | None = None,
    participant: str | None = None,
    feeder: str | None = None,
) -> float | None:
    sel = (kpis.scope == scope) & (kpis.metric == metric)
    for col, v in (("product_id", product), ("participant", participant), ("feeder", feeder)):
        sel &= kpis[col].isna() if v is None else kpis[col] == v
    hit = kpis[sel]
    assert len(hit) == 1, (metric, scope, product, participant, feeder, hit)
    v = hit.value.iloc[0]
    return None if pd.isna(v) else float(v)


def test_scheduled_change_uses_activations_for_options_and_signs_up_negative() -> None:
    s = K.scheduled_change(_markets(), _awards(), _activations())
    assert sorted(zip(s.market_id, s.kw, s.price, strict=True)) == [
        ("m-crp", -3.0, 1.0),
        ("m-srp", 10.0, 0.5),
        ("m-srp", 10.0, 0.5),
    ]


def test_money_kpis_conserve_and_match_hand_figures() -> None:
    sched = K.scheduled_change(_markets(), _awards(), _activations())
    k = pd.DataFrame(K.money_kpis(_settlements(), _awards(), _markets(), sched))
    assert _value(k, "ordered_kwh") == 23.0 and _value(k, "delivered_kwh") == 19.0
    assert _value(k, "delivery_ratio") == pytest.approx(19 / 23)
    assert _value(k, "payments_dkk") == 37.0 and _value(k, "penalties_dkk") == 6.0 and _value(k, "net_dkk") == 31.0
    for scope, p, s in [("run", None, None), ("product", "SRP", None), ("aggregator", "CRP", "agg-a")]:
        pay, pen = _value(k, "payments_dkk", scope, p, s), _value(k, "penalties_dkk", scope, p, s)
        assert pay - pen == pytest.approx(_value(k, "net_dkk", scope, p, s))  # conservation
        assert _value(k, "delivered_kwh", scope, p, s) <= _value(k, "ordered_kwh", scope, p, s)
    assert _value(k, "delivery_ratio", "product", "SRP") == pytest.approx(16 / 20)
    # energy price weighted by scheduled kWh: (20 kWh x 0.5 + 3 kWh x 1.0) / 23 kWh
    assert _value(k, "avg_energy_price_dkk_per_kwh") == pytest.approx(13 / 23)
    assert _value(k, "avg_energy_price_dkk_per_kwh", "product", "CRP") == pytest.approx(1.0)
    # availability: 24 DKK for 4 kW over the window = 6 DKK/kW, apart from the activation price
    assert _value(k, "availability_dkk", "product", "CRP") == 24.0
    assert _value(k, "avg_availability_price_dkk_per_kw", "product", "CRP") == pytest.approx(6.0)
    assert _value(k, "avg_availability_price_dkk_per_kw", "product", "SRP") is None


def _feeder(loads: list[float], feeder: str = "f1", limit: float = 100.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "feeder": feeder,
            "interval_start": [_t(i / 4) for i in range(len(loads))],
            "load_kw": loads,
            "limit_kw": limit,
        }
    )


def test_feeder_kpis_with_and_without_flexibility() -> None:
    ctrl, twin = _feeder([90, 110, 130, 100]), _feeder([120, 120, 100, 80])
    k = pd.DataFrame(K.feeder_kpis(ctrl, twin, dt=15))
    assert _value(k, "overload_kwh", "feeder", feeder="f1") == pytest.approx((10 + 30) / 4)
    assert _value(k, "overload_kwh_without_flex", "feeder", feeder="f1") == pytest.approx(40 / 4)
    assert _value(k, "overload_steps", "feeder", feeder="f1") == 2
    assert (
        _value(k, "peak_kw", "feeder", feeder="f1") == 130
        and _value(k, "peak_kw_without_flex", "feeder", feeder="f1") == 120
    )
    cmp = K.feeder_compare(ctrl, twin)
    assert cmp.change_kw.tolist() == [-30, -10, 30, 20] and cmp.twin_over_kw.tolist() == [20, 20, 0, 0]


def _portfolio(loads: list[float], who: str = "agg-a") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "metering_point": f"{who}@f1",
            "location": "f1",
            "interval_start": [_t(i) for i in range(len(loads))],
            "load_kw": loads,
        }
    )


def test_rebound_event_shed_recovered_peak_and_ratio() -> None:
    sched = pd.DataFrame(
        {
            "seller": ["agg-a", "agg-a"],
            "market_id": "m",
            "product_id": "SRP",
            "interval_start": [_t(1), _t(2)],
            "kw": [10.0, 10.0],
            "minutes": 60,
            "price": 0.5,
        }
    )
    twin = _portfolio([50, 50, 50, 50, 50, 50, 50, 50])
    ctrl = _portfolio([50, 40, 42, 56, 58, 50, 50, 50])
    ev = K.rebound_events(sched, ctrl, twin, dt=60)
    assert len(ev) == 1
    e = ev.iloc[0]
    assert e.direction == "down" and e.event_start == _t(1) and e.event_end == _t(3)
    assert e.ordered_kwh == 20 and e.shifted_kwh == 18  # 10 + 8 kWh shed against the twin
    assert e.recovered_kwh == 14 and e.rebound_peak_kw == 8  # 6 + 8 kWh drawn back, peak 8 kW
    assert e.rebound_ratio == pytest.approx(14 / 18)
    assert e.end_reason == "converged" and e.recovery_minutes == 120 and e.recovery_end == _t(5)
    assert e.tolerance_kw == 1.0  # max(1 kW, 1 % of 50 kW)
    k = pd.DataFrame(K.rebound_kpis(ev))
    assert _value(k, "rebound_ratio", "aggregator", participant="agg-a") == pytest.approx(14 / 18)


def test_rebound_window_stops_at_the_next_event() -> None:
    sched = pd.DataFrame(
        {
            "seller": "agg-a",
            "market_id": "m",
            "product_id": "SRP",
            "interval_start": [_t(1), _t(3)],
            "kw": [10.0, -5.0],
            "minutes": 60,
            "price": 0.5,
        }
    )
    ev = K.rebound_events(sched, _portfolio([50, 40, 60, 55, 50, 50]), _portfolio([50] * 6), dt=60)
    assert ev.direction.tolist() == ["down", "up"]
    assert ev.end_reason.tolist() == ["next_event", "converged"]
    assert ev.recovered_kwh.iloc[0] == 10 and ev.shifted_kwh.iloc[1] == 5


def test_baseline_error_against_the_twin() -> None:
    bids = pd.DataFrame(
        {
            "market_id": "m-srp",
            "product_id": "SRP",
            "seller": "agg-a",
            "interval_start": [_t(0), _t(0), _t(1)],
            "baseline_kw": [55.0, 55.0, 40.0],
        }
    )
    twin = _portfolio([50, 50])
    err = K.baseline_errors(bids, _markets(), twin, T0)
    assert err.error_kw.tolist() == [5.0, -10.0]  # two price steps of one interval count once
    k = pd.DataFrame(K.baseline_kpis(err))
    assert _value(k, "baseline_mae_kw") == 7.5 and _value(k, "baseline_bias_kw") == -2.5


def test_headlines_pick_run_scope_figures() -> None:
    k = pd.DataFrame(
        [
            K._row("run", "delivery_ratio", 0.8),
            K._row("product", "delivery_ratio", 0.5, "SRP"),
            K._row("run", "net_dkk", 3.0),
        ]
    )
    h = K.headlines(k)
    assert h["delivery_ratio"] == 0.8 and h["seller_net_dkk"] == 3.0 and h["rebound_ratio"] is None


def test_t_interval_on_known_numbers() -> None:
    n, mean, std, lo, hi = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4 dof) from the tables
    assert (n, mean) == (5, 3.0) and std == pytest.approx(math.sqrt(2.5))
    assert (lo, hi) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert t_interval([4.0])[:2] == (1, 4.0) and math.isnan(t_interval([4.0])[3])


def test_summarize_kpis_groups_seeds_per_grid_point() -> None:
    rows = []
    for p, seed, v in [(0.1, 1, 2.0), (0.1, 2, 4.0), (0.8, 1, 10.0), (0.8, 2, 10.0)]:
        rows.append({**K._row("run", "net_dkk", v), "price": p, "seed": seed})
    s = summarize_kpis(pd.DataFrame(rows), ["price"])
    assert s.price.tolist() == [0.1, 0.8] and s.n.tolist() == [2, 2]
    assert s["mean"].tolist() == [3.0, 10.0] and s["std"].iloc[1] == 0.0
    assert s.ci95_low.iloc[0] == pytest.approx(3 - 12.706204736174698 * math.sqrt(2) / math.sqrt(2))


def test_baseline_error_where_the_bid_got_nothing() -> None:
    """Against the run's own meters, only (market, seller) pairs awarded nothing count: there the
    metered load is the counterfactual the declared baseline stands for."""
    bids = pd.DataFrame(
        {
            "market_id": ["m-srp", "m-srp", "m-srp"],
            "product_id": "SRP",
            "seller": ["agg-a", "agg-a", "agg-b"],
            "interval_start": [_t(0), _t(1), _t(0)],
            "baseline_kw": [55.0, 40.0, 99.0],
        }
    )
    awards = pd.DataFrame({"market_id": ["m-srp", "m-srp"], "seller": ["agg-a", "agg-b"], "accepted_kw": [0.0, 3.0]})
    left = K.unawarded_bids(bids, awards)
    assert left.seller.tolist() == ["agg-a", "agg-a"]  # agg-b won something: its meters show its delivery
    k = pd.DataFrame(K.baseline_kpis(K.baseline_errors(left, _markets(), _portfolio([50, 50]), T0), "_unawarded"))
    assert _value(k, "baseline_mae_unawarded_kw") == 7.5 and _value(k, "baseline_bias_unawarded_kw") == -2.5


def test_participant_of_matches_the_per_row_split() -> None:
    """The per-distinct-point split gives what ``.str.split("@").str[0]`` gave, missing values and order kept."""
    mp = pd.Series(["agg-1@f1", "unaggregated@f2", None, "agg-1@f1", "agg-2", "agg-2@f1@x"], index=[5, 3, 9, 1, 0, 7])
    got = K.participant_of(mp)
    want = mp.str.split("@").str[0]
    assert got.index.tolist() == [5, 3, 9, 1, 0, 7]
    assert got.tolist()[:2] + got.tolist()[3:] == ["agg-1", "unaggregated", "agg-1", "agg-2", "agg-2"]
    assert pd.isna(got[9]) and pd.isna(want[9])
    assert got.drop(9).tolist() == want.drop(9).tolist()


def test_aggregator_load_sums_per_aggregator_and_step_without_unaggregated() -> None:
    t0, t1 = pd.Timestamp("2025-01-01 00:00"), pd.Timestamp("2025-01-01 00:15")
    pl = pd.DataFrame(
        {
            "metering_point": ["a@f1", "a@f2", "unaggregated@f1", "b@f1", "a@f1", "b@f1"],
            "location": ["f1", "f2", "f1", "f1", "f1", "f1"],
            "interval_start": [t0, t0, t0, t0, t1, t1],
            "load_kw": [1.0, 2.0, 100.0, 4.0, 8.0, 16.0],
        }
    )
    wide = K.aggregator_load(pl)
    assert list(wide.columns) == ["a", "b"]
    assert wide.loc[t0].tolist() == [3.0, 4.0]
    assert wide.loc[t1].tolist() == [8.0, 16.0]
