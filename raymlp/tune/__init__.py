"""Tune stage: YAML search spaces, Optuna + ASHA over distributed training trials."""

from raymlp.tune.tuner import FitTrial, SearchOutcome, TrialSummary, run_search

__all__ = ["FitTrial", "SearchOutcome", "TrialSummary", "run_search"]
