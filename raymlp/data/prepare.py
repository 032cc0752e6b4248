"""The data stage: read and validate, split (seeded), fit the feature transform on train, apply it
to both splits."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray.data

from raymlp.config.schema import DataConfig, FeaturesConfig
from raymlp.data.features import FeaturePipeline, fit_feature_pipeline, label_classes, select_columns
from raymlp.data.profile import profile, profile_summary
from raymlp.data.validate import ValidationReport, read_validated

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Model-ready splits (`x` float32 matrix, `y` class index), materialized, plus the fitted transform."""

    train: ray.data.Dataset
    valid: ray.data.Dataset
    features: FeaturePipeline
    validation: ValidationReport
    profile: dict[str, dict[str, Any]]
    """Per-column statistics of the valid rows (see data.profile)."""
    num_rows: dict[str, int]
    sample_rows: list[dict[str, Any]]
    """A few raw validation rows without the label, for smoke-testing the served model."""


def preprocess_to_parquet(data: DataConfig, features: FeaturesConfig, out: str, quarantine_dir: Path) -> ValidationReport:
    """Batch feature engineering: read, validate, fit the transform on all valid rows, and write
    model inputs (`x`, `y`) as parquet. What `benchmarks/data_preprocess.py` measures."""
    ds, validation = read_validated(data, quarantine_dir)
    numeric, categorical = select_columns(ds.schema().base_schema, data.label, features)
    pipeline = fit_feature_pipeline(ds, label_classes(ds, data.label), data.label, numeric, categorical, features)
    ds.map_batches(pipeline.transform_xy, batch_format="numpy").write_parquet(out)
    return validation


def prepare_data(data: DataConfig, features: FeaturesConfig, seed: int, quarantine_dir: Path) -> PreparedData:
    ds, validation = read_validated(data, quarantine_dir)
    data_profile = profile(ds)
    log.info("data profile:\n%s", profile_summary(data_profile))
    numeric, categorical = select_columns(ds.schema().base_schema, data.label, features)
    ds = ds.select_columns(numeric + categorical + [data.label])
    train_raw, valid_raw = ds.train_test_split(test_size=data.valid_fraction, shuffle=True, seed=seed)
    pipeline = fit_feature_pipeline(train_raw, label_classes(ds, data.label), data.label, numeric, categorical, features)
    # Materialize: the splits are re-read every epoch and by every trial, and a streaming read
    # competing with training workers for the same CPUs can stall them (see RAY_NOTES).
    train = train_raw.map_batches(pipeline.transform_xy, batch_format="numpy").materialize()
    valid = valid_raw.map_batches(pipeline.transform_xy, batch_format="numpy").materialize()
    num_rows = {"train": train.count(), "valid": valid.count()}
    log.info("data: %d train rows, %d valid rows, %d features", num_rows["train"], num_rows["valid"], pipeline.output_dim)
    sample_rows = [{k: v for k, v in row.items() if k != data.label} for row in valid_raw.take(3)]
    return PreparedData(train, valid, pipeline, validation, data_profile, num_rows, sample_rows)
