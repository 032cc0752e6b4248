"""Turn the YAML search space (`tune.space`) into Ray Tune domains, and trial values back into
config overrides.

Choices are sampled as indices: Optuna's categorical distribution only takes scalars, and a
choice over lists (e.g. `model.hidden_sizes`) is common.
"""

from __future__ import annotations

from typing import Any

from ray import tune

from raymlp.config.schema import SearchDim


def build_param_space(space: dict[str, SearchDim], grid: bool = False) -> dict[str, Any]:
    """Tune domains for sampling searchers, or `grid_search` lists (every choice index, every
    integer of an int range in steps of `q`) when `grid`."""
    return {path: (_grid(dim) if grid else _domain(dim)) for path, dim in space.items()}


def decode_params(space: dict[str, SearchDim], sampled: dict[str, Any]) -> dict[str, Any]:
    """Sampled trial values to `{config.path: value}` overrides (choice indices become values)."""
    return {
        path: dim.values[sampled[path]] if dim.type == "choice" else sampled[path]
        for path, dim in space.items()
    }


def _domain(dim: SearchDim) -> Any:
    if dim.type == "choice":
        return tune.choice(list(range(len(dim.values))))
    if dim.type == "int":
        low, high = int(dim.low), int(dim.high)
        return tune.qrandint(low, high, int(dim.q)) if dim.q else tune.randint(low, high + 1)
    if dim.type == "uniform":
        return tune.quniform(dim.low, dim.high, dim.q) if dim.q else tune.uniform(dim.low, dim.high)
    return tune.qloguniform(dim.low, dim.high, dim.q) if dim.q else tune.loguniform(dim.low, dim.high)


def _grid(dim: SearchDim) -> dict[str, list[Any]]:
    if dim.type == "choice":
        return tune.grid_search(list(range(len(dim.values))))
    return tune.grid_search(list(range(int(dim.low), int(dim.high) + 1, int(dim.q or 1))))
