"""`raymlp drift`: the drift of a dataset against a registered model's training reference, offline.

    raymlp drift examples/quickstart/pipeline.yaml --data new_data/

The dataset is read and checked as batch inference reads it (the model's input contract; invalid
rows quarantined and counted), each Ray Data block is reduced to drift counts inside the streaming
read, and the counts of all blocks are scored on the driver by the code that scores a serving
replica's window (`monitor.drift`). A `prediction` column (what `raymlp predict-batch` writes) adds
prediction drift. The report (JSON and a PNG) is logged as an MLflow run of the pipeline's
experiment, tagged with the model version it was checked against.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from ray.data.aggregate import AggregateFnV2
from ray.data.block import BlockAccessor

from raymlp.config import PipelineConfig
from raymlp.config.schema import DataConfig, DriftConfig
from raymlp.data.aggregates import aggregate
from raymlp.data.features import FeaturePipeline
from raymlp.data.rows import Record, RowSource
from raymlp.data.sources import list_files
from raymlp.lifecycle.plots import plot_drift
from raymlp.lifecycle.registry import resolve_version, version_features
from raymlp.lifecycle.tracking import TrackingTarget, pipeline_run
from raymlp.monitor.drift import DriftReport, add_counts, count_rows, score
from raymlp.serve.batch import input_checks
from raymlp.serve.model import PREDICTION

MODEL_VERSION_TAG = "raymlp.model_version"


class DriftCounts(AggregateFnV2):
    """A block's drift counts (`monitor.drift.count_rows`); counts of blocks add."""

    def __init__(self, features: FeaturePipeline, predictions: bool):
        self._features = features
        self._predictions = predictions
        super().__init__("drift", zero_factory=dict, on=None, ignore_nulls=False)

    def aggregate_block(self, block: Any) -> dict:
        table = BlockAccessor.for_block(block).to_arrow()
        predicted = table[PREDICTION] if self._predictions else None
        return count_rows(self._features.reference, self._features.expand(table), predicted)

    def combine(self, current: dict, new: dict) -> dict:
        return add_counts(current, new)

    def finalize(self, accumulator: dict) -> dict:  # type: ignore[override]
        return accumulator


@dataclass
class DriftCheck:
    model_name: str
    version: str
    data: str
    report: DriftReport
    rows_in: int
    seconds: float
    quarantined: dict[str, int] = field(default_factory=dict)
    """Rows that break the model's input contract, by reason: not scored, but counted here."""
    run_id: str | None = None

    @property
    def rows_per_s(self) -> float:
        return self.rows_in / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        r = self.report
        lines = [f"{self.model_name} version {self.version}: {r.rows} rows of {self.data} scored "
                 f"({self.seconds:.1f} s, {self.rows_per_s:,.0f} rows/s)"]  # fmt: skip
        lines += [f"  quarantined: {n} {reason}" for reason, n in sorted(self.quarantined.items())]
        for f in [*r.features, *([r.prediction] if r.prediction else [])]:
            ks = f", KS {f.ks:.3f}" if f.ks is not None else ""
            lines.append(f"  {'DRIFT ' if f.drifted else '      '}{f.name}: PSI {f.psi:.3f}{ks}")
        lines.append(f"  drifted: {', '.join(r.alarms) or 'none'}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model_name, "version": self.version, "data": self.data, "rows_in": self.rows_in,
                "seconds": round(self.seconds, 3), "quarantined": self.quarantined, **self.report.to_dict()}  # fmt: skip


def check_drift(
    target: TrackingTarget,
    data: str,
    quarantine_dir: Path,
    *,
    version: str,
    cfg: DriftConfig,
    input_format: str | None = None,
) -> DriftCheck:
    """Score `data` (a file, folder, glob or URI of parquet, CSV or JSON lines) against the training
    reference of registered `version` (number, alias or "latest")."""
    start = time.perf_counter()
    pinned = resolve_version(mlflow.MlflowClient(target.tracking_uri), target.model_name, version)
    features = version_features(pinned)
    if features.reference is None:
        raise ValueError(f"version {pinned.version} was fitted before raymlp kept a drift reference; retrain it to check drift")
    files = list_files(DataConfig(path=data, label=features.label, format=input_format))
    checks = input_checks(files, features, str(pinned.version))
    record = Record.start(str(quarantine_dir))
    rows = RowSource(tuple(files), checks, label=None, record=record).dataset()
    counts = aggregate(rows, DriftCounts(features, PREDICTION in checks.schema.names))["drift"]
    outcomes = record.outcomes().values()  # taken from the ledger: once
    quarantined: Counter[str] = Counter()
    for outcome in outcomes:
        quarantined.update(outcome.invalid)
    return DriftCheck(
        model_name=target.model_name,
        version=str(pinned.version),
        data=data,
        report=score(features.reference, counts, cfg),
        rows_in=sum(o.rows for o in outcomes),
        seconds=time.perf_counter() - start,
        quarantined=dict(quarantined),
    )


def log_drift(target: TrackingTarget, check: DriftCheck, out_dir: Path) -> DriftCheck:
    """Write the report (`drift.json`, `drift.png`) into `out_dir` and log it as an MLflow run
    named `drift`: PSI and KS per feature as metrics, the version checked as a tag."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "drift.json").write_text(json.dumps(check.to_dict(), indent=2))
    plot_drift(check.report, out_dir / "drift.png")
    report = check.report
    metrics = {"drift.rows": report.rows, "drift.drifted_features": len(report.drifted)}
    for f in report.features:
        metrics[f"drift.psi.{f.name}"] = f.psi
        if f.ks is not None:
            metrics[f"drift.ks.{f.name}"] = f.ks
    if report.prediction:
        metrics["drift.psi.prediction"] = report.prediction.psi
    with pipeline_run(target, "drift") as run:
        mlflow.set_tags({MODEL_VERSION_TAG: check.version, "raymlp.drift.data": check.data,
                         "raymlp.drift.drifted": ",".join(report.drifted) or "none"})  # fmt: skip
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(out_dir), artifact_path="drift")
    check.run_id = run.info.run_id
    return check


def drift_run(target: TrackingTarget, cfg: PipelineConfig, data: str, version: str, input_format: str | None = None) -> tuple[DriftCheck, Path]:
    """What `raymlp drift` and a drift-triggered retrain do: check `data` against `version` with
    `monitor.drift`'s thresholds, and log the report from a `drift-<time>` folder under `run_dir`
    (returned, with the check)."""
    out_dir = Path(cfg.run_dir) / f"drift-{time.strftime('%Y%m%d-%H%M%S')}"
    check = check_drift(target, data, out_dir / "quarantine", version=version, cfg=cfg.monitor.drift, input_format=input_format)
    return log_drift(target, check, out_dir), out_dir
