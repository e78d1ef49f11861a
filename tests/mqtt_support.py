"""Shared by the MQTT tests: the scenario with one external aggregator, and the example's module."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "external_aggregator.py"
ME = "agg-x"

SCENARIO: dict[str, Any] = {
    "name": "mqtt_unit",
    "seed": 7,
    "start": "2026-01-12T00:00:00",
    "horizon_hours": 80,
    "spot": {"mean_eur_mwh": 35.0},  # the spot level agg-a's cost bids were set against: agg-x (0.1) must win
    "twin": False,
    "feeders": {"feeder-1": {"limit_kw": 400}, "feeder-2": {"limit_kw": 300}},
    "buyers": [
        {
            "id": "dso-1",
            "role": "dso",
            "markets": [
                {"product": "SRP", "location": "feeder-1", "count": 2, "need_kw": [60, 90, 90, 60], "price_cap": 3.0}
            ],
        }
    ],
    "aggregators": [
        {"id": "agg-a", "households": {"feeder-1": 120, "feeder-2": 50}},
        {"id": ME, "households": {"feeder-1": 40}, "external": True},
    ],
}


def example() -> Any:
    """examples/external_aggregator.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("external_aggregator", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
