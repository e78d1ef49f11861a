"""New products plug in by configuration: a dotted path or an entry point, the core untouched."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pandas as pd
import pytest

from flech_sim import registry
from flech_sim.products.srp import SRPProduct
from flech_sim.scenario import ScenarioError, scenario_from_dict
from flech_sim.simulation import run

from .conftest import scenario_dict
from .toy_product import ToyProduct


def toy_scenario(impl: str) -> dict:  # type: ignore[type-arg]
    d = scenario_dict(horizon_hours=60)
    d["products"] = {"SRP": "builtin", "TOY": impl}
    d["buyers"][0]["markets"].append({"product": "TOY", "location": "feeder-2", "need_kw": [20, 20], "count": 1})
    return d


def check_toy_market_ran(out: Path) -> None:
    markets = pd.read_parquet(out / "markets.parquet")
    toy = markets[markets.product_id == "TOY"]
    assert toy.state.tolist() == ["settled"]
    awards = pd.read_parquet(out / "awards.parquet")
    toy_awards = awards[awards.product_id == "TOY"]
    assert toy_awards.accepted_kw.sum() == pytest.approx(40.0)  # need 20 kW x 2 intervals, first come first served
    msgs = pd.read_parquet(out / "messages.parquet")
    assert (msgs.topic.str.startswith("flech/TOY/")).any()


def test_builtin_srp_is_registered() -> None:
    assert registry.resolve_product("SRP") is SRPProduct
    assert "SRP" in registry.builtin_products()


def test_toy_product_by_dotted_path(tmp_path: Path) -> None:
    s = scenario_from_dict(toy_scenario("tests.toy_product:ToyProduct"))
    result = run(s, tmp_path / "run")
    assert result.completed, result.error
    check_toy_market_ran(tmp_path / "run")


def test_toy_product_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint(name="TOY", value="tests.toy_product:ToyProduct", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        registry,
        "entry_points",
        lambda group, name: [ep] if (group, name) == (registry.ENTRY_POINT_GROUP, "TOY") else [],
    )
    assert registry.resolve_product("TOY", "entry_point") is ToyProduct
    result = run(scenario_from_dict(toy_scenario("entry_point")), tmp_path / "run")
    assert result.completed, result.error
    check_toy_market_ran(tmp_path / "run")


def test_bad_product_paths_are_scenario_errors() -> None:
    with pytest.raises(ScenarioError, match=r"products\.TOY: no entry point 'TOY'"):
        scenario_from_dict(toy_scenario("entry_point"))
    with pytest.raises(ScenarioError, match="is not a subclass"):
        scenario_from_dict(toy_scenario("pathlib:Path"))
