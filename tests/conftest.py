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
    4 logical CPUs on a 2-core machine let a 2-worker training run and a Serve replica coexist.
    Serve's ingress and the state API's address are set as in an embedded Ray; only Ray's processes
    see them, so a cluster a test starts with `ray start` gets Ray's own defaults. Ray Train gets an
    embedded Ray's settings too."""
    import ray

    from raymlp.runtime import EMBEDDED_TRAIN_ENV, free_ports, serve_ingress_env, state_api_env

    for name, value in EMBEDDED_TRAIN_ENV.items():
        os.environ.setdefault(name, value)

    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard_port = free_ports(1)[0]
    ray_env = serve_ingress_env("haproxy") | state_api_env(dashboard_port)
    before = {k: os.environ.get(k) for k in ray_env}
    os.environ.update(ray_env)
    ray.init(
        address="local",
        num_cpus=4,
        object_store_memory=300 * 1024**2,
        include_dashboard=True,
        dashboard_port=dashboard_port,
        _temp_dir=temp_dir,
        # Workers import user models from tests/support (`model.name: flaky_model:factory`).
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "tests" / "support")}},
    )
    for k, v in before.items():
        if v is None:
            del os.environ[k]
        else:
            os.environ[k] = v
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


WEAK = ["train.lr=0.000001", "train.epochs=1"]  # barely trained: ranks rows little better than chance
STRONG = ["train.lr=0.01", "train.epochs=4"]


@pytest.fixture(scope="session")
def registry_runs(ray_session, quickstart_data, tmp_path_factory) -> list:
    """[(config, result)] of three quickstart runs (data, train, register; one worker) into one
    registry: weak, strong, weak again, so version 1 was the first champion, 2 beat it and 3 did
    not (challenger). Training is most of the suite's time: modules that only need registered
    versions share these, and those that move aliases take a `copy_registry`."""
    from raymlp.config import load_config
    from raymlp.pipeline import run_pipeline

    run_dir = tmp_path_factory.mktemp("registry")

    def run(overrides: list[str]):
        base = tiny_overrides(quickstart_data, run_dir, free_port())
        cfg = load_config(QUICKSTART / "pipeline.yaml", [*base, "train.num_workers=1", "tune.metric=valid_auc", *overrides])
        return cfg, run_pipeline(cfg, ["data", "train", "register"])

    return [run(WEAK), run(STRONG), run(WEAK)]


def copy_registry(runs: list, cfg, champion: str):
    """The registry of `registry_runs` as `cfg`'s own embedded store, with `champion` crowned: the
    SQLite file is copied into `cfg.run_dir` (its artifacts stay where they are, read-only)."""
    import mlflow

    from raymlp.lifecycle.registry import crown
    from raymlp.lifecycle.tracking import configure_tracking

    source_cfg, _ = runs[0]
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(source_cfg.run_dir) / "mlflow.db", Path(cfg.run_dir) / "mlflow.db")
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    crown(mlflow.MlflowClient(target.tracking_uri), target.model_name, champion, "test: copied registry")
    return target


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
