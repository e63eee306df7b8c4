#!/usr/bin/env bash
# Set-up (idempotent): the virtual environment .venv with thadcr installed editable, Chromium for
# the book's browser test, MathJax for offline equations. Re-running when up to date is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.thadcr-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing thadcr and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -e ".[book,test]"
  echo "$want" > "$stamp"
fi

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[setup] warning: chromium is missing and cannot be installed here (needs root and apt-get);" \
         "install Debian's 'chromium' package for the book's browser test" >&2
  fi
fi

if [ -f scripts/setup_book_assets.sh ]; then
  bash scripts/setup_book_assets.sh
fi
echo "[setup] ready: .venv/bin/python, .venv/bin/thadcr"
