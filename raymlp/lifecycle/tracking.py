"""MLflow tracking: where runs go, and what a pipeline run logs.

Embedded default: a SQLite store and an artifact folder under `run_dir`, so a laptop needs no
server. On a multi-node cluster point `registry.tracking_uri` at an MLflow server instead: Serve
replicas on other nodes cannot read the head node's local files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param, Run, RunTag

from raymlp.config.schema import RegistryConfig
from raymlp.data.validate import ValidationReport

if TYPE_CHECKING:  # Serve replicas import this module; they need no Ray Tune
    from raymlp.data.features import FeaturePipeline
    from raymlp.tune import TrialSummary

PACKAGES = ("raymlp", "ray", "torch", "torchao", "mlflow", "optuna", "pyarrow", "numpy")
"""Whose versions a run records: the ones that change what a run computes or how it is stored."""
GIT_COMMIT_TAG = "mlflow.source.git.commit"
"""MLflow's own tag: the UI shows it as the run's git commit."""


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


def log_run_context(source_dir: Path) -> None:
    """The code version and package versions, as tags of the active run: tags show on the run's
    page and can be searched across runs (`tags."version.torch" = '2.13.0'`). The git commit is
    that of the repository holding `source_dir`, with `git.dirty` when tracked files differ from
    it; without git or a repository (an installed wheel) there is no commit to record."""
    tags = {f"version.{name}": _package_version(name) for name in PACKAGES}
    tags = {k: v for k, v in tags.items() if v is not None} | {"version.python": platform.python_version()}
    commit = _git(source_dir, "rev-parse", "HEAD")
    if commit is not None:
        changed = _git(source_dir, "status", "--porcelain", "--untracked-files=no")
        # Clean only when git says so: a status that failed is no evidence the code is the commit's.
        tags |= {GIT_COMMIT_TAG: commit, "git.dirty": str(changed != "").lower()}
    mlflow.set_tags(tags)


def log_history(history: list[dict[str, float]]) -> None:
    """Per-epoch metrics of the chosen model, stepped by epoch."""
    _log_batch(mlflow.active_run().info.run_id, metrics=_stepped(history))


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


def log_features(features: FeaturePipeline) -> None:
    """The fitted feature transform, readable beside the data profile without downloading a model."""
    mlflow.log_text(features.to_json(), "data/features.json")


def log_trial(trial: TrialSummary) -> None:
    """A nested run for one trial: its params, every epoch stepped by epoch (so the UI overlays
    the trials' curves), its best epoch as `best.*` metrics (what the runs table compares) and
    whether it is on the Pareto front. One batched call: against a server each call is a request."""
    now = int(time.time() * 1000)
    with mlflow.start_run(run_name=f"trial-{trial.trial_id}", nested=True) as run:
        _log_batch(
            run.info.run_id,
            metrics=_stepped(trial.history) + [Metric(f"best.{k}", float(v), now, 0) for k, v in trial.metrics.items()],
            params=[Param(k, str(v)) for k, v in trial.params.items()],
            tags=[RunTag("pareto", str(trial.pareto).lower())],
        )


def _log_batch(
    run_id: str, metrics: Sequence[Metric], params: Sequence[Param] = (), tags: Sequence[RunTag] = ()
) -> None:
    """`log_batch` in calls within MLflow's limits (1000 metrics, 100 params, 100 tags each): a long
    run's per-epoch history is more than one call takes."""
    client = mlflow.MlflowClient()
    calls = max(-(-len(metrics) // 1000), -(-len(params) // 100), -(-len(tags) // 100), 1)
    for i in range(calls):
        client.log_batch(
            run_id,
            metrics=metrics[i * 1000 : (i + 1) * 1000],
            params=params[i * 100 : (i + 1) * 100],
            tags=tags[i * 100 : (i + 1) * 100],
        )


def _stepped(history: list[dict[str, float]]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, int(row["epoch"])) for row in history for k, v in row.items() if k != "epoch"]


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(cwd: Path, *args: str) -> str | None:
    """`git args` in `cwd`, or None where git is missing, `cwd` is in no repository or the
    repository has no commit yet."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
