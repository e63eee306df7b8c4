#!/usr/bin/env bash
# The main job on the embedded default: set up, build the data set, run every experiment of
# Tables 1-5 (tiny profile, 3 seeds for Table 1), render tables and figures, build the book.
# Interrupt it at any time: finished runs are kept, and re-running continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
.venv/bin/thadcr data build
.venv/bin/thadcr reproduce --profile tiny --jobs 2 "$@"
bash scripts/book.sh
echo "The book is at $(pwd)/_build/html/index.html"
