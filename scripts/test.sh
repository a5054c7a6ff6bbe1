#!/usr/bin/env bash
# Install everything the tests need, then run them (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r requirements.txt
bash scripts/fetch_encoder.sh  # CLIP second opinion (optional; LaDeDa-only without it)
# The real-browser test drives Debian's Chromium through Playwright.
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser test will be skipped" >&2
  fi
fi
python3 -m pytest -q "$@"
