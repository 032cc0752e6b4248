#!/usr/bin/env bash
# Set up raymlp with its test extra and run the test suite (unit, then integration with a real
# local Ray, MLflow store and HTTP). Horovod is built once (about 3 minutes on 2 cores, cached in
# ~/.cache/raymlp/wheels) so its tests run too; if it cannot be built here, they are skipped with
# a warning rather than failing the suite. Extra arguments go to pytest, e.g. -m "not cluster".
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh test
if bash scripts/build_horovod.sh >/dev/null; then
    source scripts/setup.sh test,horovod
else
    echo "WARNING: Horovod could not be built (see above); the tests marked horovod will be skipped" >&2
fi
python -m pytest "$@"
