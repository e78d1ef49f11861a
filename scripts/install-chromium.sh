#!/usr/bin/env bash
# Headless Chromium for the admin-page test (Debian's package; no browser download at test time).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  exit 0
fi
echo "chromium is missing: install Debian's package (sudo apt-get install chromium) to run the admin-page test" >&2
exit 1
