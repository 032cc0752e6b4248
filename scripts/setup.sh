#!/usr/bin/env bash
# Create .venv with Python 3.11 (once) and install raymlp into it, editable, with the given extras.
#   source scripts/setup.sh [EXTRAS]      e.g. `source scripts/setup.sh test`   (`test,horovod` also builds Horovod)
set -euo pipefail
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"raymlp needs Python 3.11, found {sys.version.split()[0]}"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
extras="${1:-}"
find_links=()
if [[ ",$extras," == *,horovod,* ]]; then
    # Horovod's wheel is built against the venv's torch, so the base install (torch) goes first.
    pip install --quiet --disable-pip-version-check -e .
    cache="$(bash scripts/build_horovod.sh)"
    find_links=(--find-links "$cache")
fi
pip install --quiet --disable-pip-version-check "${find_links[@]}" -e ".${extras:+[$extras]}"
