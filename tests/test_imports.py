"""Start-up: a run does not import what only other commands need (issue 12). Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO

HEAVY = ("dask", "distributed", "matplotlib", "pyomo")


def _loaded_after(code: str) -> dict[str, bool]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_simulation_loads_no_dask_matplotlib_or_pyomo() -> None:
    assert _loaded_after("import flech_sim.simulation") == dict.fromkeys(HEAVY, False)


def test_the_run_command_line_loads_no_dask_matplotlib_or_pyomo() -> None:
    code = (
        "from flech_sim.cli import _parser\n"
        "args = _parser(['run', 'scenarios/default.yaml']).parse_args(['run', 'scenarios/default.yaml'])\n"
        "assert args.command == 'run'\n"
        "import flech_sim.simulation"
    )
    assert _loaded_after(code) == dict.fromkeys(HEAVY, False)


def test_other_commands_and_help_still_see_every_command() -> None:
    from flech_sim.cli import _parser

    for argv in (["plot", "x"], ["--help"], []):
        choices = _parser(argv)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert {"run", "validate", "tables", "plot", "report", "audit"} <= set(choices), argv
    core = _parser(["run", "x"])._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(core) == {"run", "validate", "tables"}
