"""Tune stage: YAML search spaces, Optuna + ASHA over distributed training trials."""

from raymlp.tune.tuner import SearchOutcome, TrialSummary, run_search

__all__ = ["SearchOutcome", "TrialSummary", "run_search"]
