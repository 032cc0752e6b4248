"""The data stage: read and validate, deduplicate, split, profile, fit the feature transform on the
train split and apply it, all as streaming passes over the source files.

Passes, each re-reading the files rather than holding them: (1) validation counts and the raw
statistics, fused; (2) the statistics of cleaned values; (3) the transform. Deduplication and time
splits add a pass of their own before (1). The first pass, whichever it is, checks every row, fills
the validation ledger and writes the quarantine; the later ones read only the columns they use and
drop the rows it found invalid (see rows.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data

from raymlp.config.schema import DataConfig, FeaturesConfig
from raymlp.data.clean import KEY, POS, find_duplicates
from raymlp.data.features import FeaturePipeline
from raymlp.data.fit import Fitted, Roles, fit_feature_pipeline, raw_statistics, resolve_roles
from raymlp.data.profile import build_profile, profile_summary
from raymlp.data.rows import Record, RowSource, row_source, verdicts_of
from raymlp.data.sources import list_files
from raymlp.data.split import NAMES, SPLIT, TRAIN, VALID, SplitRule, fit_time_split, random_split
from raymlp.data.validate import ValidationReport, build_report, checks_for, target_schema

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Model-ready splits (`x` float32 matrix, `y` class index or standardized target),
    materialized, plus the fitted transform."""

    train: ray.data.Dataset
    valid: ray.data.Dataset
    test: ray.data.Dataset | None
    features: FeaturePipeline
    validation: ValidationReport
    profile: dict[str, dict[str, Any]]
    """Per-column statistics of the train split (see data.profile)."""
    num_rows: dict[str, int]
    sample_rows: list[dict[str, Any]]
    """A few raw validation rows without the label, for smoke-testing the served model."""
    valid_rows: ray.data.Dataset
    """The valid split as validated raw rows (label included), re-read lazily: how another model,
    with its own feature transform, is scored on the same rows (see lifecycle.promotion)."""
    dropped_features: dict[str, str] = field(default_factory=dict)


class Passes:
    """Hands out the row source for each pass over the data. The first one checks every row,
    records every file's outcome in the ledger and quarantines invalid rows; later ones read only
    the columns they need and drop the rows it recorded as invalid."""

    def __init__(self, source: RowSource, data: DataConfig, quarantine_dir: Path):
        self.source, self.data, self.quarantine_dir = source, data, str(quarantine_dir)
        # Now: a new ledger starts while the driver plans.
        self.record = Record.start(self.quarantine_dir if data.invalid_rows == "quarantine" else None)
        self.report: ValidationReport | None = None
        self.recording = False

    def next(self, **changes: Any) -> RowSource:
        if self.recording:
            self.validated()
        if self.report is not None:
            return self.source.with_(**changes)
        self.recording = True
        return self.source.with_(record=self.record, **changes)

    def validated(self) -> ValidationReport:
        """The report, once the first pass has run (it raises on `fail`, `max_bad_fraction`, no rows)."""
        if self.report is None:
            outcomes = self.record.outcomes()
            self.report = build_report(
                list(self.source.files), outcomes, self.source.checks.schema, self.data, self.quarantine_dir
            )
            self.source = self.source.with_(verdicts=ray.put(verdicts_of(outcomes)))
            log.info("data validation: %s", self.report.summary())
        return self.report


@dataclass
class Fit:
    """What the fitting passes produce: the source as later passes read it, and the transform."""

    source: RowSource
    passes: Passes
    fitted: Fitted
    roles: Roles

    def inputs(self) -> ray.data.Dataset:
        """The rows with just the columns the fitted transform reads, and the label."""
        return self.source.with_(columns=(*self.fitted.pipeline.input_columns, self.passes.data.label)).dataset()


def open_source(data: DataConfig, quarantine_dir: Path) -> Passes:
    """List the files and settle the schema every file is checked against (no pass yet)."""
    files = list_files(data)
    checks = checks_for(data, target_schema(files, data.columns))
    return Passes(row_source(files, checks, data), data, quarantine_dir)


def validate_data(data: DataConfig, quarantine_dir: Path) -> tuple[ray.data.Dataset, ValidationReport]:
    """One pass that checks every row and quarantines the invalid ones: the report, and the valid
    rows as a lazy dataset (deduplication and splits are not applied)."""
    passes = open_source(data, quarantine_dir)
    passes.next().dataset().count()
    return passes.next().dataset().drop_columns([SPLIT]), passes.validated()


def fit_data(data: DataConfig, features: FeaturesConfig, seed: int, quarantine_dir: Path, hold_out: bool) -> Fit:
    """Validate, deduplicate, split (when `hold_out`) and fit the transform on the train rows."""
    passes = open_source(data, quarantine_dir)
    exclude = set(data.dedupe_key) | ({data.time_column} if data.time_column else set())
    roles = resolve_roles(passes.source.checks.schema, data.label, features, exclude - set(features.datetime))
    if data.dedupe != "none":
        # A shuffle follows: several operators, which keep Ray Data's reservations.
        keyed = passes.next(emit_keys=True, single_operator=False).dataset().select_columns([KEY, POS])
        duplicates = find_duplicates(keyed, partitions=max(2, int(ray.cluster_resources().get("CPU", 2))))
        passes.validated().duplicates = duplicates.dropped
        passes.source = passes.source.with_(duplicates=ray.put(duplicates))
    split: SplitRule | None = None
    if hold_out:
        split = fit_time_split(passes.next().dataset(), data) if data.split == "time" else random_split(data, seed)

    def train_rows() -> ray.data.Dataset:
        return passes.next(split=split, columns=roles.columns(data.label), keep_split=TRAIN).dataset()

    raw = raw_statistics(train_rows(), roles, features, data.label, data.task, seed)
    labels = passes.validated().labels
    classes = sorted(labels, key=_sort_key)
    if data.task == "classification" and len(classes) < 2:
        raise ValueError(f"data.label: {data.label!r} has {len(classes)} class(es) {classes}; classification needs two or more")
    fitted = fit_feature_pipeline(train_rows(), raw, classes, data.label, roles, features, seed, data.task, labels)
    return Fit(passes.source.with_(split=split), passes, fitted, roles)


def prepare_data(data: DataConfig, features: FeaturesConfig, seed: int, quarantine_dir: Path) -> PreparedData:
    """Validated, split, model-ready data for training and tuning."""
    fit = fit_data(data, features, seed, quarantine_dir, hold_out=True)
    pipeline, report = fit.fitted.pipeline, fit.passes.validated()
    profile = build_profile(fit.fitted.raw_stats, fit.roles, report.labels)
    log.info("data profile (train split):\n%s", profile_summary(profile))

    def transform(batch: pa.Table) -> dict[str, np.ndarray]:
        return pipeline.transform_xy(batch) | {SPLIT: batch[SPLIT].to_numpy()}

    # Materialize: the splits are re-read every epoch and by every trial, and a streaming read
    # competing with training workers for the same CPUs can stall them (see RAY_NOTES).
    ready = fit.inputs().map_batches(transform, batch_format="pyarrow", batch_size=None).materialize()
    splits = {
        name: ready.filter(expr=f"{SPLIT} == {code}").drop_columns([SPLIT]).materialize()
        for code, name in NAMES.items()
    }
    num_rows = {name: ds.count() for name, ds in splits.items()}
    if not num_rows["train"] or not num_rows["valid"]:
        raise ValueError(
            f"data: the split left {num_rows} rows; add data or change data.valid_fraction / data.test_fraction"
        )
    log.info("data: %s rows, %d features", num_rows, pipeline.output_dim)
    valid_source = fit.source.with_(keep_split=VALID)
    sample = valid_source.with_(columns=tuple(pipeline.input_columns)).dataset().drop_columns([SPLIT]).take(3)
    return PreparedData(
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"] if num_rows["test"] else None,
        features=pipeline,
        validation=report,
        profile=profile,
        num_rows=num_rows,
        sample_rows=[{k: _jsonable(v) for k, v in row.items()} for row in sample],
        valid_rows=valid_source.dataset().drop_columns([SPLIT]),
        dropped_features=fit.fitted.dropped,
    )


def preprocess_to_parquet(
    data: DataConfig, features: FeaturesConfig, out: str, quarantine_dir: Path, seed: int = 0
) -> ValidationReport:
    """Batch feature engineering: validate, fit the transform on every valid row, and write the
    model inputs as parquet, one float32 column per output feature plus `y`, streaming. What
    `benchmarks/data_preprocess.py` measures."""
    fit = fit_data(data, features, seed, quarantine_dir, hold_out=False)
    pipeline = fit.fitted.pipeline
    rows = fit.inputs()
    # Dictionary encoding suits repeated values, not scaled floats: without it the write is ~3x
    # faster and the files smaller (one-hot columns still compress well).
    transformed = rows.map_batches(pipeline.transform_columns, batch_format="pyarrow", batch_size=None)
    transformed.write_parquet(out, use_dictionary=False)
    return fit.passes.validated()


def _sort_key(value: Any) -> tuple[str, Any]:
    return (type(value).__name__, value)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
