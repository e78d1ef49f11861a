#!/usr/bin/env python3
"""Write docs/tables.md from the schema (``--check``: exit 1 if the committed file is stale)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flech_sim.docs import tables_markdown

DEFAULT = Path(__file__).resolve().parents[1] / "docs" / "tables.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=DEFAULT, help=f"file to write (default: {DEFAULT})")
    p.add_argument("--check", action="store_true", help="only compare; exit 1 if the file differs")
    args = p.parse_args(argv)
    text = tables_markdown()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run python scripts/gen_table_docs.py", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
