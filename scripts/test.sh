#!/usr/bin/env bash
# Set up raymlp with its test extra and run the test suite (unit, then integration with a real
# local Ray, MLflow store and HTTP; Debian's Prometheus is installed for the monitoring tests
# where apt can). Extra arguments go to pytest, e.g. -m "not cluster".
# The default run leaves out the tests marked slow or horovod (the CI budget). A run that asks for
# either (`-m horovod`, `-m slow`) first builds Horovod (about 3 minutes on 2 cores, cached in
# ~/.cache/raymlp/wheels); if it cannot be built here, the horovod tests are skipped with a warning.
#   bash scripts/test.sh
#   bash scripts/test.sh -m "horovod or slow"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh test
bash scripts/install_prometheus.sh
if [[ "$*" == *horovod* || "$*" == *slow* ]]; then
    if bash scripts/build_horovod.sh >/dev/null; then
        source scripts/setup.sh test,horovod
    else
        echo "WARNING: Horovod could not be built (see above); the tests marked horovod will be skipped" >&2
    fi
fi
python -m pytest "$@"
