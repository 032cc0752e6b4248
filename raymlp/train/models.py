"""Model zoo: architectures chosen by `model.name`."""

from __future__ import annotations

from torch import nn

from raymlp.config.schema import ModelConfig


def build_mlp(cfg: ModelConfig, input_dim: int, num_classes: int) -> nn.Module:
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in cfg.hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


MODELS = {"mlp": build_mlp}


def build_model(cfg: ModelConfig, input_dim: int, num_classes: int) -> nn.Module:
    """A classifier mapping `input_dim` features to `num_classes` logits."""
    return MODELS[cfg.name](cfg, input_dim, num_classes)
