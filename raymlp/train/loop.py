"""The per-worker training loop run by every Ray Train worker (DDP through `prepare_model`)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from raymlp.artifacts import ModelSpec, save_bundle
from raymlp.config.schema import ModelConfig, TrainConfig
from raymlp.data.features import FeaturePipeline
from raymlp.train.models import build_model

BATCH_DTYPES = {"x": torch.float32, "y": torch.int64}
EPOCH_METRICS = ("epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy")
"""What every epoch reports (see `summarize`); tune, tracking and the registry read these keys."""


def train_loop_per_worker(config: dict[str, Any]) -> None:
    model_cfg = ModelConfig.model_validate(config["model"])
    train_cfg = TrainConfig.model_validate(config["train"])
    features = FeaturePipeline.from_json(config["features"])
    # One torch thread per reserved CPU: two workers with default threading on two cores run
    # many times slower than with one thread each.
    torch.set_num_threads(max(1, math.ceil(train_cfg.cpus_per_worker)))
    torch.manual_seed(config["seed"])

    spec = ModelSpec(model=model_cfg, input_dim=features.output_dim, num_classes=len(features.classes))
    model = ray.train.torch.prepare_model(build_model(model_cfg, spec.input_dim, spec.num_classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    device = ray.train.torch.get_device()
    train_shard = ray.train.get_dataset_shard("train")
    valid_shard = ray.train.get_dataset_shard("valid")
    rank = ray.train.get_context().get_world_rank()

    history: list[dict[str, float]] = []
    for epoch in range(1, train_cfg.epochs + 1):
        model.train()
        train_sums = torch.zeros(3, dtype=torch.float64, device=device)
        for batch in train_shard.iter_torch_batches(
            batch_size=train_cfg.batch_size, dtypes=BATCH_DTYPES, device=device
        ):
            logits = model(batch["x"])
            loss = F.cross_entropy(logits, batch["y"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            train_sums += _batch_sums(logits.detach(), batch["y"])
        valid_batches = valid_shard.iter_torch_batches(batch_size=4096, dtypes=BATCH_DTYPES, device=device)
        valid_sums = evaluate(model, valid_batches, device)
        metrics = {"epoch": epoch, **summarize(train_sums, "train"), **summarize(valid_sums, "valid")}
        history.append(metrics)
        # Every rank must call report; only rank 0 writes the (identical, DDP-synced) weights.
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
                save_bundle(Path(tmp), spec, module, features, {**metrics, "history": history})
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Summed (loss, correct, rows) over `batches`, all-reduced across workers when distributed,
    so every rank sees the metric of the whole validation set rather than its own shard."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    for batch in batches:
        sums += _batch_sums(model(batch["x"]), batch["y"])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    return sums


def score(model: nn.Module, ds: ray.data.Dataset, prefix: str) -> dict[str, float]:
    """Loss and accuracy of `model` over a whole model-ready dataset, in the calling process."""
    cpu = torch.device("cpu")
    return summarize(evaluate(model, ds.iter_torch_batches(batch_size=4096, dtypes=BATCH_DTYPES), cpu), prefix)


def summarize(sums: torch.Tensor, prefix: str) -> dict[str, float]:
    loss, correct, rows = sums.tolist()
    rows = max(rows, 1.0)
    return {f"{prefix}_loss": loss / rows, f"{prefix}_accuracy": correct / rows}


def _batch_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    loss = F.cross_entropy(logits, labels, reduction="sum")
    correct = (logits.argmax(dim=1) == labels).sum()
    return torch.stack([loss.double(), correct.double(), torch.tensor(len(labels), dtype=torch.float64, device=labels.device)])
