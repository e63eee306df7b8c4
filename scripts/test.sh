#!/usr/bin/env bash
# The test command of README.md (CI runs exactly this through .ci/run): set up, build the
# embedded data set (needed by the notebook and reproduction tests), run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
.venv/bin/thadcr data build --quiet > /dev/null
.venv/bin/python -m pytest -q --durations=15 "$@"
