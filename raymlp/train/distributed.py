"""What the training loop needs from a data-parallel backend, and its DDP implementation.

The loop is written once against `Collective`; `train.backend` picks DDP (torch.distributed, set
up by `TorchTrainer`) or Horovod (see `raymlp.train.horovod`). Everything backend-specific (model
and optimizer wrapping, gradient sync around accumulation and clipping, metric reductions) lives
behind it, so both backends share checkpointing, failure handling and metrics.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn


class Collective(Protocol):
    def prepare(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, accumulation_steps: int
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        """Wrap a freshly built (or just restored) model and optimizer, and make every rank start
        from rank 0's state."""

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """Context for the backward passes of an accumulation window but its last."""

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, clip_norm: float | None) -> None:
        """Apply the averaged gradients, clipped to `clip_norm` (their global norm) when set."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over every worker, in place; returns it."""

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The plain module whose state dict is checkpointed."""


class DDPCollective:
    """torch.distributed as `TorchTrainer` sets it up (gloo on CPU, NCCL on GPU)."""

    def prepare(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, accumulation_steps: int
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        # DDP broadcasts rank 0's parameters when it wraps the model; a restored optimizer state
        # is identical on every rank because every rank loads the same checkpoint.
        return ray.train.torch.prepare_model(model), optimizer

    def no_sync(self, model: nn.Module) -> contextlib.AbstractContextManager[None]:
        return model.no_sync() if isinstance(model, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, clip_norm: float | None) -> None:
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_norm)  # grads are already all-reduced
        optimizer.step()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(tensor)
        return tensor

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
