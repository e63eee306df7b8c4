#!/usr/bin/env bash
# Build the Jupyter Book into _build/html. Notebook outputs are cached in _build/.jupyter_cache and
# re-used while a notebook's code is unchanged; the Tables and Figures pages also read results/,
# so the cache is dropped (and every page re-read) whenever the results' tables or summaries change (a stamp of them is
# kept in _build/.results-stamp), and those pages never show numbers of an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=$(cat results/*/summary.json results/*/tables/*.csv 2>/dev/null | sha256sum | cut -d' ' -f1)
rebuild=()
if [ "$(cat _build/.results-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "[book] results changed since the last build: re-reading every page and re-executing the notebooks"
  rm -rf _build/.jupyter_cache
  rebuild=(--all)  # Sphinx re-reads only changed sources otherwise
fi
.venv/bin/jupyter-book build . -W -n --keep-going "${rebuild[@]}" "$@"
mkdir -p _build
echo "$stamp" > _build/.results-stamp
