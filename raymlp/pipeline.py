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
from raymlp.config import PipelineConfig, config_digest, save_config, with_values
from raymlp.data import PreparedData, prepare_data
from raymlp.data.validate import ValidationReport
from raymlp.lifecycle.compress import CompressReport, compress_bundle
from raymlp.lifecycle.plots import log_plots
from raymlp.lifecycle.promotion import PromotionDecision, challenge
from raymlp.lifecycle.registry import CHAMPION, INT8_ACCEPTED_TAG, INT8_ARTIFACT, alias_version, register_bundle
from raymlp.lifecycle.tracking import (
    configure_tracking,
    log_config,
    log_data,
    log_features,
    log_history,
    log_run_context,
    log_trial,
    pipeline_run,
)
from raymlp.monitor.metrics import DataMetrics
from raymlp.runtime import cluster_cpus, init_ray
from raymlp.serve.app import build_model_app, deploy
from raymlp.serve.client import predict
from raymlp.serve.security import resolve_api_keys
from raymlp.train.loop import score
from raymlp.train.trainer import TrainOutcome, fit
from raymlp.tune import FitTrial, SearchOutcome, TrialSummary, run_search


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
    promotion: PromotionDecision | None = None
    trials: list[TrialSummary] = field(default_factory=list)
    endpoint: str | None = None
    api_key: str | None = None
    """A key the app accepts (None when `serve.auth.mode` is none)."""
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
    `resume` names an earlier run (its folder under `run_dir`) to continue instead of starting
    over: training from its latest checkpoint, a search with its finished trials kept."""
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
        log_run_context(Path(__file__).parent)
        data = None
        if "data" in stages:
            data = prepare_data(cfg.data, cfg.features, cfg.seed, run_dir / "quarantine")
            log_data(data.validation, data.profile, data.num_rows, data.dropped_features)
            v = data.validation
            DataMetrics(target.model_name).observe(v.rows_valid, v.duplicates, v.quarantined, len(v.unreadable_files))
            log_features(data.features)
            result.validation = data.validation
        candidates = []
        if "train" in stages:
            candidates.append(_trainer(cfg, data, storage_path)({}, f"{cfg.name}-{run_id}-train"))
        if "tune" in stages:
            search = _tune(cfg, data, f"{cfg.name}-{run_id}-tune", storage_path, resume=resume is not None)
            result.trials = search.trials
            candidates.append(search.best)
        if candidates:
            pick = min if cfg.tune.mode == "min" else max
            best = pick(candidates, key=lambda c: c.metrics[cfg.tune.metric])
            result.metrics = dict(best.metrics)
            mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
            with best.checkpoint.as_directory() as checkpoint_dir:
                bundle_dir = Path(checkpoint_dir)
                history = json.loads((bundle_dir / "metrics.json").read_text())["history"]
                log_history(history)
                log_plots(history, result.trials, cfg.tune.space, cfg.tune.metric, cfg.tune.mode)
                if data.test is not None:  # the held-out test split, scored once, on the chosen model
                    result.metrics |= score(load_bundle(bundle_dir).module, data.test, data.features, "test")
                    mlflow.log_metrics({k: v for k, v in result.metrics.items() if k.startswith("test_")})
                if "register" in stages:
                    tags = _lineage(cfg, client, target.model_name, run.info.run_id, data, best)
                    version = register_bundle(client, target.model_name, run.info.run_id, bundle_dir, tags)
                    result.model_version = str(version.version)
                if "compress" in stages:
                    result.compress = _compress(cfg, bundle_dir, data, client, result)
                if "register" in stages:  # after compress: a promoted version is served int8 when accepted
                    result.promotion = challenge(
                        client, cfg.registry, target.model_name, result.model_version, bundle_dir,
                        data.valid_rows, cfg.tune.metric, cfg.tune.mode,
                    )  # fmt: skip

    if "serve" in stages:
        api_keys = resolve_api_keys(cfg.serve.auth, Path(cfg.run_dir))
        result.api_key = api_keys[0] if api_keys else None
        app = build_model_app(cfg.serve, cfg.monitor, target, api_keys)
        result.endpoint = deploy(app, cfg.serve, name=cfg.name)
        if data is not None:
            result.prediction = predict(result.endpoint, data.sample_rows, api_key=result.api_key)
    return result


def _trainer(cfg: PipelineConfig, data: PreparedData, storage_path: str) -> FitTrial:
    """Training runs of `cfg` with overrides applied: the train stage's one run, and each tune
    trial's. A closure over plain values, so that a trial unpickling it imports the trainer's
    modules and not this one's (mlflow, Serve: ~2 s of every trial's start on 2 cores)."""
    datasets = {"train": data.train, "valid": data.valid}

    def fit_run(
        overrides: dict[str, Any], run_name: str, callbacks: Sequence[ray.train.UserCallback] = ()
    ) -> TrainOutcome:
        run_cfg = with_values(cfg, overrides)
        return fit(
            run_cfg.model,
            run_cfg.train,
            datasets,
            data.features,
            seed=run_cfg.seed,
            metric=run_cfg.tune.metric,
            mode=run_cfg.tune.mode,
            name=run_name,
            storage_path=storage_path,
            callbacks=callbacks,
            measure_latency="latency_ms" in run_cfg.tune.objectives,
        )

    return fit_run


def _tune(cfg: PipelineConfig, data: PreparedData, name: str, storage_path: str, resume: bool) -> SearchOutcome:
    trial_cpus, cpus = cfg.train.min_workers * cfg.train.cpus_per_worker, cluster_cpus()
    if trial_cpus > cpus:
        raise ValueError(
            f"train.num_workers x train.cpus_per_worker: a trial needs {trial_cpus:g} CPUs and the cluster has {cpus:g}; "
            "lower them or add nodes"
        )
    search = run_search(
        cfg.tune,
        _trainer(cfg, data, storage_path),
        max_epochs=cfg.train.epochs,
        trial_cpus=cfg.train.max_workers * cfg.train.cpus_per_worker,
        cluster_cpus=cpus,
        seed=cfg.seed,
        name=name,
        storage_path=storage_path,
        trial_retries=cfg.train.max_failures,
        resume=resume,
    )
    for trial in search.trials:
        log_trial(trial)
    return search


def _lineage(
    cfg: PipelineConfig, client: mlflow.MlflowClient, model_name: str, run_id: str, data: PreparedData, best: TrainOutcome
) -> dict[str, Any]:
    """Tags that answer, months later, what produced a version: data, config, run, and the
    champion it was registered to challenge (the code version is on the run, see log_run_context)."""
    champion = alias_version(client, model_name, CHAMPION)
    return {
        **best.metrics,
        "tuned_params": json.dumps(best.params),
        "lineage.data_fingerprint": data.validation.fingerprint,
        "lineage.config_sha256": config_digest(cfg),
        "lineage.run_id": run_id,
        "lineage.challenges": str(champion.version) if champion else "none",
    }


def _compress(
    cfg: PipelineConfig, bundle_dir: Path, data: PreparedData, client: mlflow.MlflowClient, result: PipelineResult
) -> CompressReport:
    with tempfile.TemporaryDirectory() as tmp:
        report = compress_bundle(
            cfg.compress, bundle_dir, data.valid, Path(tmp) / INT8_ARTIFACT, cfg.tune.metric, cfg.tune.mode
        )
        if report.accepted:  # a compressed model over the allowed metric drop is never registered
            client.log_artifacts(result.mlflow_run_id, str(Path(tmp) / INT8_ARTIFACT), artifact_path=INT8_ARTIFACT)
    mlflow.log_metrics(report.as_metrics())
    if result.model_version:
        for key, value in {**report.as_metrics(), INT8_ACCEPTED_TAG: str(report.accepted).lower()}.items():
            client.set_model_version_tag(result.model_name, result.model_version, key, str(value))
    return report
