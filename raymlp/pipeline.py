"""run_pipeline: the stages in order. The only module that knows them all; every launch path
(`raymlp run`, `ray job submit -- raymlp run`, a Python driver) calls it."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import ray.train

from raymlp.artifacts import load_bundle
from raymlp.config import PipelineConfig, save_config, with_values
from raymlp.data import PreparedData, prepare_data
from raymlp.data.validate import ValidationReport
from raymlp.lifecycle.compress import CompressReport, compress_bundle
from raymlp.lifecycle.registry import INT8_ACCEPTED_TAG, INT8_ARTIFACT, register_bundle
from raymlp.lifecycle.tracking import (
    configure_tracking,
    log_config,
    log_data,
    log_history,
    log_trial,
    pipeline_run,
)
from raymlp.runtime import cluster_cpus, init_ray
from raymlp.serve.app import build_model_app, deploy
from raymlp.serve.client import predict
from raymlp.train.loop import score
from raymlp.train.trainer import TrainOutcome, fit
from raymlp.tune import run_search


STAGES = ("data", "train", "tune", "register", "compress", "serve")


@dataclass
class PipelineResult:
    run_dir: Path
    tracking_uri: str
    mlflow_run_id: str
    model_name: str
    model_version: str | None = None
    validation: ValidationReport | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    compress: CompressReport | None = None
    endpoint: str | None = None
    prediction: dict[str, Any] | None = None


def check_stages(stages: Sequence[str]) -> list[str]:
    """Stages in pipeline order; each must have what it consumes produced in the same run."""
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"--stages: unknown {unknown}; choose from {', '.join(STAGES)}")
    chosen = [s for s in STAGES if s in stages]
    needs = {
        "train": {"data"},
        "tune": {"data"},
        "register": {"train", "tune"},
        "compress": {"register"},
    }
    for stage, wanted in needs.items():
        if stage in chosen and not wanted & set(chosen):
            raise ValueError(f"--stages: {stage} needs {' or '.join(sorted(wanted))} in the same run")
    if "compress" in chosen and "data" not in chosen:
        raise ValueError("--stages: compress needs data (it evaluates on the validation split)")
    return chosen


def run_pipeline(cfg: PipelineConfig, stages: Sequence[str] = STAGES, resume: str | None = None) -> PipelineResult:
    """Run `stages` of `cfg` on the current Ray cluster (started embedded if there is none).
    `resume` names an earlier run (its folder under `run_dir`) whose training continues from its
    latest checkpoint instead of starting over."""
    stages = check_stages(stages)
    init_ray(cfg.runtime)
    run_id = resume or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    run_dir = Path(cfg.run_dir) / run_id
    if resume and not run_dir.is_dir():
        raise FileNotFoundError(f"--resume: no run {resume!r} under {Path(cfg.run_dir).resolve()}; give a run folder's name")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    storage_path = cfg.train.storage_path or str(run_dir.resolve() / "ray_results")
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    client = mlflow.MlflowClient(target.tracking_uri)

    with pipeline_run(target, run_name=f"{cfg.name}-{run_id}") as run:
        result = PipelineResult(run_dir, target.tracking_uri, run.info.run_id, target.model_name)
        log_config(cfg.model_dump(mode="json"), run_dir / "config.yaml")
        data = None
        if "data" in stages:
            data = prepare_data(cfg.data, cfg.features, cfg.seed, run_dir / "quarantine")
            log_data(data.validation, data.profile, data.num_rows, data.dropped_features)
            result.validation = data.validation
        candidates = []
        if "train" in stages:
            candidates.append(_fit(cfg, data, f"{cfg.name}-{run_id}-train", storage_path))
        if "tune" in stages:
            candidates.append(_tune(cfg, data, f"{cfg.name}-{run_id}-tune", storage_path))
        if candidates:
            pick = min if cfg.tune.mode == "min" else max
            best = pick(candidates, key=lambda c: c.metrics[cfg.tune.metric])
            result.metrics = dict(best.metrics)
            mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
            with best.checkpoint.as_directory() as bundle_dir:
                log_history(json.loads((Path(bundle_dir) / "metrics.json").read_text())["history"])
                if data.test is not None:  # the held-out test split, scored once, on the chosen model
                    result.metrics |= score(load_bundle(Path(bundle_dir)).module, data.test, data.features, "test")
                    mlflow.log_metrics({k: v for k, v in result.metrics.items() if k.startswith("test_")})
                if "register" in stages:
                    tags = {
                        **result.metrics,
                        "tuned_params": json.dumps(best.params),
                        "run_dir": str(run_dir),
                        "data.fingerprint": data.validation.fingerprint,
                    }
                    version = register_bundle(client, target.model_name, run.info.run_id, Path(bundle_dir), tags)
                    result.model_version = str(version.version)
                if "compress" in stages:
                    result.compress = _compress(cfg, Path(bundle_dir), data, client, result)

    if "serve" in stages:
        app = build_model_app(cfg.serve, cfg.monitor, target)
        result.endpoint = deploy(app, cfg.serve, name=cfg.name)
        if data is not None:
            result.prediction = predict(result.endpoint, data.sample_rows)
    return result


def _fit(
    cfg: PipelineConfig,
    data: PreparedData,
    name: str,
    storage_path: str,
    callbacks: Sequence[ray.train.UserCallback] = (),
) -> TrainOutcome:
    return fit(
        cfg.model,
        cfg.train,
        {"train": data.train, "valid": data.valid},
        data.features,
        seed=cfg.seed,
        metric=cfg.tune.metric,
        mode=cfg.tune.mode,
        name=name,
        storage_path=storage_path,
        callbacks=callbacks,
    )


def _tune(cfg: PipelineConfig, data: PreparedData, name: str, storage_path: str) -> TrainOutcome:
    def fit_trial(
        params: dict[str, Any], run_name: str, callbacks: Sequence[ray.train.UserCallback]
    ) -> TrainOutcome:
        return _fit(with_values(cfg, params), data, run_name, storage_path, callbacks)

    search = run_search(
        cfg.tune,
        fit_trial,
        max_epochs=cfg.train.epochs,
        trial_cpus=cfg.train.max_workers * cfg.train.cpus_per_worker,
        cluster_cpus=cluster_cpus(),
        seed=cfg.seed,
        name=name,
        storage_path=storage_path,
    )
    for trial in search.trials:
        log_trial(trial.trial_id, trial.params, trial.metrics)
    return search.best


def _compress(
    cfg: PipelineConfig, bundle_dir: Path, data: PreparedData, client: mlflow.MlflowClient, result: PipelineResult
) -> CompressReport:
    with tempfile.TemporaryDirectory() as tmp:
        report = compress_bundle(
            cfg.compress, bundle_dir, data.valid, Path(tmp) / INT8_ARTIFACT, cfg.tune.metric, cfg.tune.mode
        )
        client.log_artifacts(result.mlflow_run_id, str(Path(tmp) / INT8_ARTIFACT), artifact_path=INT8_ARTIFACT)
    mlflow.log_metrics(report.as_metrics())
    if result.model_version:
        for key, value in {**report.as_metrics(), INT8_ACCEPTED_TAG: str(report.accepted).lower()}.items():
            client.set_model_version_tag(result.model_name, result.model_version, key, str(value))
    return report
