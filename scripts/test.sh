#!/usr/bin/env bash
# The test command of the README, also run by CI (.ci/run): installs everything, then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install-chromium.sh
.venv/bin/python -m pytest -q "$@"
