"""Documented real-world ranges (flech_sim/data/reference_ranges.yaml) that simulated figures are judged against.

The figures are bundled with the package and never fetched at run time, so a benchmark can print
each simulated KPI beside its published range offline; docs/reference_ranges.md is the same data
as a readable table with a note on how far each figure can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

DATA_FILE = "reference_ranges.yaml"


@dataclass(frozen=True)
class Source:
    id: str
    title: str
    publisher: str
    year: int
    url: str


@dataclass(frozen=True)
class ReferenceRange:
    """One published figure: [low, high] in the source's unit, optionally convertible to DKK."""

    key: str
    low: float
    high: float
    unit: str
    source_id: str
    note: str = ""
    dkk_factor: float | None = None
    dkk_unit: str | None = None
    see_also: tuple[str, ...] = ()

    def in_dkk(self) -> tuple[float, float, str]:
        """The range in ``dkk_unit`` (e.g. SEK/MWh -> DKK/kWh); ValueError if the figure is not money."""
        if self.dkk_factor is None or self.dkk_unit is None:
            raise ValueError(f"{self.key} ({self.unit}) has no DKK conversion")
        return self.low * self.dkk_factor, self.high * self.dkk_factor, self.dkk_unit

    def contains(self, value: float) -> bool:
        """Whether a figure in the range's own unit lies inside it."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Rule:
    """A verified market rule without a single number (e.g. how imbalances are settled)."""

    key: str
    text: str
    source_id: str


@dataclass(frozen=True)
class ReferenceRanges:
    ranges: dict[str, ReferenceRange]
    sources: dict[str, Source]
    rules: dict[str, Rule]

    def __getitem__(self, key: str) -> ReferenceRange:
        return self.ranges[key]

    def source_of(self, key: str) -> Source:
        return self.sources[self.ranges[key].source_id]


def _parse(raw: dict[str, Any]) -> ReferenceRanges:
    sources = {sid: Source(id=sid, **fields) for sid, fields in raw["sources"].items()}
    ranges: dict[str, ReferenceRange] = {}
    for entry in raw["ranges"]:
        r = ReferenceRange(**(entry | {"see_also": tuple(entry.get("see_also", ()))}))
        if r.key in ranges:
            raise ValueError(f"reference range {r.key!r} appears twice")
        for sid in (r.source_id, *r.see_also):
            if sid not in sources:
                raise ValueError(f"reference range {r.key!r} names unknown source {sid!r}")
        if not r.low <= r.high:
            raise ValueError(f"reference range {r.key!r}: low {r.low} > high {r.high}")
        ranges[r.key] = r
    rules = {e["key"]: Rule(**e) for e in raw.get("rules", [])}
    for rule in rules.values():
        if rule.source_id not in sources:
            raise ValueError(f"rule {rule.key!r} names unknown source {rule.source_id!r}")
    return ReferenceRanges(ranges=ranges, sources=sources, rules=rules)


@cache
def load_reference_ranges() -> ReferenceRanges:
    """The bundled ranges, validated (unique keys, known sources, low <= high)."""
    text = resources.files("flech_sim.data").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return _parse(yaml.safe_load(text))
