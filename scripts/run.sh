#!/usr/bin/env bash
# Install the runtime dependencies and start the dashboard on the bundled model
# (the README's run command). State lives in $LADEDA_DATA_DIR (default ./runtime).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -r requirements.txt
bash scripts/fetch_encoder.sh  # CLIP second opinion (optional; LaDeDa-only without it)
exec python3 -m streamlit run dashboard/app.py "$@"
