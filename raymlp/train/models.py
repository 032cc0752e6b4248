"""Model zoo: architectures chosen by `model.name`, or a user factory named by import path.

Every model maps a float32 feature matrix (rows, input_dim) to (rows, output_dim): class logits,
or the predicted (standardized) value for regression.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from torch import nn

from raymlp.config.schema import ModelConfig

Factory = Callable[[ModelConfig, int, int], nn.Module]


def build_mlp(cfg: ModelConfig, input_dim: int, output_dim: int) -> nn.Module:
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in cfg.hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Pre-norm residual block: x + W2·dropout(relu(W1·norm(x)))."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, width)
        )

    def forward(self, x):
        return x + self.body(x)


def build_resmlp(cfg: ModelConfig, input_dim: int, output_dim: int) -> nn.Module:
    """One residual block per `hidden_sizes` entry, with a projection wherever the width changes;
    trains deeper stacks than a plain MLP does."""
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in cfg.hidden_sizes:
        if hidden != width:
            layers.append(nn.Linear(width, hidden))
        layers.append(ResidualBlock(hidden, cfg.dropout))
        width = hidden
    layers += [nn.LayerNorm(width), nn.Linear(width, output_dim)]
    return nn.Sequential(*layers)


def build_cnn(cfg: ModelConfig, input_dim: int, output_dim: int) -> nn.Module:
    """Conv(3x3)-BatchNorm-ReLU-MaxPool blocks over the features reshaped to `image_shape`, then
    a dense head: for image tensors flattened into feature columns (e.g. pixels)."""
    channels, height, width = cfg.image_shape
    if channels * height * width != input_dim:
        raise ValueError(
            f"model.image_shape: {list(cfg.image_shape)} holds {channels * height * width} values, "
            f"but the feature transform produces {input_dim}; make their product match"
        )
    layers: list[nn.Module] = [nn.Unflatten(1, (channels, height, width))]
    for out in cfg.channels:
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = out
    layers.append(nn.Flatten())
    head = build_mlp(cfg, channels * height * width, output_dim)
    return nn.Sequential(*layers, *head)


ZOO: dict[str, Factory] = {"mlp": build_mlp, "resmlp": build_resmlp, "cnn": build_cnn}


def build_model(cfg: ModelConfig, input_dim: int, output_dim: int) -> nn.Module:
    """The model `cfg.name` names, from the zoo or a user factory `package.module:factory`."""
    factory = ZOO.get(cfg.name) or _import_factory(cfg.name)
    model = factory(cfg, input_dim, output_dim)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model.name: {cfg.name} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _import_factory(path: str) -> Factory:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"model.name: cannot import {module_name!r} ({e}); on a cluster, ship it with the job "
            "(`ray job submit --working-dir .` or runtime_env py_modules)"
        ) from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model.name: {module_name} has no callable {attr!r}")
    return factory

