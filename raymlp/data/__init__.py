"""Data stage: sources, the fitted feature transform, splits."""

from raymlp.lazy import lazy_exports

# Resolved on first use: the ledger actor imports raymlp.data.ledger alone, without the data stack.
_EXPORTS = {
    "FeaturePipeline": "raymlp.data.features",
    "PreparedData": "raymlp.data.prepare",
    "prepare_data": "raymlp.data.prepare",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
