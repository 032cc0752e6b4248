"""Build and fit one Ray Train V2 run of the training loop; return its best checkpoint.

`train.backend` picks the trainer: `TorchTrainer` (DDP) or a `DataParallelTrainer` with raymlp's
Horovod backend. Both get the same loop, scaling, checkpoint policy and `FailureConfig`, so a
failed worker group restarts from the latest checkpoint either way. A run is named; fitting a
run whose name already exists in `storage_path` resumes it (Ray Train V2 restores its checkpoints).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import ray
import ray.data
import ray.train
from ray.train.torch import TorchTrainer
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from raymlp.config.schema import ModelConfig, TrainConfig
from raymlp.data.features import FeaturePipeline
from raymlp.train.feed import SplitBlocks
from raymlp.train.loop import RunSettings, train_loop_per_worker

log = logging.getLogger(__name__)

POLL_INTERVAL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
"""How often Ray Train's controller polls its workers, in seconds, unless the variable is
set. A worker's report waits until the controller has taken the one before it, so Ray's default
of 2 s held every epoch shorter than that for up to 2 s, and each run's end for 4 s (a 3-report run
went from 21-25 s to 15-18 s on a 2-core machine). Ray passes the variable on to the controller and
workers, and Tune to its trials."""


@dataclass
class TrainOutcome:
    """The best checkpoint of a training run (a model bundle folder) and its metrics."""

    checkpoint: ray.train.Checkpoint
    metrics: dict[str, Any]
    params: dict[str, Any]
    """Config overrides that produced it (empty for the configured run, the trial's for tune)."""


def fit(
    model: ModelConfig,
    train: TrainConfig,
    datasets: dict[str, ray.data.Dataset],
    features: FeaturePipeline,
    *,
    seed: int,
    metric: str,
    mode: Literal["min", "max"],
    name: str,
    storage_path: str,
    callbacks: Sequence[ray.train.UserCallback] = (),
    measure_latency: bool = False,
) -> TrainOutcome:
    os.environ.setdefault(*POLL_INTERVAL)
    use_gpu = resolve_use_gpu(train.use_gpu)
    train_rows = datasets["train"].count()
    run = RunSettings(
        seed=seed,
        metric=metric,
        mode=mode,
        train_rows=train_rows,
        use_gpu=use_gpu,
        backend=train.backend,
        measure_latency=measure_latency,
    )
    blocks = None
    if _cache(train, train_rows, features.output_dim):
        blocks = {name: SplitBlocks.of(ds) for name, ds in datasets.items()}
        datasets = {}  # the workers read the blocks themselves: no streaming split to set up
    loop_config = {
        "model": model.model_dump(mode="json"),
        "train": train.model_dump(mode="json"),
        "features": features.to_json(),
        "run": asdict(run),
        "blocks": blocks,
    }
    scaling = ray.train.ScalingConfig(
        num_workers=train.num_workers,
        use_gpu=use_gpu,
        resources_per_worker={"CPU": train.cpus_per_worker, **({"GPU": train.gpus_per_worker} if use_gpu else {})},
    )
    run_config = ray.train.RunConfig(
        name=name,
        storage_path=storage_path,
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=train.keep_checkpoints,
            checkpoint_score_attribute=metric,
            checkpoint_score_order=mode,
        ),
        failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
        callbacks=list(callbacks),
    )
    common = {"train_loop_config": loop_config, "scaling_config": scaling, "run_config": run_config, "datasets": datasets}
    if train.backend == "horovod":
        from raymlp.train.horovod import HorovodBackendConfig, require_horovod

        require_horovod()
        trainer = DataParallelTrainer(train_loop_per_worker, backend_config=HorovodBackendConfig(), **common)
    else:
        trainer = TorchTrainer(train_loop_per_worker, **common)
    result = trainer.fit()
    best = result.get_best_checkpoint(metric, mode)
    if best is None:
        raise RuntimeError(f"training run {name} reported no checkpoint")
    metrics = next(m for c, m in result.best_checkpoints if c.path == best.path)
    return TrainOutcome(checkpoint=best, metrics=metrics, params={})


def resolve_use_gpu(setting: bool | str) -> bool:
    """`auto`: train on GPUs when the cluster has any."""
    if setting == "auto":
        return ray.cluster_resources().get("GPU", 0) > 0
    return bool(setting)


def _cache(train: TrainConfig, rows: int, input_dim: int) -> bool:
    """Whether each worker holds its shard in memory: always, never, or when the largest shard
    (with the fewest workers an elastic run may have) fits in `cache_max_mb`."""
    if train.cache_data != "auto":
        return train.cache_data == "always"
    shard_mb = rows * (input_dim + 1) * 4 / train.min_workers / 2**20
    log.info("train: each worker's shard is ~%.0f MiB; cache_max_mb is %d", shard_mb, train.cache_max_mb)
    return shard_mb <= train.cache_max_mb
