"""Drift of served or new inputs against the training reference (`raymlp.data.reference`): PSI
and KS per feature, and prediction drift.

New rows reduce to counts (`count_rows`): per numeric feature, rows per percentile bin of the
reference plus missing; per categorical feature, rows per category plus other and missing. Counts
add, so a served window, a Ray Data block and a whole dataset are scored by the same code (`score`):
PSI over the reference's deciles (ties in a lumpy column merge bins) plus a missing bin, and the
KS statistic at the reference's percentiles (the reference CDF is known there to within ~0.5% of
rank, from the fitting pass's 50,000-row uniform sample, so KS is exact to within a percentile's width).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlp.config.schema import DriftConfig
from raymlp.data.features import FeaturePipeline, category_text
from raymlp.data.reference import PERCENTILES, CategoryReference, DriftReference, NumericReference

DECILES = list(range(10, 100, 10))
"""Indexes into PERCENTILES of the interior PSI bin edges."""
EPSILON = 1e-4
"""Floor of a bin's fraction in PSI, so that an empty bin costs a finite amount."""
PREDICTION_KEY = "__prediction__"
"""The counts of predictions, beside the features' counts."""


# ------------------------------------------------------------------------------------ counting


def numeric_counts(ref: NumericReference, values: Any) -> np.ndarray:
    """Rows per percentile bin of `ref` (bin i holds q[i-1] < v <= q[i]; the first and last are
    open-ended), then missing (null or NaN) rows: len(PERCENTILES) + 2 counts."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_numpy(zero_copy_only=False)
    x = np.asarray(values, dtype=np.float64)
    present = x[~np.isnan(x)]
    bins = np.bincount(np.searchsorted(ref.quantiles, present, side="left"), minlength=len(PERCENTILES) + 1)
    return np.append(bins, len(x) - len(present))


def category_counts(ref: CategoryReference, values: Any) -> np.ndarray:
    """Rows per category of `ref`, then other and missing rows."""
    text = category_text(values)
    codes = pc.index_in(text, value_set=pa.array(ref.categories, pa.string()))
    known = pc.drop_null(codes).to_numpy(zero_copy_only=False)
    missing = text.null_count
    per_category = np.bincount(known, minlength=len(ref.categories))
    return np.append(per_category, [len(text) - len(known) - missing, missing])


def count_rows(ref: DriftReference, columns: Mapping[str, Any], predictions: Any = None) -> dict[str, np.ndarray]:
    """Counts of one set of rows (`columns` with derived and datetime columns computed, see
    `FeaturePipeline.expand`), and of their predictions when given. Counts of sets of rows add."""
    counts = {f.name: numeric_counts(f, columns[f.name]) for f in ref.numeric}
    counts |= {f.name: category_counts(f, columns[f.name]) for f in ref.categorical}
    if predictions is not None and ref.prediction is not None:
        counter = numeric_counts if isinstance(ref.prediction, NumericReference) else category_counts
        counts[PREDICTION_KEY] = counter(ref.prediction, predictions)
    return counts


def add_counts(a: dict[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: a[name] + b[name] if name in a else b[name] for name in a.keys() | b.keys()}


# ------------------------------------------------------------------------------------- scoring


Kind = Literal["numeric", "categorical", "prediction"]


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    kind: Kind
    rows: int
    psi: float
    ks: float | None
    """Numeric only: the largest gap between the new and the reference CDF over present values."""
    drifted: bool
    expected: list[float]
    """Fractions per PSI bin: the reference's, then the new rows' (for plots and reports)."""
    actual: list[float]
    bins: list[str]


@dataclass(frozen=True)
class DriftReport:
    rows: int
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    thresholds: dict[str, float]

    @property
    def drifted(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def alarms(self) -> list[str]:
        """The drifted features, and `predictions` when the predictions drifted: what triggers a
        retrain and fails `raymlp drift --fail-on-drift`."""
        return self.drifted + (["predictions"] if self.prediction and self.prediction.drifted else [])

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "drifted": self.drifted, "thresholds": self.thresholds,
                "features": [asdict(f) for f in self.features],
                "prediction": asdict(self.prediction) if self.prediction else None}  # fmt: skip


def score(ref: DriftReference, counts: Mapping[str, np.ndarray], cfg: DriftConfig = DriftConfig()) -> DriftReport:
    """PSI (and KS for numeric features) of counted rows against the reference, flagged by `cfg`'s
    thresholds. Fewer rows than `cfg.min_rows` are reported, never flagged: a handful of rows
    always looks drifted."""
    features = [_numeric_drift(f, counts[f.name], cfg, "numeric") for f in ref.numeric if f.name in counts]
    features += [_category_drift(f, counts[f.name], cfg, "categorical") for f in ref.categorical if f.name in counts]
    prediction = None
    if ref.prediction is not None and PREDICTION_KEY in counts:
        scorer = _numeric_drift if isinstance(ref.prediction, NumericReference) else _category_drift
        prediction = scorer(ref.prediction, counts[PREDICTION_KEY], cfg, "prediction")
    rows = int(next(iter(counts.values())).sum()) if counts else 0
    thresholds = {"psi": cfg.psi_threshold, "ks": cfg.ks_threshold, "min_rows": cfg.min_rows}
    return DriftReport(rows, features, prediction, thresholds)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (fractions)."""
    e, a = np.maximum(expected, EPSILON), np.maximum(actual, EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _numeric_drift(ref: NumericReference, counts: np.ndarray, cfg: DriftConfig, kind: Kind) -> FeatureDrift:
    rows = int(counts.sum())
    bins, missing = counts[:-1], counts[-1]
    # The reference CDF at each distinct quantile: where a lumpy column repeats a value over
    # several percentiles, the value holds all of them, so it takes the last one's.
    q = np.asarray(ref.quantiles)
    last = np.searchsorted(q, q, side="right") - 1
    cdf_ref = np.asarray(PERCENTILES)[last]
    below = np.cumsum(bins)[: len(q)]  # new rows at or below each quantile
    present = int(bins.sum())
    ks = float(np.max(np.abs(below[last] / present - cdf_ref))) if present else None

    edges = np.unique(last[DECILES])  # PSI bin upper edges, as quantile indexes
    cum_new = np.concatenate([[0], below[edges], [present]])
    cum_ref = np.concatenate([[0.0], cdf_ref[edges], [1.0]])
    scale = max(rows, 1)
    actual = np.append(np.diff(cum_new) / scale, missing / scale)
    expected = np.append(np.diff(cum_ref) * (1.0 - ref.missing), ref.missing)
    value = psi(expected, actual)
    labels = [f"<={q[i]:.4g}" for i in edges] + [f">{q[edges[-1]]:.4g}", "missing"]
    drifted = rows >= cfg.min_rows and (value >= cfg.psi_threshold or (ks is not None and ks >= cfg.ks_threshold))
    return FeatureDrift(ref.name, kind, rows, _round(value), _round(ks), drifted, _list(expected), _list(actual), labels)


def _category_drift(ref: CategoryReference, counts: np.ndarray, cfg: DriftConfig, kind: Kind) -> FeatureDrift:
    rows = int(counts.sum())
    expected = np.asarray([*ref.fractions, ref.other, ref.missing])
    actual = counts / max(rows, 1)
    value = psi(expected, actual)
    drifted = rows >= cfg.min_rows and value >= cfg.psi_threshold
    labels = [*ref.categories, "other", "missing"]
    return FeatureDrift(ref.name, kind, rows, _round(value), None, drifted, _list(expected), _list(actual), labels)


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _list(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]


# ------------------------------------------------------------------------------ serving window


class DriftWindow:
    """The latest served rows (at least `rows` of them, whole batches) and their predictions.

    Adding a batch keeps references only, so the request path pays for no counting; `score` counts
    the window when asked (every few seconds, off the event loop).
    """

    def __init__(self, features: FeaturePipeline, rows: int):
        if features.reference is None:
            raise ValueError("the model's feature transform has no drift reference (fitted before drift references existed): retrain it to monitor drift")
        self.features = features
        self.reference = features.reference
        self.rows = rows
        self.batches: deque[tuple[Mapping[str, Sequence[Any]], np.ndarray, int]] = deque()
        self.held = 0

    def add(self, columns: Mapping[str, Sequence[Any]], predictions: np.ndarray) -> None:
        self.batches.append((columns, predictions, len(predictions)))
        self.held += len(predictions)
        while self.held - self.batches[0][2] >= self.rows:
            self.held -= self.batches.popleft()[2]

    def snapshot(self) -> list[tuple[Mapping[str, Sequence[Any]], np.ndarray, int]]:
        return list(self.batches)

    def score(self, batches: list[tuple[Mapping[str, Sequence[Any]], np.ndarray, int]], cfg: DriftConfig) -> DriftReport:
        names = self.features.input_columns
        columns = {n: [v for b, _, _ in batches for v in b[n]] for n in names}
        predictions = np.concatenate([p for _, p, _ in batches]) if batches else np.array([])
        return score(self.reference, count_rows(self.reference, self.features.expand(columns), predictions), cfg)
