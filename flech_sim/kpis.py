"""Key figures of a run, computed by pure functions over its tables (and its no-flexibility twin's).

Nothing here reads the simulation's objects: every function takes DataFrames as :mod:`flech_sim.results`
reads them (time columns are timestamps), so the same code answers for a finished run, an old run
directory or a hand-built table in a test. :func:`compute_kpis` returns the ``kpis`` table in long
format (scope, product_id, participant, feeder, metric, value, unit), so ensembles and SQL need no
per-metric code.

Definitions (also in the schema docs of ``feeder_compare``, ``rebound_events`` and ``kpis``):

* money and volumes come from the sellers' settlement statements: ``net = payments - penalties``;
* the *scheduled change* of an aggregator is what it was told to deliver: accepted awards, or for products
  that activate (options with an availability payment, and regulating power, whose awards are also
  activations) the activations; down = shed (+), up = added (-);
* average prices are weighted by scheduled kWh: the energy (activation) price from the awarded bid's price,
  the availability price (DKK/kW per window) from the availability payments;
* overload = energy and steps above the feeder limit; ``*_without_flex`` from the twin;
* comfort: degree-hours outside the band (households), the part dispatch caused (``comfort``; only an aggregator
  with ``dispatch.force`` causes any) and the twin's; compensation from ``comfort_compensation``; net margin =
  net - compensation, per aggregator and run;
* baseline error = declared baseline (bids.baseline_kw) - the twin's load of the same portfolio(s), per
  market interval where both exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .schema import TABLES

REBOUND_CAP_MINUTES = 12 * 60
REBOUND_CONVERGE_STEPS = 2
REBOUND_TOL_MIN_KW = 1.0
REBOUND_TOL_SHARE = 0.01

METRICS: dict[str, tuple[str, str]] = {
    "ordered_kwh": ("kWh", "energy awarded (settled), sellers' statements"),
    "delivered_kwh": ("kWh", "verified delivered energy (capped at the award)"),
    "delivery_ratio": ("-", "delivered_kwh / ordered_kwh"),
    "payments_dkk": ("DKK", "payments to sellers (availability included)"),
    "penalties_dkk": ("DKK", "penalties paid by sellers"),
    "net_dkk": ("DKK", "sellers' net: payments - penalties"),
    "availability_dkk": ("DKK", "availability payments (options)"),
    "avg_energy_price_dkk_per_kwh": ("DKK/kWh", "awarded energy (activation) price, weighted by scheduled kWh"),
    "avg_availability_price_dkk_per_kw": ("DKK/kW", "availability price per kW and window, weighted by kW"),
    "scheduled_kwh": ("kWh", "scheduled change (awards, or activations for products that activate)"),
    "overload_kwh": ("kWh", "energy above the feeder limit, with flexibility"),
    "overload_kwh_without_flex": ("kWh", "energy above the feeder limit in the twin"),
    "overload_steps": ("-", "model steps above the limit, with flexibility"),
    "overload_steps_without_flex": ("-", "model steps above the limit in the twin"),
    "peak_kw": ("kW", "highest feeder load, with flexibility"),
    "peak_kw_without_flex": ("kW", "highest feeder load in the twin"),
    "comfort_degree_hours": ("K h", "degree-hours outside the comfort band, summed over households"),
    "comfort_degree_hours_forced": ("K h", "degree-hours outside the band caused by dispatch (table comfort)"),
    "comfort_degree_hours_without_flex": ("K h", "degree-hours outside the comfort band in the twin"),
    "comfort_breach_households": ("-", "households with any degree-hour outside the band caused by dispatch"),
    "comfort_compensation_dkk": ("DKK", "paid by aggregators to their households for breaches dispatch caused"),
    "net_margin_dkk": ("DKK", "aggregator's net_dkk minus its comfort compensation"),
    "shifted_kwh": ("kWh", "energy shed or added against the twin during activation events"),
    "recovered_kwh": ("kWh", "energy drawn back after activation events"),
    "rebound_ratio": ("-", "recovered_kwh / shifted_kwh over all events"),
    "baseline_mae_kw": ("kW", "mean |declared baseline - twin load| per market interval"),
    "baseline_bias_kw": ("kW", "mean (declared baseline - twin load) per market interval"),
    "baseline_mae_unawarded_kw": (
        "kW",
        "mean |declared baseline - metered load| where the seller's bid got "
        "nothing: the market's observed counterfactual (the seller's other "
        "commitments and their rebound included), so it measures forecast error alone",
    ),
    "baseline_bias_unawarded_kw": ("kW", "mean (declared baseline - metered load) where the seller's bid got nothing"),
}

HEADLINES: tuple[tuple[str, str], ...] = (
    ("delivery_ratio", "delivery_ratio"),
    ("seller_net_dkk", "net_dkk"),
    ("penalties_dkk", "penalties_dkk"),
    ("overload_kwh", "overload_kwh"),
    ("overload_kwh_without_flex", "overload_kwh_without_flex"),
    ("rebound_ratio", "rebound_ratio"),
    ("comfort_degree_hours", "comfort_degree_hours"),
    ("comfort_degree_hours_forced", "comfort_degree_hours_forced"),
    ("comfort_compensation_dkk", "comfort_compensation_dkk"),
)
"""Manifest summary key <- run-scope metric."""

KPI_COLUMNS = TABLES["kpis"].names


# == the twin comparison ==================================================================
def feeder_compare(feeder_load: pd.DataFrame, twin_feeder_load: pd.DataFrame) -> pd.DataFrame:
    """Per feeder and step: load with and without flexibility, their difference and the overloads."""
    twin = twin_feeder_load[["feeder", "interval_start", "load_kw"]].rename(columns={"load_kw": "twin_load_kw"})
    df = feeder_load[["feeder", "interval_start", "load_kw", "limit_kw"]].merge(
        twin, on=["feeder", "interval_start"], how="inner", validate="one_to_one"
    )
    df["change_kw"] = df.load_kw - df.twin_load_kw
    df["over_kw"] = (df.load_kw - df.limit_kw).clip(lower=0.0)
    df["twin_over_kw"] = (df.twin_load_kw - df.limit_kw).clip(lower=0.0)
    return df[list(TABLES["feeder_compare"].names)].sort_values(["feeder", "interval_start"]).reset_index(drop=True)


def scheduled_change(markets: pd.DataFrame, awards: pd.DataFrame, activations: pd.DataFrame) -> pd.DataFrame:
    """Per seller, market and interval: the change it was told to deliver (kW, + = shed), its length and price.

    Products that activate (any activation row, or an availability payment on an award) count their
    activations; the others their accepted awards.
    """
    cols = ["seller", "market_id", "product_id", "interval_start", "kw", "minutes", "price"]
    if markets.empty:
        return pd.DataFrame(columns=cols)
    activating = set(activations.product_id) | set(awards.loc[awards.availability_dkk.notna(), "product_id"])
    price = awards[["market_id", "bid_id", "interval_start", "price"]]
    act = activations.merge(price, on=["market_id", "bid_id", "interval_start"], how="left")
    act = act.rename(columns={"quantity_kw": "kw"})[
        ["seller", "market_id", "product_id", "interval_start", "kw", "price"]
    ]
    aw = awards[~awards.product_id.isin(activating) & (awards.accepted_kw != 0)]
    aw = aw.rename(columns={"accepted_kw": "kw"})[
        ["seller", "market_id", "product_id", "interval_start", "kw", "price"]
    ]
    parts = [p for p in (act, aw) if len(p)]
    if not parts:
        return pd.DataFrame(columns=cols)
    df = pd.concat(parts, ignore_index=True)
    terms = markets[["market_id", "direction", "interval_minutes"]]
    df = df.merge(terms, on="market_id", how="left")
    df["kw"] = np.where(df.direction == "up", -df.kw, df.kw)
    return df.rename(columns={"interval_minutes": "minutes"})[cols]


def _step_series(sched: pd.DataFrame, index: pd.DatetimeIndex, dt: int) -> pd.Series:
    """A seller's scheduled change spread onto the model steps (kW per step)."""
    out = pd.Series(0.0, index=index)
    if sched.empty:
        return out
    pos = {t: i for i, t in enumerate(index)}
    values = out.to_numpy().copy()
    for start, minutes, kw in zip(sched.interval_start, sched.minutes, sched.kw, strict=True):
        i0 = pos.get(pd.Timestamp(start))
        if i0 is None:
            continue
        values[i0 : i0 + max(int(minutes) // dt, 1)] += kw
    return pd.Series(values, index=index)


def participant_of(metering_point: pd.Series) -> pd.Series:
    """``<aggregator>@<feeder>`` -> ``<aggregator>`` (NaN stays NaN), what ``.str.split("@").str[0]`` gives.

    Split once per distinct metering point, not per row: a portfolio's load has a row per portfolio and
    step (millions in a long run, a few hundred points), and the per-row split made a list and two new
    strings of each (measured: 10,000 homes x 7 days, about 50 MiB per call at the end of the run)."""
    codes, uniques = pd.factorize(metering_point)
    prefixes = np.empty(len(uniques) + 1, dtype=object)
    prefixes[:-1] = [str(u).split("@")[0] for u in uniques]
    prefixes[-1] = np.nan  # code -1: a missing value
    return pd.Series(prefixes[codes], index=metering_point.index, name=metering_point.name)


def aggregator_load(portfolio_load: pd.DataFrame) -> pd.DataFrame:
    """Total load per aggregator and step (wide: one column per aggregator), unaggregated homes left out."""
    participant = participant_of(portfolio_load.metering_point)
    keep = participant != "unaggregated"
    df = pd.DataFrame(  # only the columns the pivot reads (a copy of the whole table was made here)
        {
            "interval_start": portfolio_load.interval_start[keep],
            "participant": participant[keep],
            "load_kw": portfolio_load.load_kw[keep],
        }
    )
    return df.pivot_table(index="interval_start", columns="participant", values="load_kw", aggfunc="sum")


def rebound_events(
    schedule: pd.DataFrame, portfolio_load: pd.DataFrame, twin_portfolio_load: pd.DataFrame, dt: int
) -> pd.DataFrame:
    """Activation events and what followed them, per aggregator (definitions: the rebound_events schema doc)."""
    names = list(TABLES["rebound_events"].names)
    ctrl, twin = aggregator_load(portfolio_load), aggregator_load(twin_portfolio_load)
    rows: list[dict[str, Any]] = []
    h = dt / 60.0
    cap = REBOUND_CAP_MINUTES // dt
    step = pd.Timedelta(minutes=dt)
    for participant in sorted(set(schedule.seller) & set(ctrl.columns) & set(twin.columns)):
        index = ctrl.index.intersection(twin.index).sort_values()
        d = (twin.loc[index, participant] - ctrl.loc[index, participant]).to_numpy()  # + = shed
        s = _step_series(schedule[schedule.seller == participant], pd.DatetimeIndex(index), dt).to_numpy()
        tol = max(REBOUND_TOL_MIN_KW, REBOUND_TOL_SHARE * float(np.abs(twin.loc[index, participant]).mean()))
        sign = np.sign(np.round(s, 9))
        n = len(s)
        starts = [i for i in range(n) if sign[i] != 0 and (i == 0 or sign[i - 1] != sign[i])]
        for a in starts:
            sg = sign[a]
            b = a
            while b < n and sign[b] == sg:
                b += 1
            nxt = next((j for j in range(b, n) if sign[j] != 0), n)
            end, reason, calm = b, "horizon", 0
            j = b
            while True:
                if j >= n:
                    end, reason = n, "horizon"
                    break
                if j >= nxt:
                    end, reason = nxt, "next_event"
                    break
                if j - b >= cap:
                    end, reason = j, "cap"
                    break
                calm = calm + 1 if abs(d[j]) <= tol else 0
                if calm >= REBOUND_CONVERGE_STEPS:
                    end, reason = j - REBOUND_CONVERGE_STEPS + 1, "converged"
                    break
                j += 1
            shifted = float(sg * d[a:b].sum() * h)
            back = -sg * d[b:end]
            recovered = float(back.sum() * h)
            rows.append(
                {
                    "participant": participant,
                    "direction": "down" if sg > 0 else "up",
                    "event_start": index[a],
                    "event_end": index[b - 1] + step,
                    "ordered_kwh": float(sg * s[a:b].sum() * h),
                    "shifted_kwh": shifted,
                    "recovery_end": (index[end - 1] + step) if end > b else index[b - 1] + step,
                    "recovery_minutes": int((end - b) * dt),
                    "recovered_kwh": recovered,
                    "rebound_peak_kw": float(max(back.max(), 0.0)) if len(back) else 0.0,
                    "rebound_ratio": recovered / shifted if shifted > 1e-9 else None,
                    "tolerance_kw": tol,
                    "end_reason": reason,
                }
            )
    df = pd.DataFrame(rows, columns=[n for n in names if n != "event_id"])
    df = df.sort_values(["event_start", "participant"], kind="stable").reset_index(drop=True)
    df.insert(0, "event_id", np.arange(len(df), dtype=np.int64))
    return df[names]


# == the KPIs ================================================================================
def _row(
    scope: str,
    metric: str,
    value: float | None,
    product_id: str | None = None,
    participant: str | None = None,
    feeder: str | None = None,
) -> dict[str, Any]:
    v = None if value is None or (isinstance(value, float) and not np.isfinite(value)) else float(value)
    return {
        "scope": scope,
        "product_id": product_id,
        "participant": participant,
        "feeder": feeder,
        "metric": metric,
        "value": v,
        "unit": METRICS[metric][0],
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 1e-12 else None


def money_kpis(
    settlements: pd.DataFrame, awards: pd.DataFrame, markets: pd.DataFrame, schedule: pd.DataFrame
) -> list[dict[str, Any]]:
    """Volumes, delivery, prices and money per run, product, aggregator and (product, aggregator)."""
    sel = settlements[settlements.role == "seller"]
    aw = awards.merge(markets[["market_id", "n_intervals"]], on="market_id", how="left")
    aw = aw[aw.availability_dkk.notna()]
    aw = aw.assign(kw_share=aw.accepted_kw / aw.n_intervals)
    sch = schedule.assign(kwh=schedule.kw.abs() * schedule.minutes / 60.0)
    sch = sch.assign(pk=sch.kwh * sch.price)
    groups: list[tuple[str, str | None, str | None]] = [("run", None, None)]
    products = sorted(set(sel.product_id) | set(sch.product_id))
    sellers = sorted(set(sel.party) | set(sch.seller))
    groups += [("product", p, None) for p in products]
    groups += [("aggregator", None, s) for s in sellers]
    groups += [
        ("aggregator", p, s)
        for p in products
        for s in sellers
        if ((sel.product_id == p) & (sel.party == s)).any() or ((sch.product_id == p) & (sch.seller == s)).any()
    ]
    rows: list[dict[str, Any]] = []
    for scope, p, s in groups:
        st, a, sc = sel, aw, sch
        if p is not None:
            st, a, sc = st[st.product_id == p], a[a.product_id == p], sc[sc.product_id == p]
        if s is not None:
            st, a, sc = st[st.party == s], a[a.seller == s], sc[sc.seller == s]
        ordered, delivered = float(st.ordered_kwh.sum()), float(st.delivered_kwh.sum())
        pay, pen = float(st.payment_dkk.sum()), float(st.penalty_dkk.sum())
        key = {"product_id": p, "participant": s}
        rows += [
            _row(scope, "ordered_kwh", ordered, **key),
            _row(scope, "delivered_kwh", delivered, **key),
            _row(scope, "delivery_ratio", _ratio(delivered, ordered), **key),
            _row(scope, "payments_dkk", pay, **key),
            _row(scope, "penalties_dkk", pen, **key),
            _row(scope, "net_dkk", float(st.net_dkk.sum()), **key),
            _row(scope, "availability_dkk", float(a.availability_dkk.sum()), **key),
            _row(
                scope,
                "avg_availability_price_dkk_per_kw",
                _ratio(float(a.availability_dkk.sum()), float(a.kw_share.sum())),
                **key,
            ),
            _row(scope, "scheduled_kwh", float(sc.kwh.sum()), **key),
            _row(scope, "avg_energy_price_dkk_per_kwh", _ratio(float(sc.pk.sum()), float(sc.kwh.sum())), **key),
        ]
    return rows


def feeder_kpis(feeder_load: pd.DataFrame, twin_feeder_load: pd.DataFrame | None, dt: int) -> list[dict[str, Any]]:
    """Overload energy and steps and the peak per feeder (and the run), with and without flexibility."""
    rows: list[dict[str, Any]] = []
    h = dt / 60.0
    variants = [("", feeder_load)] + ([("_without_flex", twin_feeder_load)] if twin_feeder_load is not None else [])
    for suffix, fl in variants:
        over = (fl.load_kw - fl.limit_kw).clip(lower=0.0)
        fl = fl.assign(over=over)
        for f, g in fl.groupby("feeder", sort=True):
            rows += [
                _row("feeder", "overload_kwh" + suffix, float(g.over.sum() * h), feeder=str(f)),
                _row("feeder", "overload_steps" + suffix, float((g.over > 0).sum()), feeder=str(f)),
                _row("feeder", "peak_kw" + suffix, float(g.load_kw.max()), feeder=str(f)),
            ]
        rows += [
            _row("run", "overload_kwh" + suffix, float(fl.over.sum() * h)),
            _row("run", "overload_steps" + suffix, float((fl.over > 0).sum())),
        ]
    return rows


def comfort_kpis(
    households: pd.DataFrame,
    comfort: pd.DataFrame | None = None,
    compensation: pd.DataFrame | None = None,
    twin_households: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Degree-hours outside the comfort band per aggregator and the run (unaggregated homes in the run only):
    all of them, the part dispatch caused (``comfort``), and the twin's (``twin_households``); and the
    compensation aggregators paid for the caused part (``compensation``)."""
    rows: list[dict[str, Any]] = []
    owners = sorted(o for o in set(households.owner) if o != "unaggregated")
    parts: list[tuple[str, pd.DataFrame | None, Any]] = [
        ("comfort_degree_hours", households, lambda d: d.comfort_violation_degree_minutes / 60.0),
        ("comfort_degree_hours_without_flex", twin_households, lambda d: d.comfort_violation_degree_minutes / 60.0),
        ("comfort_degree_hours_forced", comfort, lambda d: d.forced_degree_hours_below + d.forced_degree_hours_above),
        ("comfort_breach_households", comfort, lambda d: (d.forced_breach_steps > 0).astype(float)),
    ]
    for metric, df, value in parts:
        if df is None:
            continue
        v = df.assign(v=value(df)).groupby("owner").v.sum()
        rows += [_row("aggregator", metric, float(v.get(o, 0.0)), participant=o) for o in owners]
        rows.append(_row("run", metric, float(v.sum())))
    if compensation is not None:
        paid = compensation.groupby("aggregator").compensation_dkk.sum()
        rows += [_row("aggregator", "comfort_compensation_dkk", float(paid.get(o, 0.0)), participant=o) for o in owners]
        rows.append(_row("run", "comfort_compensation_dkk", float(paid.sum())))
    return rows


def net_margin_kpis(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per aggregator and the run: the sellers' net (payments - penalties) minus comfort compensation,
    from rows ``money_kpis`` and ``comfort_kpis`` already made (an aggregator with either)."""

    def get(metric: str, scope: str, who: str | None) -> float:
        return sum(
            r["value"] or 0.0
            for r in rows
            if r["metric"] == metric and r["scope"] == scope and r["product_id"] is None and r["participant"] == who
        )

    who = sorted(
        {
            r["participant"]
            for r in rows
            if r["scope"] == "aggregator" and r["metric"] in ("net_dkk", "comfort_compensation_dkk")
        }
    )
    out = [
        _row(
            "aggregator",
            "net_margin_dkk",
            get("net_dkk", "aggregator", w) - get("comfort_compensation_dkk", "aggregator", w),
            participant=w,
        )
        for w in who
    ]
    run = get("net_dkk", "run", None) - get("comfort_compensation_dkk", "run", None)
    return [*out, _row("run", "net_margin_dkk", run)]


def rebound_kpis(events: pd.DataFrame) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for scope, g, who in [
        ("run", events, None),
        *(("aggregator", g, str(p)) for p, g in events.groupby("participant", sort=True)),
    ]:
        shifted, recovered = float(g.shifted_kwh.sum()), float(g.recovered_kwh.sum())
        rows += [
            _row(scope, "shifted_kwh", shifted, participant=who),
            _row(scope, "recovered_kwh", recovered, participant=who),
            _row(scope, "rebound_ratio", _ratio(recovered, shifted) if shifted > 0 else None, participant=who),
        ]
    return rows


def baseline_errors(
    bids: pd.DataFrame, markets: pd.DataFrame, twin_portfolio_load: pd.DataFrame, start: pd.Timestamp
) -> pd.DataFrame:
    """Per market, seller and interval: declared baseline, the twin's load of the same portfolio(s), error."""
    b = bids[bids.baseline_kw.notna()]
    cols = ["market_id", "product_id", "seller", "interval_start", "baseline_kw", "twin_kw", "error_kw"]
    if b.empty or twin_portfolio_load.empty:
        return pd.DataFrame(columns=cols)
    b = b.groupby(["market_id", "product_id", "seller", "interval_start"], as_index=False).baseline_kw.mean()
    b = b.merge(markets[["market_id", "location", "interval_minutes"]], on="market_id", how="left")
    pl = twin_portfolio_load
    tw = pd.DataFrame(  # only the columns read below
        {
            "seller": participant_of(pl.metering_point),
            "location": pl.location,
            "interval_start": pl.interval_start,
            "load_kw": pl.load_kw,
        }
    )
    out = []
    for minutes, g in b.groupby("interval_minutes"):
        slot = (tw.interval_start - start) // pd.Timedelta(minutes=int(minutes))
        per = tw.assign(slot=slot).groupby(["seller", "location", "slot"], as_index=False).load_kw.mean()
        everywhere = per.groupby(["seller", "slot"], as_index=False).load_kw.sum().assign(location="*")
        per = pd.concat([per, everywhere], ignore_index=True).rename(columns={"load_kw": "twin_kw"})
        g = g.assign(slot=(g.interval_start - start) // pd.Timedelta(minutes=int(minutes)))
        out.append(g.merge(per, on=["seller", "location", "slot"], how="inner"))
    df = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=[*cols])
    df["error_kw"] = df.baseline_kw - df.twin_kw
    return df[cols]


def unawarded_bids(bids: pd.DataFrame, awards: pd.DataFrame) -> pd.DataFrame:
    """Bids of (market, seller) pairs that were awarded nothing: there the metered load is the
    counterfactual the declared baseline stands for."""
    won = awards[awards.accepted_kw > 0][["market_id", "seller"]].drop_duplicates().assign(_won=True)
    b = bids.merge(won, on=["market_id", "seller"], how="left")
    return b[b._won.isna()].drop(columns="_won")


def baseline_kpis(errors: pd.DataFrame, suffix: str = "") -> list[dict[str, Any]]:
    """MAE and bias of declared baselines; ``suffix`` '_unawarded' for the errors against the run's
    own metered load where the seller got nothing."""
    rows: list[dict[str, Any]] = []
    if errors.empty:
        return rows
    groups: list[tuple[str, str | None, str | None, pd.DataFrame]] = [("run", None, None, errors)]
    groups += [("product", str(p), None, g) for p, g in errors.groupby("product_id", sort=True)]
    groups += [("aggregator", str(p), str(s), g) for (p, s), g in errors.groupby(["product_id", "seller"], sort=True)]
    for scope, p, s, g in groups:
        rows += [
            _row(scope, f"baseline_mae{suffix}_kw", float(g.error_kw.abs().mean()), product_id=p, participant=s),
            _row(scope, f"baseline_bias{suffix}_kw", float(g.error_kw.mean()), product_id=p, participant=s),
        ]
    return rows


def compute_kpis(
    tables: Mapping[str, pd.DataFrame],
    twin: Mapping[str, pd.DataFrame] | None,
    dt: int,
    start: pd.Timestamp,
    events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The ``kpis`` table from a run's tables and (optionally) its twin's and the rebound events."""
    schedule = scheduled_change(tables["markets"], tables["awards"], tables["activations"])
    rows = money_kpis(tables["settlements"], tables["awards"], tables["markets"], schedule)
    rows += feeder_kpis(tables["feeder_load"], twin["feeder_load"] if twin is not None else None, dt)
    rows += comfort_kpis(
        tables["households"],
        tables.get("comfort"),
        tables.get("comfort_compensation"),
        twin["households"] if twin is not None else None,
    )
    rows += net_margin_kpis(rows)
    if "portfolio_load" in tables:
        rows += baseline_kpis(
            baseline_errors(
                unawarded_bids(tables["bids"], tables["awards"]), tables["markets"], tables["portfolio_load"], start
            ),
            "_unawarded",
        )
    if twin is not None:
        if events is None:
            events = rebound_events(schedule, tables["portfolio_load"], twin["portfolio_load"], dt)
        rows += rebound_kpis(events)
        rows += baseline_kpis(baseline_errors(tables["bids"], tables["markets"], twin["portfolio_load"], start))
    return pd.DataFrame(rows, columns=list(KPI_COLUMNS))


def headlines(kpis: pd.DataFrame) -> dict[str, float | None]:
    """The run-scope headline KPIs (manifest summary, CLI summary, sweep index)."""
    run = kpis[(kpis.scope == "run") & kpis.product_id.isna() & kpis.participant.isna()]
    values = dict(zip(run.metric, run.value, strict=True))
    out: dict[str, float | None] = {}
    for key, metric in HEADLINES:
        v = values.get(metric)
        out[key] = None if v is None or pd.isna(v) else round(float(v), 6)
    return out


def write_table(out_dir: Path, name: str, df: pd.DataFrame) -> int:
    """Write a frame as the schema table ``name`` (types from the schema; timestamps to seconds)."""
    schema = TABLES[name].arrow_schema()
    df = df[list(TABLES[name].names)].reset_index(drop=True)
    arrays = []
    for f in schema:
        col = df[f.name]
        if pa.types.is_timestamp(f.type):
            arrays.append(pa.array(pd.to_datetime(col).astype("datetime64[s]"), type=f.type))
        else:
            arrays.append(pa.array(col.astype(object).where(col.notna(), None).tolist(), type=f.type))
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), Path(out_dir) / f"{name}.parquet", compression="zstd")
    return len(df)
