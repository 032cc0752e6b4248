#!/usr/bin/env bash
# Build a horovod 0.28.1 wheel (PyTorch + Gloo, CPU, no MPI) against the active venv's torch and cache it
# outside the repo, for `pip install --find-links <dir> horovod==0.28.1`. Why: 0.28.1, the last release,
# ships only an sdist whose CMake files pin C++14, and torch 2.x headers need C++17; we patch both
# CMakeLists (top level and horovod/torch; the torch one alone fails to link on a duplicate gloo symbol).
# The wheel links against torch's ABI, so it is cached per torch version and a torch bump rebuilds it.
#   bash scripts/build_horovod.sh     # prints the --find-links directory on stdout; progress on stderr
set -euo pipefail
HOROVOD_VERSION=0.28.1
PYTHON="${PYTHON:-python}"

torch_version="$("$PYTHON" -c 'import torch; print(torch.__version__)')" ||
    { echo "build_horovod.sh: no torch for $PYTHON; activate the project's venv (source scripts/setup.sh) first" >&2; exit 1; }
cache="${RAYMLP_WHEEL_CACHE:-$HOME/.cache/raymlp/wheels}/torch-${torch_version}"

if compgen -G "$cache/horovod-${HOROVOD_VERSION}-*.whl" >/dev/null; then
    echo "horovod ${HOROVOD_VERSION} wheel for torch ${torch_version} already cached in $cache" >&2
    echo "$cache"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS

"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    -d "$work" "horovod==${HOROVOD_VERSION}" >&2
tar -xzf "$work/horovod-${HOROVOD_VERSION}.tar.gz" -C "$work"
src="$work/horovod-${HOROVOD_VERSION}"

"$PYTHON" - "$src" <<'EOF'
import pathlib, re, sys
for rel in ("CMakeLists.txt", "horovod/torch/CMakeLists.txt"):
    path = pathlib.Path(sys.argv[1], rel)
    text, n = re.subn(r"set\(CMAKE_CXX_STANDARD 14\)", "set(CMAKE_CXX_STANDARD 17)", path.read_text())
    if n != 1:
        sys.exit(f"{rel}: expected one 'set(CMAKE_CXX_STANDARD 14)', found {n}; the sdist changed")
    path.write_text(text)
EOF

echo "building horovod ${HOROVOD_VERSION} against torch ${torch_version} (about 3 minutes on 2 cores)..." >&2
mkdir -p "$work/dist"
# --no-build-isolation: compile against the venv's torch, not a fresh one from PyPI.
HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
MAKEFLAGS="${MAKEFLAGS:--j$(nproc)}" \
    "$PYTHON" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
    -w "$work/dist" "$src" >&2

mkdir -p "$cache"
mv "$work"/dist/horovod-"${HOROVOD_VERSION}"-*.whl "$cache/"
echo "built $(ls "$cache"/horovod-*.whl) in $(( (SECONDS - start) / 60 ))m$(( (SECONDS - start) % 60 ))s" >&2
echo "$cache"
