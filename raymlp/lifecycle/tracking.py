"""MLflow tracking: where runs go, and what a pipeline run logs.

Embedded default: a SQLite store and an artifact folder under `run_dir`, so a laptop needs no
server. On a multi-node cluster point `registry.tracking_uri` at an MLflow server instead: Serve
replicas on other nodes cannot read the head node's local files.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run

from raymlp.config.schema import RegistryConfig
from raymlp.data.validate import ValidationReport


@dataclasses.dataclass(frozen=True)
class TrackingTarget:
    tracking_uri: str
    experiment_id: str
    model_name: str


def configure_tracking(cfg: RegistryConfig, run_dir: Path, pipeline_name: str) -> TrackingTarget:
    """Point MLflow at the configured store (creating the embedded one) and get the experiment."""
    embedded = cfg.tracking_uri is None
    if embedded:
        run_dir.mkdir(parents=True, exist_ok=True)
    uri = cfg.tracking_uri or f"sqlite:///{run_dir.resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    name = cfg.experiment or pipeline_name
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = (run_dir.resolve() / "mlartifacts").as_uri() if embedded else None
        experiment_id = client.create_experiment(name, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)  # nested runs follow the active experiment
    return TrackingTarget(uri, experiment_id, cfg.model_name or pipeline_name)


@contextlib.contextmanager
def pipeline_run(target: TrackingTarget, run_name: str) -> Iterator[Run]:
    """The parent MLflow run of one pipeline run; trials become nested runs under it."""
    with mlflow.start_run(experiment_id=target.experiment_id, run_name=run_name) as run:
        yield run


def log_config(config: Mapping[str, Any], config_file: Path) -> None:
    mlflow.log_params(_flatten(config))
    mlflow.log_artifact(str(config_file))


def log_history(history: list[dict[str, float]]) -> None:
    """Per-epoch metrics of the chosen model, stepped by epoch."""
    for row in history:
        mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))


def log_data(
    report: ValidationReport,
    profile: Mapping[str, Any],
    split_rows: Mapping[str, int],
    dropped_features: Mapping[str, str],
) -> None:
    """Row counts by outcome and split as metrics, the fingerprint as a tag for lineage, and the
    validation report (schema, reasons, unreadable files), the data profile and the inputs feature
    selection dropped (with why) as JSON artifacts."""
    mlflow.log_metrics(report.as_metrics() | {f"data.rows_{split}": n for split, n in split_rows.items()})
    mlflow.set_tag("data.fingerprint", report.fingerprint)
    mlflow.log_dict(dataclasses.asdict(report), "data/validation.json")
    mlflow.log_dict(dict(profile), "data/profile.json")
    mlflow.log_dict(dict(dropped_features), "data/dropped_features.json")


def log_trial(trial_id: str, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    with mlflow.start_run(run_name=f"trial-{trial_id}", nested=True):
        mlflow.log_params(params)
        mlflow.log_metrics(dict(metrics))


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
