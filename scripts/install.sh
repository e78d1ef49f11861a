#!/usr/bin/env bash
# The project's virtualenv with the package and its test extra (pytest, ruff, mypy, ...): used by
# scripts/test.sh and by CI (.ci/run), which lints with these tools before running the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
