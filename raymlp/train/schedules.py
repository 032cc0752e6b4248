"""Optimizer and learning-rate schedule from `train:`; the schedule steps once per optimizer step.

Schedules are multipliers of `train.lr` as a function of the step (a `LambdaLR`), clamped at the
planned total, so a run resumed with more epochs, or a last epoch with an extra step, never steps
past the end of a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from raymlp.config.schema import TrainConfig

ONE_CYCLE_WARMUP = 0.3
ONE_CYCLE_START = 1 / 25  # of the peak, as torch's OneCycleLR
ONE_CYCLE_END = 1e-4


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, steps_per_epoch))


def lr_multiplier(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """step -> factor of `train.lr`."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = 0 if cfg.schedule == "onecycle" else min(total, round(cfg.warmup_epochs * steps_per_epoch))

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.schedule == "linear":
            return 1.0 - progress
        if cfg.schedule == "onecycle":
            return _one_cycle(min(1.0, step / total))
        return 1.0

    return multiplier


def _one_cycle(t: float) -> float:
    """Cosine up from START to 1 over the first 30%, then cosine down to END."""
    if t < ONE_CYCLE_WARMUP:
        low, high, phase = ONE_CYCLE_START, 1.0, t / ONE_CYCLE_WARMUP
    else:
        low, high, phase = 1.0, ONE_CYCLE_END, (t - ONE_CYCLE_WARMUP) / (1 - ONE_CYCLE_WARMUP)
    return high + (low - high) * 0.5 * (1 + math.cos(math.pi * phase))
