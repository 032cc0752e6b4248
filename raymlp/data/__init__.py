"""Data stage: sources, the fitted feature transform, splits."""

from importlib import import_module
from typing import Any

# Resolved on first use: the ledger actor imports raymlp.data.ledger alone, without the data stack.
_EXPORTS = {
    "FeaturePipeline": "raymlp.data.features",
    "PreparedData": "raymlp.data.prepare",
    "prepare_data": "raymlp.data.prepare",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'raymlp.data' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
