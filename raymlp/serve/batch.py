"""Batch inference: a registered model applied to a whole dataset with Ray Data, written as parquet.

    raymlp predict-batch examples/quickstart/pipeline.yaml --input examples/quickstart/data --output preds

Rows are read and checked as the data stage reads them (data/rows.py: one task per file, a ledger
of per-file outcomes, invalid rows quarantined with their reason), against the model's own input
contract rather than the training config's rules: every input column present in every file (else
it fails before any work), each value of the type the feature transform reads, numbers finite (the
served API refuses NaN/Infinity in JSON; here a NaN is missing and imputed, as in training). A row
that breaks the contract is quarantined and counted, never dropped unseen; a file that cannot be
read is quarantined whole. The model runs in an autoscaling pool of actors, each loading the
verified bundle once.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.dataset as pa_ds
import pyarrow.fs as pa_fs
import ray
import ray.data
import torch

from raymlp.config.schema import ColumnSpec, DataConfig
from raymlp.data.features import FeaturePipeline
from raymlp.data.rows import Record, RowSource
from raymlp.data.sources import SourceFile, list_files, read_schema
from raymlp.data.validate import RowChecks, target_schema
from raymlp.lifecycle.registry import int8_accepted, resolve_version, version_features
from raymlp.lifecycle.tracking import TrackingTarget
from raymlp.runtime import cluster_cpus
from raymlp.serve.model import ModelSource, load_served_model, planned_precision, predict_columns, prediction_names

log = logging.getLogger(__name__)

FLOAT_MAX = sys.float_info.max
"""The range of a number input: ±Infinity is quarantined as `range:<column>`; NaN compares false
both ways and stays a missing value, imputed as in training."""


@dataclass
class BatchReport:
    """What one batch run did; `rows_out + rows_quarantined == rows_in` is checked before it is returned."""

    model_name: str
    version: str
    precision: str
    """int8, fp32, or auto: each actor kept the faster on its CPU (its log says which)."""
    files: int
    rows_in: int
    rows_out: int
    seconds: float
    output: str
    quarantined: dict[str, int] = field(default_factory=dict)
    """Quarantined rows by reason, e.g. {"type:age": 3, "range:tenure_months": 1}."""
    unreadable_files: dict[str, str] = field(default_factory=dict)
    """File -> error, for files quarantined whole (their rows cannot be counted)."""
    quarantine_path: str | None = None

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined.values())

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.model_name} version {self.version} ({self.precision}): {self.rows_in} rows from {self.files} files "
            f"-> {self.rows_out} predictions in {self.output} ({self.seconds:.1f} s, {self.rows_per_s:,.0f} rows/s)"
        ]
        lines += [f"  quarantined: {n} {reason}" for reason, n in sorted(self.quarantined.items())]
        lines += [f"  unreadable, quarantined whole: {f} ({e})" for f, e in self.unreadable_files.items()]
        if self.quarantine_path:
            lines.append(f"  quarantined rows: {self.quarantine_path}")
        return "\n".join(lines)


class _Predictor:
    """One actor of the pool: loads the pinned version once (verified), then predicts batches."""

    def __init__(self, source: ModelSource, threads: int, device: str, keep: list[str]):
        # As many torch threads as the actor's reserved CPUs: more would fight the other actors.
        torch.set_num_threads(threads)
        mlflow.set_tracking_uri(source.tracking_uri)  # download_bundle resolves the run's artifacts through it
        version = mlflow.MlflowClient().get_model_version(source.model_name, source.version)
        with tempfile.TemporaryDirectory() as tmp:
            self.model, precision = load_served_model(version, source.precision, Path(tmp), device)
        log.info("batch inference actor: version %s, %s weights on %s", source.version, precision, device)
        self.model.module.to(device)
        self.device, self.keep = device, keep

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = batch.select(self.keep)
        for name, values in predict_columns(self.model, batch, self.device).items():
            out = out.append_column(name, pa.array(values))
        return out


def predict_batch(
    target: TrackingTarget,
    input_path: str,
    output: str,
    quarantine_dir: Path,
    *,
    version: str,
    precision: str,
    input_format: str | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 4096,
    actors: tuple[int, int] | None = None,
    cpus_per_actor: float = 1.0,
    overwrite: bool = False,
) -> BatchReport:
    """Predict every valid row of `input_path` (a file, folder, glob or cloud URI of parquet, CSV or
    JSON lines) with registered `version` (number, alias or "latest") at `precision` (as
    `serve.precision`: with `auto` each actor keeps the faster weights on its own device; the CLI
    passes `serve.model_version` and `serve.precision`) and write the passthrough
    `columns` (default: all input columns) plus the prediction columns as parquet files under
    `output`. Invalid rows go to `quarantine_dir` (local) and are counted. `actors` is the pool's
    (min, max); default: 1 up to one per GPU, or one per `cpus_per_actor` with a CPU left for
    reading and writing. Row order is not kept: pass an id column through."""
    start = time.perf_counter()
    if actors is not None and not (len(actors) == 2 and 1 <= actors[0] <= actors[1]):
        raise ValueError(f"actors: {actors} is not (min, max) with 1 <= min <= max, e.g. --actors 1,4")
    dest = output if "://" in output else str(Path(output).resolve())
    out_fs, out_path = pa_fs.FileSystem.from_uri(dest)
    if out_fs.get_file_info(out_path).type != pa_fs.FileType.NotFound and not overwrite:
        raise ValueError(f"output: {output} already exists; write to a new folder or pass overwrite (--overwrite)")
    client = mlflow.MlflowClient(target.tracking_uri)
    pinned = resolve_version(client, target.model_name, version)
    features = version_features(pinned)  # verified here, so a tampered bundle fails before any actor starts

    # list_files reads only path and format; the label just makes the DataConfig valid.
    files = list_files(DataConfig(path=input_path, label=features.label, format=input_format))
    checks = input_checks(files, features, str(pinned.version))
    keep = list(columns) if columns is not None else checks.schema.names
    unknown = sorted(set(keep) - set(checks.schema.names))
    if unknown:
        raise ValueError(f"columns: {unknown} are not in the input; it has {checks.schema.names}")
    clash = sorted(set(keep) & set(prediction_names(features)))
    if clash:
        raise ValueError(f"columns: input columns {clash} would clash with prediction columns; pass others (--columns)")

    gpus = int(ray.cluster_resources().get("GPU", 0))
    device = "cuda" if gpus else "cpu"
    planned = planned_precision(precision, int8_accepted(pinned), device)
    low, high = actors or (1, gpus or max(1, int((cluster_cpus() - 1) // cpus_per_actor)))
    record = Record.start(str(quarantine_dir))
    rows = RowSource(tuple(files), checks, label=None, record=record).dataset()
    source = ModelSource(target.tracking_uri, target.model_name, str(pinned.version), precision)
    predicted = rows.map_batches(
        _Predictor,
        fn_constructor_args=(source, max(1, int(cpus_per_actor)), device, keep),
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
        num_cpus=cpus_per_actor,
        num_gpus=1 if gpus else 0,
        udf_modifying_row_count=False,
    )
    predicted.write_parquet(dest, mode=ray.data.SaveMode.OVERWRITE if overwrite else ray.data.SaveMode.ERROR)

    outcomes = record.outcomes()
    missing = [f.uri for f in files if f.uri not in outcomes]
    if missing:
        raise RuntimeError(f"batch inference has no read outcome for {len(missing)} files (first: {missing[0]})")
    quarantined: Counter[str] = Counter()
    for outcome in outcomes.values():
        quarantined.update(outcome.invalid)
    report = BatchReport(
        model_name=target.model_name,
        version=str(pinned.version),
        precision=planned,
        files=len(files),
        rows_in=sum(o.rows for o in outcomes.values()),
        rows_out=_count_rows(out_fs, out_path),
        seconds=time.perf_counter() - start,
        output=output,
        quarantined=dict(quarantined),
        unreadable_files={uri: o.error for uri, o in outcomes.items() if o.error},
        quarantine_path=str(quarantine_dir) if quarantine_dir.is_dir() else None,
    )
    if report.rows_out + report.rows_quarantined != report.rows_in:
        raise RuntimeError(f"batch inference lost rows:\n{report.summary()}")
    if report.rows_out == 0:
        raise ValueError(f"input: no valid rows to predict\n{report.summary()}")
    log.info("batch inference: %s", report.summary())
    return report


def input_checks(files: list[SourceFile], features: FeaturePipeline, version: str) -> RowChecks:
    """The model's input contract as row checks: numbers cast to a number type and finite,
    timestamps parsed, every other column kept as the first readable file has it."""
    needed = features.input_columns

    def lacking(source: SourceFile) -> list[str]:
        try:
            return sorted(set(needed) - set(read_schema(source).names))
        except Exception:  # noqa: BLE001 - an unreadable file is quarantined whole by its read task
            return []

    with ThreadPoolExecutor(max_workers=16) as pool:  # footers and first blocks: I/O bound
        gaps = [(f.uri, cols) for f, cols in zip(files, pool.map(lacking, files)) if cols]
    if gaps:
        raise ValueError(
            f"input: {len(gaps)} of {len(files)} files lack columns version {version} needs "
            f"(first: {gaps[0][0]} lacks {gaps[0][1]}); it reads {needed}"
        )
    inferred = target_schema(files, {})
    specs = {}
    for name in features.numeric_inputs:
        type_ = inferred.field(name).type
        numeric = pa.types.is_integer(type_) or pa.types.is_floating(type_)
        specs[name] = ColumnSpec(type=None if numeric else "float", min=-FLOAT_MAX, max=FLOAT_MAX)
    specs |= {d.name: ColumnSpec(type="timestamp") for d in features.datetime}
    return RowChecks(target_schema(files, specs), specs, required=frozenset())


def _count_rows(fs: pa_fs.FileSystem, path: str) -> int:
    """Rows written, from the parquet footers; Ray writes no folder when every row was quarantined."""
    if fs.get_file_info(path).type == pa_fs.FileType.NotFound:
        return 0
    return pa_ds.dataset(path, filesystem=fs, format="parquet").count_rows()
