"""A user model (`model.name: flaky_model:factory`) whose worker process dies once, mid-epoch.

Used by the fault-tolerance test, and an example of the user-model import path: workers import it
because the test session puts this folder on their PYTHONPATH.
"""

from __future__ import annotations

import os
import time

from torch import nn

from raymlp.config.schema import ModelConfig
from raymlp.train.models import build_mlp


class DiesOnce(nn.Module):
    """An MLP that kills its process at its `fail_at_step`-th training forward pass, if no other
    process has yet claimed `marker` (an exclusive create, so exactly one worker dies, once)."""

    def __init__(self, inner: nn.Module, fail_at_step: int, marker: str):
        super().__init__()
        self.inner, self.fail_at_step, self.marker, self.steps = inner, fail_at_step, marker, 0

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps == self.fail_at_step and _claim(self.marker):
                # Mid-epoch: the previous epoch's report must reach the controller first; it polls
                # every few seconds, later on a loaded 2-core machine: the wait is generous.
                time.sleep(6)
                os._exit(1)
        return self.inner(x)


def factory(cfg: ModelConfig, input_dim: int, output_dim: int) -> nn.Module:
    inner = build_mlp(cfg, input_dim, output_dim)
    if "marker" not in cfg.options:
        return inner
    return DiesOnce(inner, cfg.options["fail_at_step"], cfg.options["marker"])


def _claim(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True
