"""Horovod on Train V2 through `HorovodBackendConfig`: the Gloo rendezvous, its re-creation after a
worker dies, and `HorovodCollective` keeping replicas identical."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("horovod.torch", reason="needs the Horovod extra: source scripts/setup.sh test,horovod")

import ray.cloudpickle  # noqa: E402
import ray.train  # noqa: E402
import torch  # noqa: E402
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer  # noqa: E402

from raymlp.train.horovod import HorovodBackendConfig, HorovodCollective  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.horovod]
# The train functions below travel by value: workers cannot import this test module by name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run(train_fn, tmp_path: Path, config: dict | None = None, max_failures: int = 0) -> dict:
    trainer = DataParallelTrainer(
        train_fn,
        train_loop_config=config,
        backend_config=HorovodBackendConfig(timeout_s=30),
        # 1 of the session's 4 logical CPUs, so a run never waits on another test's leftovers.
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(
            storage_path=str(tmp_path / "runs"),
            name="hvd",
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )
    return trainer.fit().metrics


def report(metrics: dict) -> None:
    """Train V2 keeps only metrics that come with a checkpoint (rank 0's) in `Result.metrics`."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = ray.train.Checkpoint.from_directory(tmp) if ray.train.get_context().get_world_rank() == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint)


def allreduce_ranks(config: dict | None = None) -> None:
    import horovod.torch as hvd

    hvd.init()
    total = hvd.allreduce(torch.tensor([hvd.rank() + 1.0]), op=hvd.Sum)
    ctx = ray.train.get_context()
    assert (hvd.rank(), hvd.local_rank()) == (ctx.get_world_rank(), ctx.get_local_rank())
    report({"sum": total.item(), "size": hvd.size(), "cross_size": hvd.cross_size(), **(config or {})})


def crash_once_then_allreduce(config: dict) -> None:
    import horovod.torch as hvd

    marker = Path(config["marker"])
    restarted = marker.exists()
    hvd.allreduce(torch.zeros(1))  # the first group is up and talking
    if hvd.rank() == 1 and not restarted:
        marker.touch()
        # Die mid-training, not in the instant the group launches: a worker lost before the
        # controller hears back from launching the train function counts as a controller error,
        # which FailureConfig does not retry.
        time.sleep(1)
        os._exit(1)
    allreduce_ranks({"restarted": restarted})  # rank 0's fails in the first group: its peer is gone


@pytest.mark.slow  # the restart test below asserts the same sum and size, after a crash (CI budget)
def test_allreduce_over_two_workers(ray_session, tmp_path):
    metrics = run(allreduce_ranks, tmp_path)
    assert (metrics["sum"], metrics["size"], metrics["cross_size"]) == (3.0, 2, 1)


def test_a_restarted_worker_group_meets_at_a_fresh_rendezvous(ray_session, tmp_path):
    marker = tmp_path / "crashed"
    metrics = run(crash_once_then_allreduce, tmp_path, {"marker": str(marker)}, max_failures=1)
    assert (metrics["sum"], metrics["size"], metrics["restarted"]) == (3.0, 2, True)


def train_two_steps(config: dict | None = None) -> None:
    """Ranks start from different weights, see different data and clip: the collective must leave
    identical replicas, and carry a restored optimizer state through Horovod's optimizer wrapper."""
    import horovod.torch as hvd

    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(rank)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.1)
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()  # stands in for a restored state: every rank then gets rank 0's
    optimizer.zero_grad()
    collective = HorovodCollective()
    model, optimizer = collective.prepare(model, optimizer, accumulation_steps=2)
    restored_step = optimizer.state[model.weight]["step"].item()
    for _ in range(2):
        for _ in range(2):  # an accumulation window of two micro-batches
            model(torch.randn(8, 4) * (rank + 1)).pow(2).mean().backward()
        collective.step(model, optimizer, clip_norm=0.5)
        optimizer.zero_grad()
    flat = torch.cat([p.detach().flatten() for p in collective.unwrap(model).parameters()])
    spread = hvd.allreduce(flat, op=hvd.Max) - hvd.allreduce(flat, op=hvd.Min)
    rows = collective.all_reduce_sum(torch.tensor([8.0 * 4]))
    report({
        "spread": spread.abs().max().item(),
        "rows": rows.item(),
        "restored_step": restored_step,
        "step": optimizer.state[model.weight]["step"].item(),
    })


def test_collective_keeps_replicas_identical(ray_session, tmp_path):
    metrics = run(train_two_steps, tmp_path)
    assert metrics["spread"] == 0.0
    assert metrics["rows"] == 64.0
    assert (metrics["restored_step"], metrics["step"]) == (1.0, 3.0)
