"""Turn the YAML search space (`tune.space`) into Ray Tune domains, and trial values back into
config overrides.

Choices are sampled as indices: Optuna's categorical distribution only takes scalars, and a
choice over lists (e.g. `model.hidden_sizes`) is common.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from raymlp.config.schema import SearchDim


def build_param_space(space: dict[str, SearchDim]) -> dict[str, Any]:
    domains = {}
    for path, dim in space.items():
        if dim.type == "uniform":
            domains[path] = tune.uniform(dim.low, dim.high)
        elif dim.type == "loguniform":
            domains[path] = tune.loguniform(dim.low, dim.high)
        elif dim.type == "int":
            domains[path] = tune.randint(int(dim.low), int(dim.high) + 1)
        else:
            domains[path] = tune.choice(list(range(len(dim.values))))
    return domains


def decode_params(space: dict[str, SearchDim], sampled: dict[str, Any]) -> dict[str, Any]:
    """Sampled trial values to `{config.path: value}` overrides (choice indices become values)."""
    return {
        path: dim.values[sampled[path]] if dim.type == "choice" else sampled[path]
        for path, dim in space.items()
    }
