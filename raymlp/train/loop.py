"""The per-worker training loop every Ray Train worker runs, whichever backend (see distributed.py).

Each epoch trains on the worker's shard, evaluates on its validation shard, sums the metrics over
all workers and reports them; every `checkpoint_every` epochs rank 0 also writes a checkpoint
(model bundle plus optimizer, scheduler and loop state). A worker group restarted after a failure,
or a run resumed with `raymlp train --resume`, continues after the latest checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray.data
import ray.train
import ray.train.torch
import torch
from torch import nn

from raymlp.artifacts import ModelSpec, load_bundle, load_train_state, save_bundle
from raymlp.config.schema import ModelConfig, TrainConfig
from raymlp.data.features import FeaturePipeline
from raymlp.monitor.metrics import TrainMetrics
from raymlp.train.distributed import Collective, DDPCollective
from raymlp.train.feed import Feed, SplitBlocks, StreamFeed, TensorFeed
from raymlp.train.metrics import MetricSpec
from raymlp.train.models import build_model
from raymlp.train.schedules import build_optimizer, build_scheduler


@dataclass
class LoopState:
    """What a checkpoint needs beyond weights, optimizer and scheduler to continue exactly."""

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    epochs_without_improvement: int = 0
    resumed_after: list[int] = field(default_factory=list)
    """The epoch each restart resumed after (one entry per worker-group restart or --resume)."""

    def improved(self, value: float, mode: str, min_delta: float) -> bool:
        better = self.best is None or (value < self.best - min_delta if mode == "min" else value > self.best + min_delta)
        if better:
            self.best, self.epochs_without_improvement = value, 0
        else:
            self.epochs_without_improvement += 1
        return better


@dataclass(frozen=True)
class RunSettings:
    """Decided by the driver for every worker: what ranks checkpoints, and how data is fed."""

    seed: int
    metric: str
    mode: str
    train_rows: int
    use_gpu: bool
    backend: str
    measure_latency: bool = False
    """Report `latency_ms` each epoch (a multi-objective search minimizes it)."""


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """`config["blocks"]`: the splits as `SplitBlocks` to hold in memory, or None to stream the
    Ray Data shards the trainer was given."""
    model_cfg = ModelConfig.model_validate(config["model"])
    cfg = TrainConfig.model_validate(config["train"])
    features = FeaturePipeline.from_json(config["features"])
    run = RunSettings(**config["run"])
    # One torch thread per reserved CPU: two workers with default threading on two cores run
    # many times slower than with one thread each.
    torch.set_num_threads(max(1, math.ceil(cfg.cpus_per_worker)))
    torch.manual_seed(run.seed)
    collective = _collective(run.backend)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    bf16 = run.use_gpu and cfg.precision in ("auto", "bf16")
    metrics = MetricSpec.of(features)
    spec = ModelSpec(model=model_cfg, input_dim=features.output_dim, output_dim=features.num_outputs)

    model = build_model(model_cfg, spec.input_dim, spec.output_dim)
    state, restored = LoopState(), None
    if checkpoint := ray.train.get_checkpoint():
        with checkpoint.as_directory() as path:
            restored = load_train_state(Path(path))
            model.load_state_dict(load_bundle(Path(path)).module.state_dict())
        state = LoopState(**restored["loop"])
        state.resumed_after.append(state.epoch)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    if restored:
        optimizer.load_state_dict(restored["optimizer"])
    model, optimizer = collective.prepare(model, optimizer, cfg.accumulation_steps)

    def feed(name: str, batch_size: int) -> Feed:
        seed = run.seed * 1000 + rank
        if blocks := config["blocks"]:
            split: SplitBlocks = blocks[name]
            # Only training needs equal shards; every validation row counts.
            x, y = split.read(split.shard(rank, world, equal=name == "train"), metrics.target_dtype, device)
            return TensorFeed(x, y, batch_size=batch_size, seed=seed)
        return StreamFeed(
            ray.train.get_dataset_shard(name), batch_size=batch_size, target_dtype=metrics.target_dtype,
            device=device, seed=seed,
        )  # fmt: skip

    train_feed, valid_feed = feed("train", cfg.batch_size), feed("valid", 4096)
    shard_rows = train_feed.rows() or math.ceil(run.train_rows / world)
    steps_per_epoch = math.ceil(math.ceil(shard_rows / cfg.batch_size) / cfg.accumulation_steps)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    if restored:
        scheduler.load_state_dict(restored["scheduler"])

    progress = TrainMetrics(context.get_experiment_name()) if rank == 0 else None
    for epoch in range(state.epoch + 1, cfg.epochs + 1):
        train_sums, train_seconds = _train_epoch(model, optimizer, scheduler, train_feed, epoch, cfg, collective, metrics, bf16)
        valid_sums = evaluate(model, valid_feed, metrics, device, bf16)
        collective.all_reduce_sum(train_sums)
        row = {
            "epoch": epoch,
            **metrics.summarize(train_sums, "train", detailed=False),
            **metrics.summarize(collective.all_reduce_sum(valid_sums), "valid", detailed=True),
            "lr": scheduler.get_last_lr()[0],
            "train_seconds": train_seconds,
            "train_samples_per_s": train_sums[1].item() / train_seconds,
            "model_params": sum(p.numel() for p in model.parameters()),
        }
        if run.measure_latency:
            row["latency_ms"] = forward_latency_ms(collective.unwrap(model), spec.input_dim, device)
        state.epoch = epoch
        state.history.append(row)
        if progress:
            progress.observe(epoch, row, ["train_loss", "valid_loss", run.metric, "train_samples_per_s"])
        # Every rank sees the same all-reduced metric, so every rank decides the same way.
        state.improved(row[run.metric], run.mode, cfg.early_stopping_min_delta)
        stop = cfg.early_stopping_patience is not None and state.epochs_without_improvement >= cfg.early_stopping_patience
        if epoch % cfg.checkpoint_every and not stop and epoch != cfg.epochs:
            ray.train.report(row)
            continue
        # Every rank must call report; only rank 0 writes the (identical, synced) weights.
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                train_state = {
                    "loop": asdict(state),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                }
                metrics_json = {**row, "history": state.history, "resumed_after": state.resumed_after}
                save_bundle(Path(tmp), spec, collective.unwrap(model), features, metrics_json, train_state)
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(row, checkpoint=checkpoint)
        if stop:
            break


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    feed: Feed,
    epoch: int,
    cfg: TrainConfig,
    collective: Collective,
    metrics: MetricSpec,
    bf16: bool,
) -> tuple[torch.Tensor, float]:
    """One pass over this worker's shard: this worker's summed statistics, and the seconds it took."""
    model.train()
    device = feed.device
    started = time.perf_counter()
    tally = metrics.tally(device)
    for step, (x, y) in enumerate(feed.batches(epoch, shuffle=True), start=1):
        window_end = step % cfg.accumulation_steps == 0
        with contextlib.nullcontext() if window_end else collective.no_sync(model):
            with _autocast(device, bf16):
                outputs = model(x)
            loss = metrics.loss(outputs, y)
            (loss / cfg.accumulation_steps).backward()
        if window_end:
            collective.step(model, optimizer, cfg.clip_grad_norm)
            optimizer.zero_grad()
            scheduler.step()
        tally.add(outputs.detach(), y, loss.detach())
    optimizer.zero_grad()  # an unfinished accumulation window does not carry over
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return tally.sums(), time.perf_counter() - started


@torch.no_grad()
def evaluate(
    model: nn.Module, feed: Feed, metrics: MetricSpec, device: torch.device, bf16: bool = False
) -> torch.Tensor:
    """Summed statistics of `model` over one pass of `feed` (this worker's shard only)."""
    model.eval()
    sums = torch.zeros(metrics.size(), dtype=torch.float64, device=device)
    for x, y in feed.batches(epoch=0, shuffle=False):
        with _autocast(device, bf16):
            outputs = model(x)
        sums += metrics.sums(outputs, y)
    return sums


def score(model: nn.Module, ds: ray.data.Dataset, features: FeaturePipeline, prefix: str) -> dict[str, float]:
    """Every metric of `model` over a whole model-ready dataset, in the calling process."""
    metrics, cpu = MetricSpec.of(features), torch.device("cpu")
    feed = StreamFeed(ds.iterator(), batch_size=4096, target_dtype=metrics.target_dtype, device=cpu, seed=0)
    return metrics.summarize(evaluate(model, feed, metrics, cpu), prefix, detailed=True)


@torch.no_grad()
def forward_latency_ms(model: nn.Module, input_dim: int, device: torch.device, rows: int = 64) -> float:
    """Median time of one forward pass over `rows` random inputs, in eval mode."""
    was_training, batch = model.training, torch.randn(rows, input_dim, device=device)
    model.eval()
    times = []
    for _ in range(11):
        start = time.perf_counter()
        model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return sorted(times[1:])[5]  # the first pass warms up


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast, or no context at all: a disabled `torch.autocast` still costs ~18 us a step."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _collective(backend: str) -> Collective:
    if backend == "horovod":
        from raymlp.train.horovod import HorovodCollective

        return HorovodCollective()
    return DDPCollective()
