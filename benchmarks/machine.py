"""What a benchmark ran on, in the one form every script in benchmarks/ saves with its results."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "sha_ni")
"""CPU features that change results here: vector width, int8 dot products, hardware SHA-256."""


def describe(*packages: str) -> dict[str, Any]:
    """The CPU, memory, Python, the versions of `packages` and the commit (with uncommitted files)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    git = ["git", "-C", str(REPO)]
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout
    return {
        "platform": platform.platform(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "cpu_flags": sorted(f for f in flags if f in SIMD_FLAGS),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in packages},
        "git_commit": subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "git_dirty_files": [line[3:] for line in dirty.splitlines()],
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
