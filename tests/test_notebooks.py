"""The notebooks are executed so they cannot rot: every cell runs, none errors, each within a timeout,
and what they show is checked against the run's own files.

The kernel is this interpreter (``sys.executable``), given through a kernel
spec written for the test, so a user-level ``python3`` kernel pointing at
another Python cannot hide a broken notebook or break a good one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120
KERNEL = "flech-sim-test"


# Appended to a notebook and run in its kernel after its cells: what the notebook shows (its variables)
# against the Parquet files of its runs, read here with pyarrow and nothing of flech_sim.results.
_PRELUDE = """
import numpy as _np
import pyarrow.parquet as _pq

def _read(path):
    return _pq.read_table(path).to_pandas()

def _close(a, b, msg=""):
    _np.testing.assert_allclose(_np.asarray(a, dtype=float), _np.asarray(b, dtype=float), rtol=1e-9, atol=1e-6,
                                err_msg=msg)

def _pivot(k, mask, index):
    return k[mask].pivot(index=index, columns="metric", values="value")
"""

CHECKS: dict[str, str] = {
    "01_quickstart": """
k = _read(OUT / "kpis.parquet")
# the KPI table shown per aggregator is the run's kpis table, and its volumes and money are the settlements'
a = _pivot(k, (k.scope == "aggregator") & k.product_id.isna(), "participant")
assert sorted(per_aggregator.index) == sorted(a.index) == ["agg-north", "agg-south"], per_aggregator.index
_close(per_aggregator, a.loc[per_aggregator.index, per_aggregator.columns], "per_aggregator")
s = _read(OUT / "settlements.parquet")
s = s[s.role == "seller"].groupby("party")[["ordered_kwh", "delivered_kwh", "penalty_dkk", "net_dkk"]].sum()
_close(per_aggregator[["ordered_kwh", "delivered_kwh", "penalties_dkk", "net_dkk"]], s.loc[per_aggregator.index])
_close(per_aggregator.net_dkk, per_aggregator.payments_dkk - per_aggregator.penalties_dkk)
# the SQL feeder table equals the feeder KPIs, and its "without" peak is the twin's own feeder_load
f = _pivot(k, k.scope == "feeder", "feeder")
t = feeders.set_index("feeder")
assert sorted(t.index) == ["feeder-1", "feeder-2"]
for shown, metric in [("overload_with_flex_kwh", "overload_kwh"),
                      ("overload_without_flex_kwh", "overload_kwh_without_flex"),
                      ("peak_with_flex_kw", "peak_kw"), ("peak_without_flex_kw", "peak_kw_without_flex"),
                      ("steps_over_with_flex", "overload_steps"),
                      ("steps_over_without_flex", "overload_steps_without_flex")]:
    _close(t[shown], f.loc[t.index, metric], shown)
_close(t.peak_without_flex_kw, _read(OUT / "twin" / "feeder_load.parquet").groupby("feeder").load_kw.max()[t.index])
assert (t.steps_over_only_with_flex <= t.steps_over_with_flex).all()
# feeder-2 has no market: with and without flexibility are the same there
assert t.loc["feeder-2", "overload_with_flex_kwh"] == t.loc["feeder-2", "overload_without_flex_kwh"]
# the rebound events shown are the run's
_close(events.shifted_kwh.sum(), _read(OUT / "rebound_events.parquet").shifted_kwh.sum())
# the ensemble: three seeds; the summary's n and mean agree with the per-seed values queried from the runs
assert sorted(per_seed.index) == [1, 2, 3], per_seed.index
assert (headline.n == 3).all(), headline.n
_close(headline.loc["delivery_ratio", "mean"], per_seed.delivery_ratio.mean())
_close(headline.loc["overload_kwh", "mean"], per_seed.with_flex_kwh.mean())
_close(headline.loc["overload_kwh_without_flex", "std"], per_seed.without_flex_kwh.std(ddof=1))
o = headline.loc["overload_kwh"]
assert o.ci95_low < o["mean"] < o.ci95_high
""",
    "02_dso_congestion": """
sizing_load = _read(OUT / "sizing_twin" / "feeder_load.parquet").set_index("interval_start").load_kw.sort_index()
assert sorted(study.index) == ["x0.5", "x1", "x1.5"], study.index
for rid, scale in zip(["x0.5", "x1", "x1.5"], scales):
    # each run's request is its scale times the sizing twin's hourly overload (hourly intervals: kW = kWh)
    _close(study.need_kwh[rid], sum(round(scale * q, 1) for q in need["evening"]), rid)
    # the sizing run is each run's twin, read from the run's own twin/ directory
    twin = _read(OUT / "runs" / rid / "twin" / "feeder_load.parquet").set_index("interval_start").load_kw.sort_index()
    _close(twin, sizing_load, rid)
    # the study table is the run's kpis; the "without" overload is the twin's energy above the limit
    k = _read(OUT / "runs" / rid / "kpis.parquet")
    f = k[(k.scope == "feeder") & (k.feeder == "feeder-1")].set_index("metric").value
    for m in ["overload_kwh", "overload_kwh_without_flex", "peak_kw", "peak_kw_without_flex"]:
        _close(study.loc[rid, m], f[m], f"{rid} {m}")
    _close(study.loc[rid, "overload_kwh_without_flex"], (sizing_load - LIMIT_KW).clip(lower=0).sum() * 0.25, rid)
    own = _read(OUT / "runs" / rid / "feeder_load.parquet").load_kw
    _close(study.loc[rid, "peak_kw"], own.max(), rid)
    _close(windows.loc[rid, "twin_peak_in_window_kw"],
           sizing_load.loc["2026-01-13 16:00":"2026-01-13 21:45"].max(), rid)
    assert windows.loc[rid, "peak_in_window_kw"] <= study.loc[rid, "peak_kw"] + 1e-9
# buying more never lowers what was ordered
assert study.ordered_kwh.is_monotonic_increasing
_close(per_aggregator.ordered_kwh.sum(), study.loc["x1", "ordered_kwh"])
""",
    "03_tso_dso_competition": """
k = _read(OUT / "kpis.parquet")
p = _pivot(k, k.scope == "product", "product_id")
assert sorted(by_product.index) == ["SRP", "mFRR"], by_product.index
_close(by_product, p.loc[by_product.index, by_product.columns], "by_product")
s = _read(OUT / "settlements.parquet")
sellers = s[s.role == "seller"].groupby("product_id")[
    ["ordered_kwh", "delivered_kwh", "payment_dkk", "penalty_dkk"]].sum()
_close(by_product[["ordered_kwh", "delivered_kwh", "payments_dkk", "penalties_dkk"]], sellers.loc[by_product.index])
_close(by_seller.groupby(level="product_id").ordered_kwh.sum()[by_product.index], by_product.ordered_kwh)
# the feeder KPIs shown are the energy above the limit in feeder_compare, with and without flexibility
fc = _read(OUT / "feeder_compare.parquet").groupby("feeder")
h = scenario.households.dt_minutes / 60
_close(by_feeder.overload_kwh, fc.over_kw.sum()[by_feeder.index] * h)
_close(by_feeder.overload_kwh_without_flex, fc.twin_over_kw.sum()[by_feeder.index] * h)
_close(by_feeder.peak_kw_without_flex, fc.twin_load_kw.max()[by_feeder.index])
ev = _read(OUT / "rebound_events.parquet")
_close(rebound.shifted_kwh.sum(), ev.shifted_kwh.sum())
assert rebound.events.sum() == len(ev) > 0
""",
}


def test_the_three_notebooks_exist() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert {"01_quickstart.ipynb", "02_dso_congestion.ipynb", "03_tso_dso_competition.ipynb"} <= set(names)


def _kernel_manager(tmp: Path) -> KernelManager:
    spec_dir = tmp / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "flech_sim test",
                "language": "python",
            }
        )
    )
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_errors(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLECH_SIM_NOTEBOOK_OUT", str(tmp_path / "out"))  # the kernel inherits it
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    n_cells = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(_PRELUDE + CHECKS[path.stem]))
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT_S,
        allow_errors=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, c in enumerate(nb.cells[:n_cells])
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: error in cell(s) {errors}"
    failed = [o for o in nb.cells[-1].outputs if o.get("output_type") == "error"]
    assert not failed, f"{path.name}: what it shows disagrees with its runs' files:\n" + "\n".join(failed[0].traceback)
    images = sum(
        "image/png" in o.get("data", {}) for c in nb.cells[:n_cells] if c.cell_type == "code" for o in c.outputs
    )
    assert images >= 3, f"{path.name}: expected its figures to be displayed, got {images} image(s)"
    # the notebook wrote its runs where it was told, not into the repository
    assert any((tmp_path / "out").rglob("manifest.json"))
