"""The training reference that drift is measured against, fitted with the feature transform and
kept inside it (`FeaturePipeline.reference`), so every model bundle carries what it was trained on:
per numeric feature its quantiles at every percentile and its missing fraction, per categorical
feature the frequency of each fitted category, of other values and of missing ones, and the label's
distribution (what predictions are compared with). Plain JSON, like the rest of the transform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = [i / 100 for i in range(101)]
"""Where the reference keeps each numeric feature's quantiles."""


@dataclass(frozen=True)
class NumericReference:
    name: str
    quantiles: list[float]
    """At PERCENTILES, over the present training values."""
    missing: float


@dataclass(frozen=True)
class CategoryReference:
    name: str
    categories: list[str]
    fractions: list[float]
    """Of all training rows, per category; `other` and `missing` make up the rest."""
    other: float = 0.0
    missing: float = 0.0


@dataclass(frozen=True)
class DriftReference:
    """The training distribution new rows are compared with."""

    rows: int
    numeric: list[NumericReference] = field(default_factory=list)
    categorical: list[CategoryReference] = field(default_factory=list)
    prediction: CategoryReference | NumericReference | None = None
    """Label frequencies (classification) or label quantiles (regression) of the training rows."""

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> DriftReference:
        prediction = state.get("prediction")
        if prediction is not None:
            prediction = NumericReference(**prediction) if "quantiles" in prediction else CategoryReference(**prediction)
        return cls(
            rows=state["rows"],
            numeric=[NumericReference(**f) for f in state["numeric"]],
            categorical=[CategoryReference(**f) for f in state["categorical"]],
            prediction=prediction,
        )


def numeric_reference(name: str, quantiles: Sequence[float] | None, present: int, rows: int) -> NumericReference | None:
    """From quantiles at PERCENTILES; None for a column with no value to compare with."""
    if not quantiles or not rows:
        return None
    return NumericReference(name, [float(q) for q in quantiles], missing=1.0 - present / rows)


def category_reference(name: str, categories: Sequence[str], counts: Mapping[str | None, int], rows: int) -> CategoryReference:
    """From the training rows per value (None: missing); values outside `categories` are other."""
    kept = [counts.get(c, 0) for c in categories]
    missing = counts.get(None, 0)
    total = max(rows, 1)
    return CategoryReference(
        name, list(categories), [n / total for n in kept], other=(rows - sum(kept) - missing) / total,
        missing=missing / total,
    )  # fmt: skip
