"""The admin page: one self-contained HTML file describing a run, viewable offline.

Everything the page shows is embedded: the figures of :mod:`flech_sim.plots`
as base64 images, and the per-market records as JSON that a small plain-JS
script renders (no CDN, no network). ``#market=<market_id>`` in the URL
opens that market's details, so a link (or a headless browser) can point
straight at one market.

Per-market sections are built here from the tables, not in JavaScript, so
the page and the tests read the same structure; a table of the schema that
has a ``market_id`` column and no dedicated section still appears, as a
generic section, so new products' records show up without changes here.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import re
import sys
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .plots import FEEDER_COMPARE, KINDS, _feeder_series, optional_table
from .results import Run, open_run
from .schema import TABLES

TEMPLATE = "report.html"
NOT_PER_MARKET = {"messages", "solver_timings"}
"""Tables with a market_id that are not shown as per-market sections (too raw or not outcomes)."""
TIME_FORMAT = "%Y-%m-%d %H:%M"
PER_INTERVAL = {"interval", "interval_start", "quantity_kw", "baseline_kw", "msg_id", "product_id"}
"""Bid columns that vary by interval or repeat the market; the others describe the bid as a whole."""


# -- data ---------------------------------------------------------------------------------------
def _value(v: Any) -> Any:
    """A JSON-ready scalar: timestamps as text, NaN/NaT as null, numpy scalars as Python ones."""
    if v is None or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp | datetime):
        return v.strftime(TIME_FORMAT)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, float):
        return round(v, 6)
    return v


NAMES = {
    "market_id": "market",
    "product_id": "product",
    "bid_id": "bid",
    "msg_id": "message",
    "request_msg_id": "request message",
    "ref_msg_id": "answers message",
    "n_bids": "bids",
    "n_accepted": "bids accepted",
    "n_intervals": "intervals",
    "interval_minutes": "interval length",
    "activation_id": "activation",
    "metering_point": "metering point",
    "interval_start": "interval start",
    "meter_gap": "meter gap",
    "objective_dkk": "objective",
    "mip_gap": "MIP gap",
}
"""Column names a reader knows better under another name; the rest lose underscores and unit suffixes."""
UNIT_SUFFIXES = ("_kwh", "_kw", "_dkk", "_c", "_s", "_minutes")


def _units() -> dict[str, str]:
    units: dict[str, str] = {}
    for table in TABLES.values():
        for c in table.columns:
            if c.unit not in ("-", "", "timestamp", "JSON"):
                units.setdefault(c.name, c.unit)
    units.update(
        {
            "accepted_kwh": "kWh",
            "need_kwh": "kWh",
            "unmet_kwh": "kWh",
            "delivered_kwh": "kWh",
            "award_payments_dkk": "DKK",
            "settled_payments_dkk": "DKK",
            "penalties_dkk": "DKK",
        }
    )
    return units


UNITS = _units()


def label(column: str) -> str:
    """A header for a column: human words and the unit from the schema (``need_kwh`` -> ``need (kWh)``)."""
    m = re.fullmatch(r"(.+)\[(\d+)\]", column)
    if m:
        return f"interval {m.group(2)} ({m.group(1)})"
    unit = UNITS.get(column)
    name = NAMES.get(column)
    if name is None:
        name = column
        for suffix in UNIT_SUFFIXES:
            if name.endswith(suffix) and unit:
                name = name[: -len(suffix)]
                break
        name = name.replace("_", " ")
    return f"{name} ({unit})" if unit else name


def _section(title: str, df: pd.DataFrame, key: str) -> dict[str, Any]:
    return {
        "key": key,
        "title": title,
        "columns": [str(c) for c in df.columns],
        "labels": [label(str(c)) for c in df.columns],
        "rows": [[_value(v) for v in row] for row in df.itertuples(index=False, name=None)],
    }


def _without_unused_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """Without the per-interval columns (``kW[3]``) a market does not have: a 2-interval market shows 2."""
    unused = [c for c in df.columns if re.fullmatch(r".+\[\d+\]", str(c)) and df[c].isna().all()]
    return df.drop(columns=unused) if len(df) else df


def _by_market(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {str(k): g.drop(columns=["market_id"]) for k, g in df.groupby("market_id", sort=False)} if len(df) else {}


def _drop_empty(df: pd.DataFrame) -> pd.DataFrame:
    """Without the columns that are null in every row (another product's terms)."""
    return df.loc[:, df.notna().any()] if len(df) else df


def _pivot_intervals(df: pd.DataFrame, index: list[str], value: str, label: str) -> pd.DataFrame:
    """One row per bid, one column per interval (``label`` 0, 1, ...)."""
    if df.empty:
        return df
    # groupby keeps null terms (another product's columns) as keys, without pivot_table's cross product
    wide = df.groupby([*index, "interval"], sort=False, dropna=False)[value].sum().unstack("interval")
    wide.columns = [f"{label}[{int(i)}]" for i in wide.columns]
    return wide.reset_index()


def market_sections(run: Run) -> dict[str, list[dict[str, Any]]]:
    """market_id -> ordered sections (request, bids, clearing, awards, activations, settlement, ...)."""
    markets = run.table("markets")
    ids = [str(m) for m in markets.market_id]
    out: dict[str, list[dict[str, Any]]] = {m: [] for m in ids}

    requests = (
        run.table(
            "messages", columns=["msg_id", "payload"], filter={"msg_id": markets.request_msg_id.dropna().tolist()}
        )
        if len(markets)
        else None
    )
    payload = dict(zip(requests.msg_id, requests.payload, strict=True)) if requests is not None else {}
    for _, row in markets.iterrows():
        terms = pd.DataFrame(
            {"field": [label(str(c)) for c in row.index], "value": [_value(v) for v in row.to_numpy()]}
        )
        sec = _section("Request", terms, "request")
        sec["payload"] = payload.get(row.request_msg_id)
        out[str(row.market_id)].append(sec)

    bids = _drop_empty(run.table("bids"))
    per_bid = [c for c in bids.columns if c not in PER_INTERVAL]  # terms of the bid as a whole, new ones too
    wide = _pivot_intervals(bids, per_bid, "quantity_kw", "kW")
    handled = {"markets", "bids", "clearings", "clearing_intervals", "awards", "activations", "settlements"}
    sections: list[tuple[str, str, pd.DataFrame]] = [("bids", "Bids (kW per interval)", wide)]
    clearings = run.table("clearings").drop(columns=["product_id"])
    sections.append(("clearing", "Clearing result", clearings))
    ci = run.table("clearing_intervals").drop(columns=["product_id"])
    sections.append(("clearing_intervals", "Clearing per interval", ci))
    awards = run.table("awards")
    kwh = awards.merge(markets[["market_id", "interval_minutes"]], on="market_id", how="left")
    kwh["accepted_kwh"] = kwh.accepted_kw * kwh.interval_minutes / 60.0
    money = {c: (c, lambda x: x.sum(min_count=1)) for c in _drop_empty(awards).columns if c.endswith("_dkk")}
    aw = (
        kwh.groupby(["market_id", "bid_id", "seller"], sort=False)
        .agg(
            price=("price", "first"),
            accepted_kwh=("accepted_kwh", "sum"),
            **money,
        )
        .reset_index()
    )
    if len(aw):
        aw = aw.merge(
            _pivot_intervals(awards, ["market_id", "bid_id"], "accepted_kw", "kW"),
            on=["market_id", "bid_id"],
            how="left",
        )
    sections.append(("awards", "Awards (accepted kW per interval)", aw))
    sections.append(("activations", "Activations", run.table("activations").drop(columns=["product_id"])))
    st = run.table("settlements").drop(columns=["product_id"])
    sections.append(("settlement", "Settlement", st))
    for name, table in TABLES.items():  # whatever else is per market (new products' tables)
        if name in handled or name in NOT_PER_MARKET or "market_id" not in table.names:
            continue
        df = run.table(name)
        sections.append((name, name.replace("_", " ").capitalize(), df.drop(columns=["product_id"], errors="ignore")))

    for key, title, df in sections:
        grouped = _by_market(df)
        for mid in ids:
            part = grouped.get(mid, df.iloc[0:0].drop(columns=["market_id"], errors="ignore"))
            out[mid].append(_section(title, _without_unused_intervals(part), key))
    return out


def _awards_kwh(run: Run) -> pd.DataFrame:
    """Accepted kWh per award row (kW x the market's interval length)."""
    awards = run.table("awards", columns=["market_id", "product_id", "accepted_kw", "payment_dkk"])
    minutes = run.table("markets", columns=["market_id", "interval_minutes"])
    awards = awards.merge(minutes, on="market_id", how="left")
    awards["accepted_kwh"] = awards.accepted_kw * awards.interval_minutes / 60.0
    return awards


def product_summary(run: Run) -> pd.DataFrame:
    """Per product: markets (by state); need, accepted and unmet energy; what the awards pay; delivered energy,
    payments and penalties as settled (sellers' side)."""
    markets = run.table("markets", columns=["market_id", "product_id", "state", "need_kwh"])
    if markets.empty:
        return pd.DataFrame(
            columns=[
                "product_id",
                "markets",
                "states",
                "need_kwh",
                "accepted_kwh",
                "unmet_kwh",
                "award_payments_dkk",
                "delivered_kwh",
                "settled_payments_dkk",
                "penalties_dkk",
            ]
        )
    clearings = run.table("clearings", columns=["product_id", "unmet_kwh"])
    awards = _awards_kwh(run)
    sellers = run.table(
        "settlements", columns=["product_id", "delivered_kwh", "payment_dkk", "penalty_dkk"], filter={"role": "seller"}
    )
    rows = []
    for product, m in markets.groupby("product_id", sort=True):
        a = awards[awards.product_id == product]
        s = sellers[sellers.product_id == product]
        states = m.state.value_counts().sort_index()
        rows.append(
            {
                "product_id": product,
                "markets": len(m),
                "states": ", ".join(f"{k} {v}" for k, v in states.items()),
                "need_kwh": m.need_kwh.sum(),
                "accepted_kwh": a.accepted_kwh.sum(),
                "unmet_kwh": clearings[clearings.product_id == product].unmet_kwh.sum(),
                "award_payments_dkk": a.payment_dkk.sum(),
                "delivered_kwh": s.delivered_kwh.sum(),
                "settled_payments_dkk": s.payment_dkk.sum(),
                "penalties_dkk": s.penalty_dkk.sum(),
            }
        )
    return pd.DataFrame(rows)


def _overload(run: Run) -> dict[str, Any]:
    """Energy above the feeders' limits with flexibility and, when the twin exists, without it (kWh)."""
    fc = optional_table(run, FEEDER_COMPARE)
    if fc is not None and len(fc):
        series, _ = _feeder_series(run)
    else:
        series = None
    step_h = (run.scenario.get("households") or {}).get("dt_minutes", 15) / 60.0
    if series is not None:
        above = {
            c: float((series[c] - series.limit_kw).clip(lower=0).sum() * step_h) for c in ("with_kw", "without_kw")
        }
        return {"with_kwh": above["with_kw"], "without_kwh": above["without_kw"], "twin": True}
    fl = run.table("feeder_load", columns=["load_kw", "limit_kw"])
    return {
        "with_kwh": float((fl.load_kw - fl.limit_kw).clip(lower=0).sum() * step_h),
        "without_kwh": None,
        "twin": False,
    }


def headline(run: Run) -> list[dict[str, Any]]:
    """The figures a reader wants first: markets, volume, cost, delivery ratio, penalties, overload."""
    markets = run.table("markets", columns=["state"])
    awards = _awards_kwh(run)
    buyers = run.table("settlements", columns=["payment_dkk", "penalty_dkk"], filter={"role": "buyer"})
    cols = ["ordered_kwh", "delivered_kwh", "penalty_dkk"]
    if "imbalance_dkk" in run.dataset("settlements").schema.names:  # runs before the settlement rules lack it
        cols.append("imbalance_dkk")
    sellers = run.table("settlements", columns=cols, filter={"role": "seller"})
    imbalance = float(sellers.imbalance_dkk.sum()) if "imbalance_dkk" in sellers else 0.0
    ordered = float(sellers.ordered_kwh.sum())
    settled = ", ".join(f"{k} {v}" for k, v in markets.state.value_counts().sort_index().items())
    o = _overload(run)
    rows: list[dict[str, Any]] = [
        {"key": "markets", "label": "markets", "value": len(markets), "unit": "", "note": settled or "none"},
        {
            "key": "volume",
            "label": "volume awarded",
            "value": float(awards.accepted_kwh.sum()),
            "unit": "kWh",
            "note": "accepted energy over all markets",
        },
        {
            "key": "cost",
            "label": "procurement cost",
            "value": float(awards.payment_dkk.sum()),
            "unit": "DKK",
            "note": f"awards; settled buyers paid {buyers.payment_dkk.sum():,.0f} DKK" if len(buyers) else "awards",
        },
        {
            "key": "delivery_ratio",
            "label": "delivery ratio",
            "value": float(sellers.delivered_kwh.sum()) / ordered if ordered > 0 else None,
            "unit": "%",
            "note": f"delivered / ordered over {ordered:,.0f} kWh settled" if ordered > 0 else "nothing settled yet",
        },
        {
            "key": "penalties",
            "label": "penalties",
            "value": float(sellers.penalty_dkk.sum()),
            "unit": "DKK",
            # Under the 'imbalance' rule the deviation is in penalty_dkk, and an over-delivery earns it (< 0).
            "note": "paid by sellers for shortfalls"
            + (f"; of which imbalance {imbalance:,.2f} DKK (negative: earned by over-delivery)" if imbalance else ""),
        },
    ]
    if o["twin"]:
        avoided = o["without_kwh"] - o["with_kwh"]
        rows.append(
            {
                "key": "overload",
                "label": "overload avoided" if avoided >= 0 else "overload caused",
                "value": abs(avoided),
                "unit": "kWh",
                "note": f"above feeder limits: {o['without_kwh']:,.0f} kWh without flexibility, "
                f"{o['with_kwh']:,.0f} kWh with it",
            }
        )
    else:
        rows.append(
            {
                "key": "overload",
                "label": "overload",
                "value": o["with_kwh"],
                "unit": "kWh",
                "note": "above feeder limits with flexibility; avoided or caused needs the no-flexibility "
                "twin, which this run lacks",
            }
        )
    return rows


def report_data(run: Run) -> dict[str, Any]:
    """Everything the page's script needs, as plain JSON-able data."""
    m = run.manifest
    markets = run.table("markets")
    cols = [
        "market_id",
        "product_id",
        "buyer",
        "location",
        "direction",
        "state",
        "requested_at",
        "gate_close",
        "delivery_start",
        "delivery_end",
        "need_kwh",
        "n_bids",
        "settled_at",
    ]
    start = m.get("scenario", {}).get("start")
    return {
        "run": {
            "run_id": run.run_id,
            "scenario_name": m.get("scenario_name"),
            "seed": m.get("seed"),
            "start": start,
            "simulated_until_minute": m.get("simulated_until_minute"),
            "completed": m.get("completed"),
            "flech_sim_version": m.get("flech_sim_version"),
        },
        "headline": headline(run),
        "products": _section("Products", product_summary(run), "products"),
        "markets": [
            dict(zip(cols, (_value(v) for v in row), strict=True))
            for row in markets[[c for c in cols if c in markets]].itertuples(index=False, name=None)
        ],
        "details": market_sections(run),
    }


# -- figures and page ------------------------------------------------------------------------
def _figure_html(run: Run, fmt: str) -> str:
    parts = []
    for kind, make in KINDS.items():
        fig = make(run)
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=90)
        mime = "image/svg+xml" if fmt == "svg" else "image/png"
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        parts.append(
            f'<figure id="fig-{kind}"><img alt="{html.escape(kind)}" src="data:{mime};base64,{data}">'
            f"<figcaption>{html.escape(kind.replace('_', ' '))}</figcaption></figure>"
        )
    return "\n".join(parts)


def _headline_html(data: dict[str, Any]) -> str:
    cards = []
    for h in data["headline"]:
        v = h["value"]
        text = "–" if v is None else f"{100 * v:.1f} %" if h["unit"] == "%" else f"{_fmt(v)} {h['unit']}".strip()
        cards.append(
            f'<div class="kpi" data-kpi="{h["key"]}"><div class="kpi-value">{html.escape(text)}</div>'
            f'<div class="kpi-label">{html.escape(h["label"])}</div>'
            f'<div class="kpi-note">{html.escape(h["note"])}</div></div>'
        )
    return f'<div id="headline">{"".join(cards)}</div>'


def _summary_html(data: dict[str, Any]) -> str:
    sec = data["products"]
    if not sec["rows"]:
        return '<p class="empty">No markets were opened in this run.</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in sec["labels"])
    body = "".join(
        "<tr>"
        + "".join(
            ('<td class="num">' if isinstance(v, int | float) else "<td>") + f"{html.escape(_fmt(v))}</td>" for v in r
        )
        + "</tr>"
        for r in sec["rows"]
    )
    return f'<table id="products"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(v: Any) -> str:
    """Rounded for reading: whole numbers above 100, two decimals above 1, three significant below
    (the same rule as the page's script; the embedded data keep six decimals)."""
    if isinstance(v, bool) or not isinstance(v, float):
        return "" if v is None else f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
    a = abs(v)
    if a >= 100 or v == 0:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:,.2f}"
    return f"{v:.3g}"


def render(run: Run, fmt: str = "png") -> str:
    """The whole page as text."""
    data = report_data(run)
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    page = (files("flech_sim") / "templates" / TEMPLATE).read_text(encoding="utf-8")
    r = data["run"]
    title = f"FLECH run {r['run_id']} — {r['scenario_name']} (seed {r['seed']})"
    for marker, value in {
        "<!--FLECH:title-->": html.escape(title),
        "<!--FLECH:meta-->": html.escape(
            f"flech_sim {r['flech_sim_version']} · start {r['start']} · simulated "
            f"{(r['simulated_until_minute'] or 0) / 60:g} h · "
            f"{'completed' if r['completed'] else 'FAILED'} · report by flech_sim {__version__}"
        ),
        "<!--FLECH:headline-->": _headline_html(data),
        "<!--FLECH:summary-->": _summary_html(data),
        "<!--FLECH:figures-->": _figure_html(run, fmt),
        "/*FLECH:data*/": blob,
    }.items():
        page = page.replace(marker, value)
    return page


def write_report(run_dir: str | Path, out: str | Path | None = None, fmt: str = "png") -> Path:
    """Write the report of a run directory (default: RUN_DIR/report.html) and return its path."""
    run = open_run(run_dir)
    path = Path(out) if out else run.path / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(run, fmt), encoding="utf-8")
    return path


def register_cli(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help="write a self-contained HTML page about a run (viewable offline)")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, metavar="FILE", help="HTML file (default: RUN_DIR/report.html)")
    p.add_argument("--format", choices=["png", "svg"], default="png", help="image format of the figures")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    try:
        path = write_report(args.run_dir, args.out, args.format)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0
