"""The tune stage: Optuna TPE search with ASHA early stopping, one distributed training run per trial.

Ray Train V2 does not accept a Trainer as a Tune trainable: each trial runs a small driver function
that builds and fits its own `TorchTrainer`, whose per-epoch reports reach Tune (and ASHA) through
`TuneReportCallback`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray.train
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from raymlp.config.schema import TuneConfig
from raymlp.train.trainer import TrainOutcome
from raymlp.tune.space import build_param_space, decode_params

log = logging.getLogger(__name__)

FitTrial = Callable[[dict[str, Any], str, Sequence[ray.train.UserCallback]], object]
"""fit_trial(overrides, run_name, callbacks): one training run with `overrides` applied."""


@dataclass
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    epochs: int


@dataclass
class SearchOutcome:
    best: TrainOutcome
    trials: list[TrialSummary]


def run_search(
    cfg: TuneConfig,
    fit_trial: FitTrial,
    *,
    max_epochs: int,
    trial_cpus: float,
    cluster_cpus: float,
    seed: int,
    name: str,
    storage_path: str,
) -> SearchOutcome:
    """Run `cfg.num_samples` trials and return the best checkpoint over every trial and epoch."""
    metric, mode = cfg.metric, cfg.mode

    def trial(sampled: dict[str, Any]) -> None:
        trial_id = tune.get_context().get_trial_id()
        fit_trial(decode_params(cfg.space, sampled), f"{name}-{trial_id}", [TuneReportCallback()])

    concurrency = cfg.max_concurrent_trials or max(1, int(cluster_cpus // trial_cpus))
    tuner = tune.Tuner(
        # The driver function only waits on its TorchTrainer, whose workers hold the CPUs;
        # reserving a CPU for it too would deadlock a small cluster.
        tune.with_resources(trial, {"cpu": 0, "memory": 64 * 1024**2}),
        param_space=build_param_space(cfg.space),
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            num_samples=cfg.num_samples,
            max_concurrent_trials=concurrency,
            search_alg=OptunaSearch(seed=seed),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_epochs, grace_period=cfg.grace_period),
        ),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=1),
    )
    grid = tuner.fit()
    candidates, trials = [], []
    for result in grid:
        if result.error or result.metrics_dataframe is None:
            log.warning("trial failed: %s", result.error)
            continue
        history = result.metrics_dataframe.dropna(subset=[metric, CHECKPOINT_PATH_KEY])
        params = decode_params(cfg.space, {k: result.config[k] for k in cfg.space})
        best_row = history.sort_values(metric, ascending=(mode == "min")).iloc[0]
        metrics = {k: v.item() for k, v in best_row.items() if k == "epoch" or k.startswith(("train_", "valid_"))}
        trials.append(TrialSummary(result.metrics["trial_id"], params, metrics, len(history)))
        candidates.append((metrics, best_row[CHECKPOINT_PATH_KEY], params))
    if not candidates:
        raise RuntimeError(f"tune: all {cfg.num_samples} trials failed; see the logs under {storage_path}/{name}")
    pick = min if mode == "min" else max
    metrics, path, params = pick(candidates, key=lambda c: c[0][metric])
    best = TrainOutcome(checkpoint=ray.train.Checkpoint(path), metrics=metrics, params=params)
    return SearchOutcome(best=best, trials=trials)
