"""Every scenario in scenarios/ validates and runs, and together they study every built-in product."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flech_sim.registry import builtin_products
from flech_sim.scenario import load_scenario, read_scenario_file
from flech_sim.simulation import run
from flech_sim.sweep import expand

from .conftest import REPO

SCENARIOS = sorted((REPO / "scenarios").glob("*.yaml"))
STUDIES = [p for p in SCENARIOS if not read_scenario_file(p).get("sweep")]
SHORT_HOURS = 32  # day 0's meter data is out at 30 h: the markets delivered on day 0 can settle


def test_every_bundled_scenario_validates() -> None:
    assert len(STUDIES) >= 5
    for path in SCENARIOS:
        raw = read_scenario_file(path)
        specs = expand(raw, str(path)) if raw.get("sweep") else [load_scenario(path)]
        assert specs, path


def test_scenarios_study_every_builtin_product() -> None:
    studied = set().union(*(load_scenario(p).products for p in STUDIES))
    assert set(builtin_products()) <= studied, sorted(set(builtin_products()) - studied)
    used = set().union(
        *(
            {m.product for m in b.markets}
            | ({b.congestion.product} if b.congestion else set())
            | ({b.balancing.product} if b.balancing else set())
            for p in STUDIES
            for b in load_scenario(p).buyers
        )
    )
    assert set(builtin_products()) <= used  # not only declared: some buyer buys each of them


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_bundled_scenario_runs_at_a_short_horizon(path: Path, tmp_path: Path) -> None:
    s = load_scenario(path).model_copy(update={"horizon_hours": SHORT_HOURS, "twin": False})
    result = run(s, tmp_path / path.stem)
    assert result.completed, result.error
    markets = pd.read_parquet(tmp_path / path.stem / "markets.parquet")
    # horizon honesty: every market opened reached a final state inside the horizon
    assert set(markets.state) <= {"settled", "failed", "cancelled"}, markets.state.value_counts()
    assert result.summary["markets_opened"] == len(markets)
    assert result.summary["markets_skipped_horizon"] >= 0
