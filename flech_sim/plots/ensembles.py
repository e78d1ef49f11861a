"""KPIs across seeds: mean and 95 % confidence interval per metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..results import Run
from .common import (
    KPIS,
    KPIS_SUMMARY,
    no_data_figure,
    optional_table,
)

# -- KPIs across seeds --------------------------------------------------------------------------
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t975(df: int) -> float:
    """Student t 97.5 % quantile (two-sided 95 % interval) for ``df`` degrees of freedom (1.96 above 30);
    a table rather than scipy, which flech_sim does not otherwise need."""
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96 if df > 0 else float("nan")


def kpi_summary_frame(source: str | Path | Run) -> pd.DataFrame:
    """Mean, standard deviation and 95 % CI per metric (and scope, product, participant, feeder).

    From the ``kpis_summary`` table of a sweep/run directory when present; else computed from the
    ``kpis`` tables of every run found (Student t interval over seeds); else empty."""
    from ..results import open_runs

    keys = ["scope", "product_id", "participant", "feeder", "metric", "unit"]
    root = source.path if isinstance(source, Run) else Path(source)
    summary = root / f"{KPIS_SUMMARY}.parquet"
    if summary.is_file():
        return pd.read_parquet(summary).rename(columns={"ci95_low": "ci_low", "ci95_high": "ci_high"})
    try:
        runs = open_runs(root)
    except FileNotFoundError:
        return pd.DataFrame(columns=[*keys, "n", "mean", "std", "ci_low", "ci_high"])
    frames = [t.assign(run_id=r.run_id) for r in runs if (t := optional_table(r, KPIS)) is not None]
    if not frames:
        return pd.DataFrame(columns=[*keys, "n", "mean", "std", "ci_low", "ci_high"])
    k = pd.concat(frames, ignore_index=True)
    present = [c for c in keys if c in k]
    g = k.groupby(present, dropna=False).value.agg(["count", "mean", "std"]).reset_index()
    g = g.rename(columns={"count": "n"})
    half = np.where(g.n > 1, [t975(n - 1) for n in g.n] * g["std"] / np.sqrt(g.n), np.nan)
    return g.assign(ci_low=g["mean"] - half, ci_high=g["mean"] + half)


def kpis_across_seeds(source: str | Path | Run, metrics: list[str] | None = None) -> Figure:
    """One panel per metric: mean over seeds with its 95 % confidence interval, per grid point when the
    summary has one (a band over a numeric swept parameter), else per product/participant."""
    what = "KPIs across seeds"
    s = kpi_summary_frame(source)
    if s.empty:
        return no_data_figure(what, f"no data for {what}: no '{KPIS_SUMMARY}' table and no '{KPIS}' tables found")
    if metrics is not None:
        s = s[s.metric.isin(metrics)]
    names = list(dict.fromkeys(s.metric))[:9]
    if not names:
        return no_data_figure(what, f"no data for {what}: none of the metrics {metrics} is in the summary")
    known = {
        "scope",
        "product_id",
        "participant",
        "feeder",
        "metric",
        "unit",
        "n",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "run_id",
    }
    params = [c for c in s.columns if c not in known and pd.api.types.is_numeric_dtype(s[c])]
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(4.3 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        d = s[s.metric == name]
        label_cols = [c for c in ("scope", "product_id", "participant", "feeder") if c in d and d[c].notna().any()]
        labels = d[label_cols].astype(str).agg(" · ".join, axis=1) if label_cols else pd.Series("", index=d.index)
        unit = str(d.unit.iloc[0]) if "unit" in d and d.unit.notna().any() else ""
        if params:
            x = params[0]
            for lab, part in d.groupby(labels, sort=True):
                part = part.sort_values(x)
                ax.plot(part[x], part["mean"], marker="o", ms=3, label=f"{lab} (mean)")
                ax.fill_between(part[x], part.ci_low, part.ci_high, alpha=0.2, label=f"{lab} (95 % CI)")
            ax.set_xlabel(x)
        else:
            pos = np.arange(len(d))
            err = np.vstack([d["mean"] - d.ci_low, d.ci_high - d["mean"]]).clip(min=0)
            ax.errorbar(pos, d["mean"], yerr=np.nan_to_num(err), fmt="o", capsize=4, color="C0", label="mean ± 95 % CI")
            ax.set_xticks(pos, [f"{lab}\n(n={int(n)})" for lab, n in zip(labels, d.n, strict=True)], fontsize=7)
            ax.set_xlim(-0.6, len(d) - 0.4)
        unit = "" if unit in ("-", "None", "nan") else unit
        for suffix in ("_dkk", "_kwh", "_kw"):
            name = name.removesuffix(suffix) if unit else name
        ax.set_title(name.replace("_", " ") + (f" ({unit})" if unit else ""), loc="left", fontsize=10)
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    fig.suptitle("KPIs across seeds (mean and 95 % confidence interval)", fontsize=11)
    return fig
