#!/usr/bin/env bash
# Set up raymlp and run the quickstart: data -> train -> tune -> register -> int8 -> serve -> one
# prediction over HTTP. Extra arguments go to `raymlp run`, e.g. --set train.epochs=2.
#   bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
python examples/quickstart/generate_data.py
raymlp run examples/quickstart/pipeline.yaml "$@"
