"""The rules of ARCHITECTURE.md, checked on the source: who may import whom.

Statically (by parsing every module's imports, type-only ones included) so that a late import inside
a function cannot slip past, as it would past a check of ``sys.modules``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "flech_sim"


def _imports(path: Path) -> set[str]:
    """Absolute names of the flech_sim modules (and third-party top-level packages) ``path`` imports."""
    mod = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _modules(sub: str) -> list[Path]:
    return sorted((PKG / sub).rglob("*.py")) if (PKG / sub).is_dir() else [PKG / f"{sub}.py"]


def _offenders(sub: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{p.relative_to(PKG.parent)} imports {name}"
        for p in _modules(sub)
        for name in sorted(_imports(p))
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    ]


@pytest.mark.parametrize(
    ("sub", "forbidden"),
    [
        # clearing is pure: no clock, no messages bus, no participants, no products
        ("clearing", ("simpy", "flech_sim.agents", "flech_sim.products", "flech_sim.endpoint", "flech_sim.world")),
        # settlement arithmetic is pure too
        ("settlement", ("simpy", "flech_sim.agents", "flech_sim.products", "flech_sim.world")),
        # products never reach agents, the world, the wiring or the scenario (scenario -> registry -> products)
        (
            "products",
            (
                "flech_sim.agents",
                "flech_sim.world",
                "flech_sim.simulation",
                "flech_sim.households",
                "flech_sim.coordination",
            ),
        ),
        # agents talk through messages: no product internals, no platform wiring (their Recorder writes only
        # the tables it was handed, so agents/base.py may name the Persistor type it wraps)
        ("agents", ("flech_sim.products", "flech_sim.simulation", "flech_sim.dispatcher", "flech_sim.coordination")),
        # the coordinator hears of markets on the event bus, never from product internals
        ("coordination", ("flech_sim.products",)),
    ],
)
def test_layering(sub: str, forbidden: tuple[str, ...]) -> None:
    assert _offenders(sub, forbidden) == []


def test_agents_never_import_each_other() -> None:
    """Buyers, aggregators and the data provider share only base.py and strategies (pure)."""
    roles = {"aggregator", "buyers", "data_provider"}
    bad = [
        f"{p.name} imports {name}"
        for p in _modules("agents")
        for name in _imports(p)
        if name.startswith("flech_sim.agents.") and name.split(".")[2] in roles - {p.stem}
    ]
    assert bad == []


def test_the_checker_sees_relative_and_late_imports(tmp_path: Path) -> None:
    """The check itself can fail: a late, relative import of a forbidden module is found."""
    probe = PKG / "clearing" / "_probe_for_test.py"
    probe.write_text("def f():\n    from ..agents import base\n    import simpy\n", encoding="utf-8")
    try:
        found = _offenders("clearing", ("simpy", "flech_sim.agents"))
    finally:
        probe.unlink()
    assert any("imports simpy" in f for f in found) and any("flech_sim.agents" in f for f in found)
