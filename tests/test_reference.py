"""The bundled real-world reference ranges: complete, consistent and shipped with the package."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from flech_sim.reference import _parse, load_reference_ranges

REPO = Path(__file__).resolve().parents[1]


def test_every_range_has_bounds_unit_and_a_cited_source() -> None:
    refs = load_reference_ranges()
    assert len(refs.ranges) >= 20
    for key, r in refs.ranges.items():
        assert r.low <= r.high, key
        assert r.unit.strip(), key
        src = refs.source_of(key)
        assert src.title and src.publisher and src.url.startswith("http"), key
        assert 2000 <= src.year <= 2030, key
        assert (r.dkk_factor is None) == (r.dkk_unit is None), key


def test_every_source_is_cited_and_the_readable_table_lists_every_key() -> None:
    refs = load_reference_ranges()
    cited = {sid for r in refs.ranges.values() for sid in (r.source_id, *r.see_also)}
    cited |= {rule.source_id for rule in refs.rules.values()}
    assert cited == set(refs.sources), f"sources nothing cites: {set(refs.sources) - cited}"
    assert {"mfrr_energy_settlement", "imbalance_single_price", "dso_non_delivery"} <= set(refs.rules)
    table = (REPO / "docs" / "reference_ranges.md").read_text()
    for key in refs.ranges:
        assert f"`{key}`" in table, f"docs/reference_ranges.md does not list {key}"


def test_conversions_to_dkk() -> None:
    refs = load_reference_ranges()
    low, high, unit = refs["eur_dkk"].low, refs["eur_dkk"].high, refs["eur_dkk"].unit
    assert unit == "DKK/EUR" and low < 7.46038 < high
    lo, hi, u = refs["regulating_minus_spot_price"].in_dkk()  # 3.4-42 EUR/MWh
    assert u == "DKK/kWh" and lo == pytest.approx(3.4 * 7.46038 / 1000) and hi == pytest.approx(42 * 7.46038 / 1000)
    with pytest.raises(ValueError, match="no DKK conversion"):
        refs["hp_feeder_peak_contribution"].in_dkk()
    assert refs["dso_delivery_threshold"].contains(0.8) and not refs["dso_delivery_threshold"].contains(0.9)


def test_a_malformed_file_is_refused() -> None:
    src = {"s": {"title": "t", "publisher": "p", "year": 2024, "url": "https://x"}}
    ok = {"key": "k", "low": 1.0, "high": 2.0, "unit": "kW", "source_id": "s"}
    assert _parse({"sources": src, "ranges": [ok]})["k"].high == 2.0
    with pytest.raises(ValueError, match=r"low 3\.0 > high 2\.0"):
        _parse({"sources": src, "ranges": [ok | {"low": 3.0}]})
    with pytest.raises(ValueError, match="unknown source"):
        _parse({"sources": src, "ranges": [ok | {"source_id": "nope"}]})
    with pytest.raises(ValueError, match="twice"):
        _parse({"sources": src, "ranges": [ok, ok]})


def test_the_yaml_is_package_data() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["flech_sim"]
    assert "data/*.yaml" in patterns
