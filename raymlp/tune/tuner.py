"""The tune stage: a search (Optuna TPE, random or grid) with early stopping (ASHA, median rule),
one distributed training run per trial, resumable after the driver dies.

Ray Train V2 does not accept a Trainer as a Tune trainable: each trial runs a small driver function
that builds and fits its own `TorchTrainer`, whose per-epoch reports reach Tune (and the scheduler)
through `TuneReportCallback`. A trial's training run is named after the trial, so a trial restarted
by `Tuner.restore`, or retried by Tune after a failure, resumes its training run from its latest
checkpoint.

Failures are retried by Tune, not by the trial's training run (whose `max_failures` is 0). A trial
that the scheduler stops has its controller killed with it, and the workers die first: a
controller allowed to retry starts a new worker group in a new placement group in the moment
before it dies, which Ray Train's cleaner may never learn of. Each such leak held a CPU until the
search ended; two of them left a 2-CPU machine's next trials waiting for CPUs forever
(benchmarks/hpo_efficiency.py, 5 retries in the first 14 trials of a 24-trial search).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray.train
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import BasicVariantGenerator, Searcher

from raymlp.config.schema import TuneConfig
from raymlp.train.trainer import TrainOutcome
from raymlp.tune.space import build_param_space, decode_params
from raymlp.tune.tpe import TPESearch

log = logging.getLogger(__name__)

FitTrial = Callable[[dict[str, Any], str, Sequence[ray.train.UserCallback]], object]
"""fit_trial(overrides, run_name, callbacks): one training run with `overrides` applied."""

HISTORY_KEYS = ("epoch", "lr", "model_params", "latency_ms")


@dataclass
class TrialSummary:
    trial_id: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    """The trial's best epoch."""
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)
    """Every epoch the trial reported, in order."""
    pareto: bool = True
    """On the Pareto front of `metric` and `tune.objectives` (always, for a single objective)."""


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
    trial_retries: int = 0,
    resume: bool = False,
) -> SearchOutcome:
    """Run the search and return the best checkpoint over every trial and epoch. A trial that fails
    is run again up to `trial_retries` times (-1: no limit), its training resumed from its latest
    checkpoint. `resume` restores the experiment `name` under `storage_path` when one was saved
    there: finished trials are kept, unfinished and errored ones run again (their training resumes
    from its checkpoints)."""

    def trial(sampled: dict[str, Any]) -> None:
        trial_id = tune.get_context().get_trial_id()
        overrides = decode_params(cfg.space, sampled) | {"train.max_failures": 0}  # Tune retries; see above
        fit_trial(overrides, f"{name}-{trial_id}", [TuneReportCallback()])

    # The driver function only waits on its TorchTrainer, whose workers hold the CPUs; reserving a
    # CPU for it too would deadlock a small cluster.
    trainable = tune.with_resources(trial, {"cpu": 0, "memory": 64 * 1024**2})
    path = Path(storage_path) / name
    if resume and tune.Tuner.can_restore(path):
        log.info("tune: restoring the experiment at %s", path)
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        concurrency = cfg.max_concurrent_trials or max(1, int(cluster_cpus // trial_cpus))
        tuner = tune.Tuner(
            trainable,
            param_space=build_param_space(cfg.space, grid=cfg.searcher == "grid"),
            tune_config=tune.TuneConfig(
                num_samples=1 if cfg.searcher == "grid" else cfg.num_samples,
                max_concurrent_trials=concurrency,
                search_alg=build_searcher(cfg, seed, concurrency),
                scheduler=build_scheduler(cfg, max_epochs),
                time_budget_s=cfg.time_budget_s,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=trial_retries),
                verbose=1,
            ),
        )
    return _collect(tuner.fit(), cfg, f"{storage_path}/{name}")


def build_searcher(cfg: TuneConfig, seed: int, concurrency: int) -> Searcher | BasicVariantGenerator:
    """The searcher holds metric and mode itself (not `tune.TuneConfig`): Tune would overwrite a
    multi-objective searcher's list of metrics with the single one given there. The variant
    generator (random, grid) holds the concurrency limit too: Tune ignores `max_concurrent_trials`
    for it, and would start every trial at once."""
    if cfg.searcher == "optuna":
        # Optuna's own 10 random trials would leave a 16-trial search 6 guided ones.
        startup = cfg.startup_trials or min(10, max(2, cfg.num_samples // 4))
        modes = [cfg.mode] + ["min"] * len(cfg.objectives)
        return TPESearch([cfg.metric, *cfg.objectives], modes, seed=seed, startup_trials=startup)
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency)


def build_scheduler(cfg: TuneConfig, max_epochs: int) -> TrialScheduler:
    """Schedulers stop trials on `metric` alone, counted in the epochs trials report: a retried
    trial goes on from its checkpoint's epoch, while Tune's training_iteration starts over."""
    common = {"metric": cfg.metric, "mode": cfg.mode, "time_attr": "epoch"}
    if cfg.scheduler == "asha":
        return ASHAScheduler(**common, max_t=max_epochs, grace_period=cfg.grace_period)
    if cfg.scheduler == "median":
        return MedianStoppingRule(**common, grace_period=cfg.grace_period, min_samples_required=2)
    return FIFOScheduler()


def _collect(grid: tune.ResultGrid, cfg: TuneConfig, where: str) -> SearchOutcome:
    metric, mode = cfg.metric, cfg.mode
    candidates, trials = [], []
    for result in grid:
        if result.error or result.metrics_dataframe is None:
            log.warning("trial failed: %s", result.error)
            continue
        reported = result.metrics_dataframe.dropna(subset=[metric])
        history = [
            {k: float(v) for k, v in row.items() if k in HISTORY_KEYS or k.startswith(("train_", "valid_"))}
            for row in reported.to_dict("records")
        ]
        checkpointed = reported.dropna(subset=[CHECKPOINT_PATH_KEY])
        if checkpointed.empty:
            continue
        best_row = checkpointed.sort_values(metric, ascending=(mode == "min")).iloc[0]
        metrics = {
            k: v.item() for k, v in best_row.items() if k in HISTORY_KEYS or k.startswith(("train_", "valid_"))
        }
        params = decode_params(cfg.space, {k: result.config[k] for k in cfg.space})
        trials.append(TrialSummary(result.metrics["trial_id"], params, metrics, len(history), history))
        candidates.append((metrics, best_row[CHECKPOINT_PATH_KEY], params))
    if not candidates:
        raise RuntimeError(f"tune: no trial finished an epoch with a checkpoint; see the logs under {where}")
    for summary, on_front in zip(trials, pareto_front([t.metrics for t in trials], cfg)):
        summary.pareto = on_front
    pick = min if mode == "min" else max
    metrics, path, params = pick(candidates, key=lambda c: c[0][metric])
    best = TrainOutcome(checkpoint=ray.train.Checkpoint(path), metrics=metrics, params=params)
    return SearchOutcome(best=best, trials=trials)


def pareto_front(points: list[dict[str, float]], cfg: TuneConfig) -> list[bool]:
    """Whether each point is dominated by no other on `metric` and every `objectives` entry."""
    sign = -1.0 if cfg.mode == "max" else 1.0  # compare everything as "lower is better"
    keys = [(cfg.metric, sign)] + [(k, 1.0) for k in cfg.objectives]
    costs = [[s * p[k] for k, s in keys] for p in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    return [not any(dominates(other, c) for other in costs if other is not c) for c in costs]
