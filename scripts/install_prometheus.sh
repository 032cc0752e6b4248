#!/usr/bin/env bash
# Install Prometheus and promtool (Debian's `prometheus` package) for the monitoring tests, when
# they are missing and apt can install as root (directly or through passwordless sudo). Prints a
# warning and exits 0 otherwise: the tests that need them are then skipped, saying why.
set -uo pipefail
command -v prometheus >/dev/null && command -v promtool >/dev/null && exit 0
if ! command -v apt-get >/dev/null; then
    echo "WARNING: no apt-get here: install Prometheus yourself for the tests marked prometheus" >&2
    exit 0
fi
as_root=()
if [[ $EUID -ne 0 ]]; then
    if sudo -n true 2>/dev/null; then as_root=(sudo -n); else
        echo "WARNING: installing Prometheus needs root: \`sudo apt-get install prometheus\` for the tests marked prometheus" >&2
        exit 0
    fi
fi
# Not the service: the tests start their own Prometheus on 127.0.0.1 (and containers have no systemd).
install() { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
install || { "${as_root[@]}" apt-get update -qq >/dev/null && install; } || echo "WARNING: apt-get could not install prometheus" >&2
exit 0
