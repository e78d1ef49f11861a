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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

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


def _participant_load(portfolio_load: pd.DataFrame) -> pd.DataFrame:
    """Long (interval_start, participant, load_kw) rows of the aggregated portfolios (unaggregated left out)."""
    participant = participant_of(portfolio_load.metering_point)
    keep = participant != "unaggregated"
    return pd.DataFrame(  # only the columns the pivot reads (a copy of the whole table was made here)
        {
            "interval_start": portfolio_load.interval_start[keep],
            "participant": participant[keep],
            "load_kw": portfolio_load.load_kw[keep],
        }
    )


def _pivot_load(long: pd.DataFrame) -> pd.DataFrame:
    return long.pivot_table(index="interval_start", columns="participant", values="load_kw", aggfunc="sum")


def aggregator_load(portfolio_load: pd.DataFrame) -> pd.DataFrame:
    """Total load per aggregator and step (wide: one column per aggregator), unaggregated homes left out."""
    return _pivot_load(_participant_load(portfolio_load))


def rebound_events(
    schedule: pd.DataFrame, portfolio_load: LoadTable, twin_portfolio_load: LoadTable, dt: int
) -> pd.DataFrame:
    """Activation events and what followed them, per aggregator (definitions: the rebound_events schema doc)."""
    names = list(TABLES["rebound_events"].names)
    ctrl, twin = _aggregators(portfolio_load), _aggregators(twin_portfolio_load)
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


_SLOT_KEY = ["seller", "location", "slot"]


def baseline_slots(bids: pd.DataFrame, markets: pd.DataFrame, start: pd.Timestamp) -> dict[int, pd.DataFrame]:
    """Per market interval length (minutes): the declared baselines per market, seller and interval, with the
    market's location and the interval's slot (its index in intervals of that length from ``start``)."""
    b = bids[bids.baseline_kw.notna()]
    if b.empty:
        return {}
    b = b.groupby(["market_id", "product_id", "seller", "interval_start"], as_index=False).baseline_kw.mean()
    b = b.merge(markets[["market_id", "location", "interval_minutes"]], on="market_id", how="left")
    out = {}
    for minutes, g in b.groupby("interval_minutes"):
        out[int(minutes)] = g.assign(slot=(g.interval_start - start) // pd.Timedelta(minutes=int(minutes)))
    return out


def _seller_load(pl: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(  # only the columns read below
        {
            "seller": participant_of(pl.metering_point),
            "location": pl.location,
            "interval_start": pl.interval_start,
            "load_kw": pl.load_kw,
        }
    )


def _slot_parts(
    tw: pd.DataFrame, start: pd.Timestamp, minutes: int, kahan: tuple[bool, bool] = (False, False)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean load per (seller, location, slot) and its sum over the seller's locations (location '*');
    ``kahan``: sum the means', the sums' groups by compensated summation whatever their order (:func:`_kahan`)."""
    slot = (tw.interval_start - start) // pd.Timedelta(minutes=int(minutes))
    per = _kahan(tw.assign(slot=slot), "load_kw", kahan[0]).groupby(_SLOT_KEY, as_index=False).load_kw.mean()
    everywhere = _kahan(per, "load_kw", kahan[1]).groupby(["seller", "slot"], as_index=False).load_kw.sum()
    return per, everywhere.assign(location="*")


def _kahan(frame: pd.DataFrame, column: str, on: bool) -> pd.DataFrame:
    """``frame`` with one more row, a copy of its first with ``column`` NaN, when ``on``.

    pandas sums (and averages) the groups of a groupby with ``np.add.reduceat`` when the rows come in
    the groups' sorted order and hold no NaN, else with compensated (Kahan) sums, which can differ in the
    last bit. A piece of a table may be in sorted order where the whole table is not; a NaN row, which
    neither sum counts, makes pandas sum the piece's groups as it summed the whole table's."""
    if not on or frame.empty:
        return frame
    return pd.concat([frame, frame.iloc[:1].assign(**{column: np.nan})])


class _Order:
    """Fed a table's rows piece by piece, in order: would pandas sum its groups by ``keys`` with
    ``np.add.reduceat`` (rows in the keys' sorted order, rows with a missing key first, no NaN value)?"""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)
        self.sorted = True
        self._last: list[Any] | None = None

    def feed(self, frame: pd.DataFrame, values: pd.Series) -> None:
        if not self.sorted or frame.empty:
            return
        if values.isna().any():
            self.sorted = False
            return
        missing = frame[self.keys].isna().any(axis=1).to_numpy()
        valid = np.flatnonzero(~missing)
        if missing.any() and (self._last is not None or (len(valid) and missing[valid[0] :].any())):
            self.sorted = False  # a missing key after a present one
            return
        if not len(valid):
            return
        cols = [_comparable(frame[k].to_numpy()[valid]) for k in self.keys]
        if self._last is not None:
            pairs = zip(self._last, cols, strict=True)
            cols = [np.concatenate([np.asarray([last], dtype=c.dtype), c]) for last, c in pairs]
        rises = np.zeros(len(cols[0]) - 1, dtype=bool)
        same = np.ones(len(cols[0]) - 1, dtype=bool)
        for c in cols:  # lexicographic: each row's keys >= the row before's
            rises |= same & (c[1:] > c[:-1])
            same &= c[1:] == c[:-1]
        self.sorted = bool((rises | same).all())
        self._last = [c[-1] for c in cols]


def _comparable(values: np.ndarray) -> np.ndarray:
    return values.astype(object) if values.dtype.kind not in "iufMm" else values


def _join_slots(per: pd.DataFrame, everywhere: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([per, everywhere], ignore_index=True).rename(columns={"load_kw": "twin_kw"})


def baseline_errors(
    bids: pd.DataFrame, markets: pd.DataFrame, twin_portfolio_load: LoadTable, start: pd.Timestamp
) -> pd.DataFrame:
    """Per market, seller and interval: declared baseline, the twin's load of the same portfolio(s), error."""
    cols = ["market_id", "product_id", "seller", "interval_start", "baseline_kw", "twin_kw", "error_kw"]
    if bids.baseline_kw.isna().all() or twin_portfolio_load.empty:
        return pd.DataFrame(columns=cols)
    tw = None if isinstance(twin_portfolio_load, PortfolioLoad) else _seller_load(twin_portfolio_load)
    out = []
    for minutes, g in baseline_slots(bids, markets, start).items():
        if tw is None:
            assert isinstance(twin_portfolio_load, PortfolioLoad)
            per = twin_portfolio_load.slot_load(minutes)
        else:
            per = _join_slots(*_slot_parts(tw, start, minutes))
        out.append(g.merge(per, on=_SLOT_KEY, how="inner"))
    df = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=[*cols])
    df["error_kw"] = df.baseline_kw - df.twin_kw
    return df[cols]


@dataclass(frozen=True)
class PortfolioLoad:
    """What the study reads of a ``portfolio_load`` table, aggregated piece by piece as it is read
    (:meth:`from_parquet`): the table has a row per portfolio and model step (about 14 million for 10,000
    homes over a year), the study only per-aggregator step sums and the slot means that declared baselines
    are compared with. Pieces never split a model step or a slot, and each group's rows are summed in the
    file's order, so every figure is the one the whole-table functions give (tests/test_memory_study.py)."""

    aggregators: pd.DataFrame
    """:func:`aggregator_load` of the whole table."""
    slots: Mapping[int, pd.DataFrame]
    """Interval minutes -> (seller, location, slot, twin_kw) as :func:`baseline_errors` joins them, only for
    the keys asked for (the rest would be joined with nothing)."""
    rows: int

    @property
    def empty(self) -> bool:
        return self.rows == 0

    def slot_load(self, minutes: int) -> pd.DataFrame:
        return self.slots[int(minutes)]

    @classmethod
    def from_frames(
        cls, pieces: Iterable[pd.DataFrame], start: pd.Timestamp, wanted: Mapping[int, pd.DataFrame]
    ) -> PortfolioLoad:
        """Aggregate ``pieces`` (the table's rows in order, cut only between model steps and between slots of
        every length in ``wanted``); ``wanted``: minutes -> the (seller, location, slot) keys to keep.

        Each piece is summed both ways pandas may sum groups (:func:`_kahan`); which one the whole table
        would have had is known only at its end, and decides which is kept."""
        steps = _Order(["interval_start", "participant"])
        slots_order = {m: _Order(_SLOT_KEY) for m in wanted}
        ranges: dict[int, list[pd.DataFrame]] = {m: [] for m in wanted}  # slot range and NaN per (seller, location)
        long: dict[bool, list[pd.DataFrame]] = {False: [], True: []}
        # minutes -> (kahan means, kahan sums) -> ([per], [everywhere]), only the keys wanted
        parts: dict[int, dict[tuple[bool, bool], tuple[list[pd.DataFrame], list[pd.DataFrame]]]] = {
            m: {(a, b): ([], []) for a in (False, True) for b in (False, True)} for m in wanted
        }
        rows = 0
        for piece in pieces:
            rows += len(piece)
            pl = _participant_load(piece)
            steps.feed(pl, pl.load_kw)
            for k in (False, True):
                grouped = _kahan(pl, "load_kw", k).groupby(["interval_start", "participant"], sort=True, dropna=True)
                long[k].append(grouped.agg("sum").reset_index())  # as pivot_table groups them
            tw = _seller_load(piece)
            for minutes, keys in wanted.items():
                slot = (tw.interval_start - start) // pd.Timedelta(minutes=int(minutes))
                slots_order[minutes].feed(tw.assign(slot=slot), tw.load_kw)
                k = pd.MultiIndex.from_frame(keys[_SLOT_KEY])
                for variant, (per_parts, everywhere_parts) in parts[minutes].items():
                    per, everywhere = _slot_parts(tw, start, minutes, variant)
                    if variant == (False, False):
                        by_point = per.assign(nan=per.load_kw.isna()).groupby(["seller", "location"])
                        ranges[minutes].append(by_point.agg(lo=("slot", "min"), hi=("slot", "max"), nan=("nan", "any")))
                    per_parts.append(per[pd.MultiIndex.from_frame(per[_SLOT_KEY]).isin(k)])
                    everywhere_parts.append(everywhere[pd.MultiIndex.from_frame(everywhere[_SLOT_KEY]).isin(k)])
        if not long[False]:
            raise ValueError("a portfolio_load table is at least one piece, even when it is empty")
        slots = {}
        for minutes, variants in parts.items():
            kahan = (not slots_order[minutes].sorted, not _sums_sorted(ranges[minutes]))
            per, everywhere = variants[kahan]
            slots[minutes] = _join_slots(  # each piece's groups in the whole table's (sorted) order
                pd.concat(per, ignore_index=True).sort_values(_SLOT_KEY, kind="stable"),
                pd.concat(everywhere, ignore_index=True).sort_values(["seller", "slot"], kind="stable"),
            )
        return cls(_pivot_load(pd.concat(long[not steps.sorted], ignore_index=True)), slots, rows)

    @classmethod
    def from_parquet(
        cls, path: Path, start: pd.Timestamp, wanted: Mapping[int, pd.DataFrame], columns: Sequence[str] | None = None
    ) -> PortfolioLoad:
        """Read ``path`` a few row groups at a time (:func:`slot_pieces`) and aggregate them."""
        from .results import _to_pandas

        f = pq.ParquetFile(path)
        lengths = sorted({int(m) for m in wanted})
        pieces = (
            _to_pandas(f.read_row_groups(g, columns=columns) if g else f.read(columns=columns))
            for g in slot_pieces(f, start, lengths)
        )
        return cls.from_frames(pieces, start, wanted)


LoadTable: TypeAlias = "pd.DataFrame | PortfolioLoad"
"""A ``portfolio_load`` table as the study takes it: whole, or aggregated as it was read."""


def _sums_sorted(ranges: list[pd.DataFrame]) -> bool:
    """Whether the whole table's slot means, in their sorted (seller, location, slot) order, come in the
    (seller, slot) order of the sums over locations and hold no NaN: from each piece's slot range and NaN
    per (seller, location)."""
    if not ranges:
        return False
    r = pd.concat(ranges).groupby(level=[0, 1]).agg(lo=("lo", "min"), hi=("hi", "max"), nan=("nan", "any"))
    if r.empty or bool(r.nan.any()):
        return False
    seller = r.index.get_level_values(0)
    same = seller[1:] == seller[:-1]
    return bool((~same | (r.lo.to_numpy()[1:] >= r.hi.to_numpy()[:-1])).all())


def _aggregators(pl: LoadTable) -> pd.DataFrame:
    return pl.aggregators if isinstance(pl, PortfolioLoad) else aggregator_load(pl)


def slot_pieces(f: pq.ParquetFile, start: pd.Timestamp, lengths: Sequence[int]) -> list[list[int]]:
    """The file's row groups in runs that can be aggregated on their own: a cut between two row groups only
    where every earlier row's ``interval_start`` lies before every later one's, in an earlier slot of each
    length in ``lengths`` (minutes from ``start``). A file whose times are out of order, or that has no
    ``interval_start`` statistics, is one piece (the whole table, as before)."""
    n = f.metadata.num_row_groups
    if n <= 1:
        return [list(range(n))]
    col = f.schema_arrow.get_field_index("interval_start")
    lo: list[int] = []
    hi: list[int] = []
    for i in range(n):
        st = f.metadata.row_group(i).column(col).statistics
        if f.metadata.row_group(i).num_rows == 0:
            lo.append(2**62)
            hi.append(-(2**62))
            continue
        if st is None or not st.has_min_max:
            return [list(range(n))]
        lo.append(_ns(st.min))
        hi.append(_ns(st.max))
    t0 = pd.Timestamp(start).value
    steps = [m * 60_000_000_000 for m in lengths]
    suffix_min = [0] * n
    m = 2**62
    for i in range(n - 1, -1, -1):
        m = min(m, lo[i])
        suffix_min[i] = m
    pieces: list[list[int]] = [[0]]
    prefix_max = hi[0]
    for i in range(1, n):
        after = suffix_min[i]
        if prefix_max < after and all((prefix_max - t0) // s < (after - t0) // s for s in steps):
            pieces.append([i])
        else:
            pieces[-1].append(i)
        prefix_max = max(prefix_max, hi[i])
    return pieces


def _ns(value: Any) -> int:
    """A timestamp statistic (datetime or Arrow scalar) in nanoseconds since the epoch, as pandas holds it."""
    return int(pd.Timestamp(value).as_unit("ns").value)


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
    tables: Mapping[str, Any],
    twin: Mapping[str, Any] | None,
    dt: int,
    start: pd.Timestamp,
    events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The ``kpis`` table from a run's tables and (optionally) its twin's and the rebound events.

    ``portfolio_load`` may be the whole table or a :class:`PortfolioLoad` aggregated as it was read (what
    :func:`flech_sim.twin.finish_study` passes): the figures are the same."""
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
