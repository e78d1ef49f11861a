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
import sys
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .plots import KINDS
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


def _section(title: str, df: pd.DataFrame, key: str) -> dict[str, Any]:
    return {"key": key, "title": title, "columns": [str(c) for c in df.columns],
            "rows": [[_value(v) for v in row] for row in df.itertuples(index=False, name=None)]}


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

    requests = run.table("messages", columns=["msg_id", "payload"],
                         filter={"msg_id": markets.request_msg_id.dropna().tolist()}) if len(markets) else None
    payload = dict(zip(requests.msg_id, requests.payload, strict=True)) if requests is not None else {}
    for _, row in markets.iterrows():
        terms = pd.DataFrame({"field": list(row.index), "value": [_value(v) for v in row.to_numpy()]})
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
    aw = kwh.groupby(["market_id", "bid_id", "seller"], sort=False).agg(
        price=("price", "first"), accepted_kwh=("accepted_kwh", "sum"), **money,
    ).reset_index()
    if len(aw):
        aw = aw.merge(_pivot_intervals(awards, ["market_id", "bid_id"], "accepted_kw", "kW"),
                      on=["market_id", "bid_id"], how="left")
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
            out[mid].append(_section(title, grouped.get(mid, df.iloc[0:0].drop(columns=["market_id"],
                                                                                   errors="ignore")), key))
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
        return pd.DataFrame(columns=["product_id", "markets", "states", "need_kwh", "accepted_kwh", "unmet_kwh",
                                     "award_payments_dkk", "delivered_kwh", "settled_payments_dkk", "penalties_dkk"])
    clearings = run.table("clearings", columns=["product_id", "unmet_kwh"])
    awards = _awards_kwh(run)
    sellers = run.table("settlements", columns=["product_id", "delivered_kwh", "payment_dkk", "penalty_dkk"],
                        filter={"role": "seller"})
    rows = []
    for product, m in markets.groupby("product_id", sort=True):
        a = awards[awards.product_id == product]
        s = sellers[sellers.product_id == product]
        states = m.state.value_counts().sort_index()
        rows.append({
            "product_id": product, "markets": len(m),
            "states": ", ".join(f"{k} {v}" for k, v in states.items()),
            "need_kwh": m.need_kwh.sum(), "accepted_kwh": a.accepted_kwh.sum(),
            "unmet_kwh": clearings[clearings.product_id == product].unmet_kwh.sum(),
            "award_payments_dkk": a.payment_dkk.sum(), "delivered_kwh": s.delivered_kwh.sum(),
            "settled_payments_dkk": s.payment_dkk.sum(), "penalties_dkk": s.penalty_dkk.sum(),
        })
    return pd.DataFrame(rows)


def report_data(run: Run) -> dict[str, Any]:
    """Everything the page's script needs, as plain JSON-able data."""
    m = run.manifest
    markets = run.table("markets")
    cols = ["market_id", "product_id", "buyer", "location", "direction", "state", "requested_at", "gate_close",
            "delivery_start", "delivery_end", "need_kwh", "n_bids", "settled_at"]
    start = m.get("scenario", {}).get("start")
    return {
        "run": {"run_id": run.run_id, "scenario_name": m.get("scenario_name"), "seed": m.get("seed"),
                "start": start, "simulated_until_minute": m.get("simulated_until_minute"),
                "completed": m.get("completed"), "flech_sim_version": m.get("flech_sim_version")},
        "products": _section("Products", product_summary(run), "products"),
        "markets": [dict(zip(cols, (_value(v) for v in row), strict=True))
                    for row in markets[[c for c in cols if c in markets]].itertuples(index=False, name=None)],
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
        parts.append(f'<figure id="fig-{kind}"><img alt="{html.escape(kind)}" src="data:{mime};base64,{data}">'
                     f"<figcaption>{html.escape(kind.replace('_', ' '))}</figcaption></figure>")
    return "\n".join(parts)


def _summary_html(data: dict[str, Any]) -> str:
    sec = data["products"]
    if not sec["rows"]:
        return '<p class="empty">No markets were opened in this run.</p>'
    head = "".join(f"<th>{html.escape(c)}</th>" for c in sec["columns"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in sec["rows"])
    return f'<table id="products"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3f}".rstrip("0").rstrip(".") if v % 1 else f"{v:,.0f}"
    return "" if v is None else str(v)


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
            f"{'completed' if r['completed'] else 'FAILED'} · report by flech_sim {__version__}"),
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


def register_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
