"""Horovod as a data-parallel backend on Ray Train V2.

Ray's own `HorovodTrainer` raises under Train V2, and its `HorovodConfig` backend drives the V1
worker group. Rather than fall back to `horovod.ray.RayExecutor` (its own actors, outside Train),
`HorovodBackendConfig` plugs into V2's `DataParallelTrainer` as a `BackendConfig`, exactly like
`TorchConfig` does for DDP. So Horovod runs get the same checkpointing, `FailureConfig` restarts and
`ray.train.report` metrics as DDP ones.

The backend is Horovod's Gloo launch (`horovodrun --gloo`) done by hand: the controller starts a
`RendezvousServer` (a small HTTP key-value store), and every worker gets the HOROVOD_* environment
that describes its slot (ranks taken from Train's own context, so they agree with
`ray.train.get_context()`) and then runs `hvd.init()`. V2 calls `on_start` for every new worker
group, so a restarted group always meets a fresh server.

horovod is imported lazily: importing this module never needs it, choosing the backend does.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections import defaultdict
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

import ray
import ray.train
import torch
from ray.train.backend import Backend, BackendConfig
from torch import nn

if TYPE_CHECKING:
    from horovod.runner.common.util.hosts import SlotInfo
    from horovod.runner.http.http_server import RendezvousServer
    from ray.train._internal.base_worker_group import BaseWorkerGroup

_MISSING = (
    "train.backend=horovod needs Horovod built against this torch: run `bash scripts/build_horovod.sh`, "
    "then `pip install --find-links <the directory it prints> -e .[horovod]` "
    "(or `source scripts/setup.sh test,horovod`, which does both)."
)


def require_horovod() -> ModuleType:
    """`horovod.torch`, or an ImportError that says how to get it (PyPI has no usable build)."""
    try:
        import horovod.torch as hvd
    except ImportError as e:  # not installed, or installed without its torch extension
        raise ImportError(f"{_MISSING} ({e})") from e
    return hvd


@dataclass
class HorovodBackendConfig(BackendConfig):
    """Horovod over Gloo (CPU collectives; the wheel scripts/build_horovod.sh builds has no NCCL).

    timeout_s: Gloo's timeout for the rendezvous and for each collective (HOROVOD_GLOO_TIMEOUT_SECONDS;
        Horovod's default of 30 s is short for workers that start training at different times).
    nic: network interface for Gloo's traffic on every node; by default each worker uses the interface
        that holds its Ray node IP, which the other nodes can reach (Gloo would otherwise resolve the
        hostname, often to 127.0.0.1).
    """

    timeout_s: int = 120
    nic: str | None = None

    def __post_init__(self) -> None:
        require_horovod()  # fail on the driver, before any worker starts

    @property
    def backend_cls(self) -> type[Backend]:
        return _HorovodBackend


@dataclass(frozen=True)
class _WorkerInfo:
    world_rank: int
    world_size: int
    local_rank: int
    local_size: int
    node_rank: int
    node_ip: str
    nic: str


def _describe_worker(nic: str | None) -> _WorkerInfo:
    """Runs on a worker: its place in the group, as Train assigned it, and its interface for Gloo."""
    context = ray.train.get_context()
    node_ip = ray.util.get_node_ip_address()
    return _WorkerInfo(
        world_rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        local_rank=context.get_local_rank(),
        local_size=context.get_local_world_size(),
        node_rank=context.get_node_rank(),
        node_ip=node_ip,
        nic=nic or _nic_holding(node_ip),
    )


def _nic_holding(ip: str) -> str:
    import psutil  # from the extra (or the copy Ray vendors); not a base dependency

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family in (socket.AF_INET, socket.AF_INET6) and a.address == ip for a in addresses):
            return name
    raise RuntimeError(f"no network interface holds this node's Ray IP {ip}; set HorovodBackendConfig(nic=...)")


def _slots(workers: list[_WorkerInfo]) -> list[SlotInfo]:
    """Horovod's slot per worker. Hosts are Ray node IPs, as Train groups local ranks by node IP; the
    cross ranks of a local rank count the nodes that have a worker at that local rank."""
    from horovod.runner.common.util.hosts import SlotInfo

    nodes_at_local_rank: dict[int, list[int]] = defaultdict(list)
    for w in sorted(workers, key=lambda w: w.node_rank):
        nodes_at_local_rank[w.local_rank].append(w.node_rank)
    return [
        SlotInfo(
            hostname=w.node_ip,
            rank=w.world_rank,
            local_rank=w.local_rank,
            cross_rank=nodes_at_local_rank[w.local_rank].index(w.node_rank),
            size=w.world_size,
            local_size=w.local_size,
            cross_size=len(nodes_at_local_rank[w.local_rank]),
        )
        for w in workers
    ]


def _init_horovod(env: dict[str, str]) -> None:
    """Runs on a worker: Horovod reads its rendezvous and ranks from the environment at init."""
    os.environ.update(env)
    require_horovod().init()


class _HorovodBackend(Backend):
    # Horovod picks its GPU by local rank, so each worker must see all of its node's GPUs.
    share_cuda_visible_devices: bool = True

    def __init__(self) -> None:
        self._server: RendezvousServer | None = None

    def on_start(self, worker_group: BaseWorkerGroup, backend_config: HorovodBackendConfig) -> None:
        from horovod.runner.gloo_run import create_slot_env_vars
        from horovod.runner.http.http_server import RendezvousServer

        self._stop_server()  # left over if the previous group was aborted rather than shut down
        workers = worker_group.execute(_describe_worker, backend_config.nic)
        slots = _slots(workers)
        server = RendezvousServer()
        port = server.start()
        server.init(slots)  # scope sizes, so the server can clear each scope once its ranks are done
        self._server = server

        common = {
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": ray.util.get_node_ip_address(),  # the server runs here, in the controller
            "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
            "HOROVOD_CONTROLLER": "gloo",
            "HOROVOD_CPU_OPERATIONS": "gloo",
            "HOROVOD_GLOO_TIMEOUT_SECONDS": str(backend_config.timeout_s),
        }
        # Every worker has to be in init() at once: each blocks until the whole group has met.
        ray.get(
            [
                worker_group.execute_single_async(
                    rank, _init_horovod, {**common, **create_slot_env_vars(slot), "HOROVOD_GLOO_IFACE": worker.nic}
                )
                for rank, (worker, slot) in enumerate(zip(workers, slots, strict=True))
            ]
        )

    def on_shutdown(self, worker_group: BaseWorkerGroup, backend_config: HorovodBackendConfig) -> None:
        # Workers are torn down with their group (possibly already dead): only the server is ours.
        self._stop_server()

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


class HorovodCollective:
    """`Collective` (see `raymlp.train.distributed`) for Horovod, inside a `HorovodBackendConfig` run."""

    def prepare(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, accumulation_steps: int
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        hvd = require_horovod()
        hvd.init()  # no-op when the backend already did it
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        distributed = hvd.DistributedOptimizer(
            optimizer, named_parameters=model.named_parameters(), backward_passes_per_step=accumulation_steps
        )
        # DistributedOptimizer builds a new optimizer from the param groups, dropping any restored state.
        # A fresh optimizer has none, and is not broadcast: Horovod would first create the state with a
        # zero-gradient step, which still moves the weights under weight decay. A restored one is.
        if optimizer.state:
            distributed.load_state_dict(optimizer.state_dict())
            hvd.broadcast_optimizer_state(distributed, root_rank=0)
        return model, distributed

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        # backward_passes_per_step already holds the all-reduce back until the window's last pass.
        return contextlib.nullcontext()

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, clip_norm: float | None) -> None:
        optimizer.synchronize()  # average the gradients now, so clipping sees the global ones
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        with optimizer.skip_synchronize():
            optimizer.step()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        hvd = require_horovod()
        return hvd.allreduce_(tensor, op=hvd.Sum)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model  # Horovod hooks the parameters; the module itself is not wrapped
