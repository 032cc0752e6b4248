"""Attach to a Ray cluster when there is one, or start an embedded local Ray sized to the machine."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import socket
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass

import ray

from raymlp.config.schema import RuntimeConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayRuntime:
    """How this process reached Ray. `embedded`: we started a local Ray that dies with this
    process, Serve apps included. `started_here`: we connected, so we disconnect."""

    embedded: bool
    started_here: bool


def init_ray(cfg: RuntimeConfig) -> RayRuntime:
    """Connect to Ray once per process. An explicit `runtime.address` wins, then `RAY_ADDRESS`
    (set for the entrypoint of `ray job submit`), else a new local Ray ("local" never attaches
    to another cluster on the machine by accident)."""
    if ray.is_initialized():
        return RayRuntime(embedded=False, started_here=False)
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("attaching to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        return RayRuntime(embedded=False, started_here=True)
    num_cpus = cfg.num_cpus or os.cpu_count() or 1
    log.info("starting an embedded Ray with %d CPUs, Serve ingress %s", num_cpus, cfg.serve_ingress)
    # Ray's processes inherit this process's environment, and Serve reads these when it loads.
    dashboard_port = free_ports(1)[0]
    os.environ.update(serve_ingress_env(cfg.serve_ingress) | state_api_env(dashboard_port))
    for name, value in EMBEDDED_TRAIN_ENV.items():
        os.environ.setdefault(name, value)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=cfg.object_store_memory_mb * 1024**2,
        include_dashboard=True,
        dashboard_port=dashboard_port,
    )
    return RayRuntime(embedded=True, started_here=True)


def state_api_env(dashboard_port: int) -> dict[str, str]:
    """Point Ray's state API at this Ray's own dashboard. Ray Train's placement-group cleaner asks
    it whether a stopped Tune trial's controller died before freeing the trial's CPUs. Left to
    find the cluster itself, it fails when a second Ray runs on the machine ("Found multiple
    active Ray instances"): the CPUs stay held and the next trials, or any Ray Data job, wait
    forever. Without a dashboard there is no state API, and the same happens."""
    return {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard_port}"}


EMBEDDED_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
"""Ray Train settings for an embedded Ray, read where a run is fitted (Train passes them on). Its
one node is never drained, so a preemption watcher, one more actor process per training run and
Tune trial (2-3 s of CPU to start), would watch for nothing."""


def shutdown_ray(rt: RayRuntime) -> None:
    """Disconnect only what `init_ray` opened; a cluster we attached to keeps running."""
    if rt.started_here:
        ray.shutdown()


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))


SERVE_HAPROXY = "RAY_SERVE_ENABLE_HA_PROXY"


def serve_ingress_env(ingress: str) -> dict[str, str]:
    """Environment for an embedded Ray's Serve ingress (`runtime.serve_ingress`). HAProxy's files
    and ports default to fixed machine-wide ones (/tmp/haproxy-serve, 8404, 9101, 8500), so two
    Rays on one machine would share them: each embedded Ray gets its own. Set every time, so a
    child process never inherits its parent's. A replica leaving drains for 5 s, not Serve's 30:
    that wait lets HAProxy on other nodes drop it first, and here HAProxy is local, updated in
    under a second; a rollout or shutdown waits out the drain."""
    if ingress != "haproxy" or not _haproxy_installed():
        return {SERVE_HAPROXY: "0"}
    # Short: HAProxy's socket paths, this folder + a 56-character node id + a file name, must fit 97.
    state = tempfile.mkdtemp(prefix="hap", dir="/tmp")
    atexit.register(shutil.rmtree, state, ignore_errors=True)
    stats, metrics, fallback_http, fallback_grpc = free_ports(4)
    env = {
        SERVE_HAPROXY: "1",
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{state}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{state}/admin.sock",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{state}/metrics.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": state,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{state}/server-state",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(fallback_http),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(fallback_grpc),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5",
        # Predictions are idempotent: a request whose replica died before answering is replayed
        # on another. Leastconn keeps choosing the dead replica (its connections fail at once)
        # until 3 errors mark it down, so one request may need several tries.
        "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
        "RAY_SERVE_HAPROXY_RETRIES": "6",
    }
    # HAProxy can replay only a request it held whole: raymlp-haproxy has it read the body first
    # (serve/haproxy.py). It is installed beside this Python, on PATH only in an activated venv.
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    if buffering := shutil.which("raymlp-haproxy", path=search):
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = buffering
    else:
        log.warning("raymlp-haproxy is not installed (reinstall raymlp): a request in flight on a replica that dies may be lost")
    return env


def _haproxy_installed() -> bool:
    """Whether Serve finds an HAProxy binary: `ray[serve]` bundles one on Linux only."""
    from ray.serve._private.haproxy import get_haproxy_binary  # Serve's own lookup; no public one

    try:
        get_haproxy_binary()
    except FileNotFoundError as e:
        log.warning("runtime.serve_ingress: haproxy, but %s Serving through Serve's Python proxy.", e)
        return False
    return True


def free_ports(n: int) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 now (held open together, so none repeats)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
