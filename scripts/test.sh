#!/usr/bin/env bash
# The test command of the README, also run by CI (.ci/run): installs everything, then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
bash scripts/install-chromium.sh
.venv/bin/python -m pytest -q "$@"
