#!/usr/bin/env bash
# Set up raymlp with its test extra and run the test suite (unit, then integration with a real
# local Ray, MLflow store and HTTP). Extra arguments go to pytest, e.g. -m "not cluster".
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh test
python -m pytest "$@"
