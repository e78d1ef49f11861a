"""Feeder sizing (flech_sim.sizing): the limit is a percentile of the no-flexibility twin's load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flech_sim.cli import main
from flech_sim.scenario import scenario_from_dict
from flech_sim.simulation import run
from flech_sim.sizing import size_limits, twin_feeder_load
from flech_sim.twin import twin_scenario

from .conftest import scenario_dict


def test_size_limits_hand_checked() -> None:
    # feeder a: 1..100 kW; the 98th percentile (linear) is 98.02, rounded up to 10 kW -> 100: no step above
    # feeder b: 50 steps of 10 kW and 50 of 20 kW: the 90th percentile is 20 -> nothing above; limit 20
    fl = pd.DataFrame(
        {
            "feeder": ["a"] * 100 + ["b"] * 100,
            "load_kw": list(np.arange(1.0, 101.0)) + [10.0] * 50 + [20.0] * 50,
            "limit_kw": 50.0,
        }
    )
    out = size_limits(fl, 98, round_to=10).set_index("feeder")
    assert out.loc["a", "percentile_kw"] == pytest.approx(98.02)
    assert out.loc["a", "limit_kw"] == 100 and out.loc["a", "share_above"] == 0.0
    assert out.loc["a", "current_share_above"] == pytest.approx(0.5)  # 51..100 above the 50 kW limit
    unrounded = size_limits(fl, 95, round_to=0).set_index("feeder")
    assert unrounded.loc["a", "limit_kw"] == pytest.approx(95.05)
    assert unrounded.loc["a", "share_above"] == pytest.approx(0.05)  # 96..100
    assert unrounded.loc["b", "limit_kw"] == 20 and unrounded.loc["b", "peak_kw"] == 20
    with pytest.raises(ValueError):
        size_limits(fl, 100)


def _tiny(**over: object) -> dict:
    return scenario_dict(
        horizon_hours=48,
        twin=False,
        aggregators=[{"id": "agg-a", "households": {"feeder-1": 50, "feeder-2": 30}}],
        **over,
    )


def test_sized_limits_put_the_twin_above_them_in_the_chosen_share(tmp_path: Path) -> None:
    scenario = scenario_from_dict(_tiny())
    load = twin_feeder_load(scenario)
    assert set(load.feeder) == {"feeder-1", "feeder-2"} and len(load) == 2 * 48 * 4
    pooled = twin_feeder_load(scenario, seeds=2)
    assert sorted(pooled.seed.unique()) == [7, 8] and len(pooled) == 2 * len(load)
    first = pooled[pooled.seed == 7].merge(load, on=["feeder", "interval_start"], suffixes=("", "_one"))
    assert len(first) == len(load) and np.allclose(first.load_kw, first.load_kw_one)  # seed 7: the same run
    assert not np.allclose(pooled[pooled.seed == 7].load_kw.to_numpy(), pooled[pooled.seed == 8].load_kw.to_numpy())
    limits = size_limits(load, 97, round_to=0)
    # a run of the twin with the sized limits: above them are the steps ranked past 0.97 x (n - 1), i.e. ~3 %
    feeders = {r.feeder: {"limit_kw": r.limit_kw} for r in limits.itertuples()}
    resized = twin_scenario(scenario_from_dict(_tiny(feeders=feeders)))
    result = run(resized, tmp_path / "resized")
    assert result.completed, result.error
    fl = pd.read_parquet(tmp_path / "resized" / "feeder_load.parquet")
    share = (fl.load_kw > fl.limit_kw).groupby(fl.feeder).mean()
    n = 48 * 4
    expected = (n - 1 - np.floor(0.97 * (n - 1))) / n  # 6 of 192 steps (no ties in a continuous load)
    assert np.allclose(share.to_numpy(), expected), share
    assert np.allclose(limits.set_index("feeder").share_above[share.index].to_numpy(), share.to_numpy())
    # the twin's load does not depend on the limits: the same as the sizing run's
    merged = fl.merge(load, on=["feeder", "interval_start"], suffixes=("", "_twin"))
    assert np.allclose(merged.load_kw, merged.load_kw_twin)


def test_cli_size_feeders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_tiny()))
    assert (
        main(["size-feeders", str(path), "--percentile", "97", "--hours", "24", "--out", str(tmp_path / "limits.csv")])
        == 0
    )
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "limits.csv").set_index("feeder")
    for f in ("feeder-1", "feeder-2"):
        assert f"  {f}: {{limit_kw: {table.loc[f, 'limit_kw']:.0f}}}" in out
    assert main(["size-feeders", str(path), "--percentile", "100"]) == 2
