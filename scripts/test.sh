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
# The store suite also runs on PostgreSQL: Debian's server package (the tests start and stop their own
# throwaway server as the postgres user; binaries live under /usr/lib/postgresql/*/bin, not on PATH).
# Set LADEDA_SKIP_PG=1 to skip that half; without PostgreSQL those tests fail rather than pass silently.
if [ "${LADEDA_SKIP_PG:-}" != "1" ] && ! command -v initdb >/dev/null 2>&1 \
    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
      || echo "error: could not install postgresql; the PostgreSQL store tests will fail" >&2
  fi
fi
python3 -m pytest -q "$@"
