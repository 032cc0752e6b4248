"""Feature selection decisions as pure functions over statistics or a bounded sample.

The caller gathers what these need with Ray (per-block `Moments` summed across the dataset, variances
from an aggregation, a capped sample for the model-based scores) and passes numpy here, so every rule is
unit-testable without a cluster and deterministic given its inputs and seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Task = Literal["classification", "regression"]


@dataclass(frozen=True, eq=False)
class Moments:
    """Count, mean and centred co-moment of d columns: a mergeable summary for a distributed covariance.

    Stores the centred co-moment rather than raw sums of products, and merges with Chan et al.'s update,
    because raw sums cancel catastrophically for columns with large offsets (epoch seconds, ids).
    """

    n: int
    mean: np.ndarray
    """(d,) column means."""
    comoment: np.ndarray
    """(d, d) sum over rows of (x - mean) outer (x - mean)."""

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """Moments of a (rows, d) block. Rows with NaN in any column are skipped: pass imputed values."""
        block = np.asarray(x, dtype=np.float64)
        if block.ndim != 2:
            raise ValueError(f"Moments.of expects a (rows, columns) block, got shape {block.shape}")
        block = block[~np.isnan(block).any(axis=1)]
        d = block.shape[1]
        if len(block) == 0:
            return cls(0, np.zeros(d), np.zeros((d, d)))
        mean = block.mean(axis=0)
        centred = block - mean
        return cls(len(block), mean, centred.T @ centred)

    def __add__(self, other: Moments) -> Moments:
        if self.mean.shape != other.mean.shape:
            raise ValueError(f"cannot combine moments of {self.mean.size} and {other.mean.size} columns")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        comoment = self.comoment + other.comoment + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, comoment)

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """(d, d) covariance; `ddof=1` as `np.cov`."""
        if self.n <= ddof:
            raise ValueError(f"covariance needs more than {ddof} complete row(s), got {self.n}")
        return self.comoment / (self.n - ddof)

    def correlation(self) -> np.ndarray:
        """(d, d) Pearson correlation; a zero-variance column correlates 0 with others (not NaN), 1 with itself."""
        cov = self.covariance()
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        with np.errstate(all="ignore"):
            corr = cov / np.outer(std, std)
        corr[~np.isfinite(corr)] = 0.0
        np.fill_diagonal(corr, 1.0)
        return np.clip(corr, -1.0, 1.0)


def variance_keep(names: Sequence[str], variances: Sequence[float], threshold: float = 0.0) -> list[str]:
    """Names whose variance is above `threshold`, as scikit-learn's VarianceThreshold; NaN (all missing) is dropped."""
    var = _aligned(names, variances, "variances")
    return [n for n, v in zip(names, var) if v > threshold]


def correlation_keep(names: Sequence[str], corr: np.ndarray, threshold: float) -> list[str]:
    """Greedy, order-dependent de-duplication: walk `names` in order and drop a column whose |r| with an
    already kept column exceeds `threshold`. The first of a correlated group survives, so list the
    preferred (cheaper, more interpretable) columns first. NaN correlations count as uncorrelated.
    """
    r = np.abs(np.asarray(corr, dtype=np.float64))
    if r.shape != (len(names), len(names)):
        raise ValueError(f"correlation matrix has shape {r.shape}, expected {(len(names), len(names))}")
    kept: list[int] = []
    for i in range(len(names)):
        if not (r[i, kept] > threshold).any():
            kept.append(i)
    return [names[i] for i in kept]


def mutual_information(x: np.ndarray, y: np.ndarray, discrete: Sequence[bool], task: Task, seed: int) -> np.ndarray:
    """(d,) mutual information of each column of `x` (rows, d) with `y`, by scikit-learn's k-NN estimator.

    `discrete` marks columns holding codes rather than measurements; the estimator treats them by counting.
    """
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    x = np.asarray(x, dtype=np.float64)
    mask = np.asarray(discrete, dtype=bool)
    if mask.shape != (x.shape[1],):
        raise ValueError(f"discrete has {mask.size} flags for {x.shape[1]} columns")
    estimator = {"classification": mutual_info_classif, "regression": mutual_info_regression}[_check_task(task)]
    return estimator(x, np.asarray(y), discrete_features=mask, random_state=seed)


def model_importance(x: np.ndarray, y: np.ndarray, task: Task, seed: int) -> np.ndarray:
    """(d,) impurity importances of 50 extremely randomised trees, which see interactions that MI misses.

    One job so the caller, already inside a Ray task, controls parallelism.
    """
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

    model_cls = {"classification": ExtraTreesClassifier, "regression": ExtraTreesRegressor}[_check_task(task)]
    model = model_cls(n_estimators=50, random_state=seed, n_jobs=1)
    return model.fit(np.asarray(x, dtype=np.float64), np.asarray(y)).feature_importances_


def top_k(names: Sequence[str], scores: Sequence[float], k: int) -> list[str]:
    """The `k` highest-scoring names (ties by name, NaN lowest), returned in their original order."""
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    score = _aligned(names, scores, "scores")
    score = np.where(np.isnan(score), -np.inf, score)
    best = sorted(range(len(names)), key=lambda i: (-score[i], names[i]))[:k]
    return [names[i] for i in sorted(best)]


def _aligned(names: Sequence[str], values: Sequence[float], what: str) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    if out.shape != (len(names),):
        raise ValueError(f"{what} has shape {out.shape}, expected one per name ({len(names)})")
    return out


def _check_task(task: str) -> str:
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    return task
