#!/usr/bin/env python3
"""Write docs/scenario.md and docs/scenario.schema.json from flech_sim/scenario.py
(``--check``: exit 1 if a committed file is stale)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flech_sim.docs import scenario_json_schema, scenario_markdown

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--docs", type=Path, default=DOCS, help=f"directory to write into (default: {DOCS})")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if a file differs")
    args = p.parse_args(argv)
    files = {args.docs / "scenario.md": scenario_markdown(), args.docs / "scenario.schema.json": scenario_json_schema()}
    if args.check:
        stale = [f for f, text in files.items() if not f.exists() or f.read_text() != text]
        for f in stale:
            print(f"{f} is out of date: run python scripts/gen_scenario_docs.py", file=sys.stderr)
        return 1 if stale else 0
    args.docs.mkdir(parents=True, exist_ok=True)
    for f, text in files.items():
        f.write_text(text)
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
