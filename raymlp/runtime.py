"""Attach to a Ray cluster when there is one, or start an embedded local Ray sized to the machine."""

from __future__ import annotations

import logging
import os
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
    log.info("starting an embedded Ray with %d CPUs", num_cpus)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=cfg.object_store_memory_mb * 1024**2,
        # Keep the dashboard: Ray Train's placement-group cleaner asks the state API (served by
        # the dashboard) whether a trial's controller died; without it a finished Tune trial's
        # worker group can keep its CPUs and the next trial waits forever.
        include_dashboard=True,
    )
    return RayRuntime(embedded=True, started_here=True)


def shutdown_ray(rt: RayRuntime) -> None:
    """Disconnect only what `init_ray` opened; a cluster we attached to keeps running."""
    if rt.started_here:
        ray.shutdown()


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))

