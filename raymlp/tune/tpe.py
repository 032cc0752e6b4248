"""Optuna's TPE as a Ray Tune searcher that learns from trials while they run.

Ray's `OptunaSearch` tells TPE about a trial only when it ends; until then Optuna's constant liar
counts it among the worst. Under ASHA the trials worth waiting for are the long ones: a large model
that leads after its first epoch stays "worst" for its whole run, and TPE keeps drawing near the
cheap trials that already finished (benchmarks/hpo_efficiency.py saw five such draws in a row while
the leader ran). Here every trial counts at the latest epoch it reported, whether it still runs, was
stopped by the scheduler or finished (Ray, too, counts a stopped trial at its last epoch); only a
trial that has not reported yet is lied about.

A finished Optuna trial cannot change its value, so each suggestion asks a fresh in-memory study
holding every trial seen so far, with a fresh `TPESampler` seeded from the search's seed and the
number of suggestions made: the same reports give the same trials.
"""

from __future__ import annotations

import logging
import math
import pickle
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

# One study per suggestion: Optuna's in-memory storage would log each one's creation.
logging.getLogger("optuna.storages._in_memory").setLevel(logging.WARNING)


class TPESearch(Searcher):
    """TPE over the Tune search space, on `metrics` (more than one: multi-objective TPE)."""

    def __init__(self, metrics: list[str], modes: list[Literal["min", "max"]], *, seed: int, startup_trials: int):
        super().__init__(metric=metrics[0], mode=modes[0])
        self._metrics = metrics
        self._directions = ["minimize" if mode == "min" else "maximize" for mode in modes]
        self._seed = seed
        self._startup_trials = startup_trials
        self._space: dict[str, BaseDistribution] = {}
        self._params: dict[str, dict[str, Any]] = {}
        """Every live or finished trial, by Tune trial id; failed ones are forgotten."""
        self._latest: dict[str, list[float]] = {}
        """Each trial's latest reported values of `metrics`."""
        self._suggested = 0

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Take the space from the Tuner's `param_space` (Tune domains, as `OptunaSearch` does)."""
        self._space = OptunaSearch.convert_search_space(config)
        return True

    def suggest(self, trial_id: str) -> dict[str, Any]:
        seed = int(np.random.SeedSequence([self._seed, self._suggested]).generate_state(1)[0])
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=self._startup_trials, constant_liar=True)
        study = optuna.create_study(directions=self._directions, sampler=sampler)
        study.add_trials([self._as_optuna_trial(seen) for seen in self._params])
        self._params[trial_id] = study.ask(self._space).params
        self._suggested += 1
        return dict(self._params[trial_id])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if values := self._values(result):
            self._latest[trial_id] = values

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """A failed trial, or one that never reported, is forgotten, as Optuna's TPE ignores
        failed trials; otherwise the trial keeps its last values."""
        self.on_trial_result(trial_id, result or {})
        if error or trial_id not in self._latest:
            self._params.pop(trial_id, None)
            self._latest.pop(trial_id, None)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    def _values(self, result: dict) -> list[float] | None:
        values = [result.get(metric) for metric in self._metrics]
        if any(v is None or not math.isfinite(v) for v in values):
            return None
        return [float(v) for v in values]

    def _as_optuna_trial(self, trial_id: str) -> FrozenTrial:
        values = self._latest.get(trial_id)
        return optuna.trial.create_trial(
            params=self._params[trial_id],
            distributions=self._space,
            values=values,
            state=TrialState.COMPLETE if values else TrialState.RUNNING,
        )
