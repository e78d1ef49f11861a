"""The notebooks are executed so they cannot rot: every cell runs, none errors, each within a timeout.

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


def test_the_three_notebooks_exist() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert {"01_quickstart.ipynb", "02_dso_congestion.ipynb", "03_tso_dso_competition.ipynb"} <= set(names)


def _kernel_manager(tmp: Path) -> KernelManager:
    spec_dir = tmp / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "flech_sim test", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_without_errors(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLECH_SIM_NOTEBOOK_OUT", str(tmp_path / "out"))  # the kernel inherits it
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT_S, allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [(i, o.get("ename"), o.get("evalue")) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error in cell(s) {errors}"
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 3, f"{path.name}: expected its figures to be displayed, got {images} image(s)"
    # the notebook wrote its runs where it was told, not into the repository
    assert any((tmp_path / "out").rglob("manifest.json"))
