"""Build and fit a Ray Train V2 `TorchTrainer` for one configuration; return its best checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import ray.data
import ray.train
from ray.train.torch import TorchTrainer

from raymlp.config.schema import ModelConfig, TrainConfig
from raymlp.data.features import FeaturePipeline
from raymlp.train.loop import train_loop_per_worker


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
) -> TrainOutcome:
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "model": model.model_dump(mode="json"),
            "train": train.model_dump(mode="json"),
            "features": features.to_json(),
            "seed": seed,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker, **({"GPU": 1} if train.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=train.keep_checkpoints,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            callbacks=list(callbacks),
        ),
        datasets=datasets,
    )
    result = trainer.fit()
    best = result.get_best_checkpoint(metric, mode)
    if best is None:
        raise RuntimeError(f"training run {name} reported no checkpoint")
    metrics = next(m for c, m in result.best_checkpoints if c.path == best.path)
    return TrainOutcome(checkpoint=best, metrics=metrics, params={})
