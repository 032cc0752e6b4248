"""Data stage: sources, the fitted feature transform, splits."""

from raymlp.data.features import FeaturePipeline
from raymlp.data.prepare import PreparedData, prepare_data

__all__ = ["FeaturePipeline", "PreparedData", "prepare_data"]
