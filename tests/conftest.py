"""Shared fixtures: one real local Ray per test session, quickstart data and configs at tiny size."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"


def example_generator(example: str) -> ModuleType:
    """An example's generate_data.py, imported under its own name: every example has a module of
    that name, so a plain import would hand one example's generator to the other's tests."""
    spec = importlib.util.spec_from_file_location(f"{example}_generate_data", REPO / "examples" / example / "generate_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_asgi(app) -> tuple[object, str]:
    """`app` served by uvicorn on 127.0.0.1 in a daemon thread: (server, base URL). Real HTTP
    without Ray, for middleware tests; set `server.should_exit` to stop it."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory) -> Path:
    """Compiled int8 packages go to this session's temp dir, not the user's cache: every session
    compiles afresh, and its replicas (Ray workers inherit the variable) share what it compiled."""
    path = tmp_path_factory.mktemp("compiled")
    os.environ["RAYMLP_COMPILE_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session, in its own temp dir so it never meets another cluster.
    4 logical CPUs on a 2-core machine let a 2-worker training run and a Serve replica coexist."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(
        address="local",
        num_cpus=4,
        object_store_memory=300 * 1024**2,
        _temp_dir=temp_dir,
        # Workers import user models from tests/support (`model.name: flaky_model:factory`).
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "tests" / "support")}},
    )
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def quickstart_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quickstart") / "data"
    example_generator("quickstart").generate(out, rows=1500, shards=3, seed=0)
    return out


def tiny_overrides(data: Path, run_dir: Path, port: int) -> list[str]:
    """The quickstart config shrunk to seconds of compute: tiny epochs, two trials."""
    return [
        f"data.path={data}",
        f"run_dir={run_dir}",
        "train.epochs=2",
        "train.cpus_per_worker=1",
        "tune.num_samples=2",
        f"serve.port={port}",
    ]
