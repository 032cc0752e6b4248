"""The fitted feature transform: statistics from one distributed pass, applied by the same code to a
Ray Dataset batch at training time and to a request at serving time.

Fitted state is plain JSON (no pickle), so it can be read by a person, diffed between versions and
checksummed beside the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.aggregate import Mean, Std, Unique, ValueCounter

from raymlp.config.schema import FeaturesConfig

FORMAT_VERSION = 1


@dataclass(frozen=True)
class NumericFeature:
    name: str
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    categories: list[str]


@dataclass(frozen=True)
class FeaturePipeline:
    """Standard scaling for numeric columns, one-hot for categorical ones, and the label vocabulary.

    Missing numeric values become the training mean (0 after scaling); missing, rare and unseen
    categories encode as all zeros.
    """

    label: str
    classes: list[Any]
    numeric: list[NumericFeature] = field(default_factory=list)
    categorical: list[CategoricalFeature] = field(default_factory=list)

    @property
    def input_columns(self) -> list[str]:
        return [f.name for f in self.numeric] + [f.name for f in self.categorical]

    @property
    def output_dim(self) -> int:
        return len(self.numeric) + sum(len(f.categories) for f in self.categorical)

    def transform(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Raw columns (name -> array-like of equal length) to a float32 matrix (rows, output_dim)."""
        parts = []
        for f in self.numeric:
            values = np.asarray(columns[f.name], dtype=np.float64)
            parts.append(np.nan_to_num((values - f.mean) / f.std, nan=0.0)[:, None])
        for f in self.categorical:
            values = np.asarray(columns[f.name], dtype=object).astype(str)
            parts.append(values[:, None] == np.asarray(f.categories, dtype=str)[None, :])
        return np.hstack(parts).astype(np.float32)

    def encode_labels(self, values: Any) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.fromiter((index[v] for v in np.asarray(values).tolist()), dtype=np.int64)

    def transform_xy(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A Ray Data batch to model inputs `x` and class indices `y`."""
        return {"x": self.transform(batch), "y": self.encode_labels(batch[self.label])}

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeaturePipeline:
        state = json.loads(text)
        version = state.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"feature pipeline format {version} is not supported (expected {FORMAT_VERSION})")
        return cls(
            label=state["label"],
            classes=state["classes"],
            numeric=[NumericFeature(**f) for f in state["numeric"]],
            categorical=[CategoricalFeature(**f) for f in state["categorical"]],
        )


def select_columns(schema: pa.Schema, label: str, cfg: FeaturesConfig) -> tuple[list[str], list[str]]:
    """Numeric and categorical inputs: as configured, else inferred from the Arrow schema."""
    names = set(schema.names)
    missing = [c for c in (cfg.numeric or []) + (cfg.categorical or []) + [label] if c not in names]
    if missing:
        raise ValueError(f"features: columns {missing} are not in the data; it has {sorted(names)}")
    inputs = [f for f in schema if f.name != label]
    numeric, categorical, unsupported = [], [], []
    for f in inputs:
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            numeric.append(f.name)
        elif pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_boolean(f.type):
            categorical.append(f.name)
        else:
            unsupported.append(f"{f.name} ({f.type})")
    if unsupported and cfg.numeric is None and cfg.categorical is None:
        raise ValueError(
            f"features: cannot infer how to encode {unsupported}; "
            "list the inputs in features.numeric and features.categorical"
        )
    numeric = cfg.numeric if cfg.numeric is not None else numeric
    categorical = cfg.categorical if cfg.categorical is not None else categorical
    if not numeric and not categorical:
        raise ValueError("features: no input columns; set features.numeric or features.categorical")
    return list(numeric), list(categorical)


def fit_feature_pipeline(
    train: ray.data.Dataset, labels: list[Any], label: str, numeric: list[str], categorical: list[str], max_categories: int
) -> FeaturePipeline:
    """Fit scaling and category vocabularies on `train` in one distributed aggregation pass."""
    aggs = [Mean(c, alias_name=f"mean:{c}") for c in numeric]
    aggs += [Std(c, ddof=0, alias_name=f"std:{c}") for c in numeric]
    aggs += [ValueCounter(c, alias_name=f"counts:{c}") for c in categorical]
    stats = train.aggregate(*aggs) if aggs else {}
    numeric_features = [
        NumericFeature(c, float(stats[f"mean:{c}"] or 0.0), float(stats[f"std:{c}"] or 0.0) or 1.0) for c in numeric
    ]
    categorical_features = []
    for c in categorical:
        counts = stats[f"counts:{c}"]
        ranked = sorted(
            ((n, str(v)) for v, n in zip(counts["values"], counts["counts"]) if v is not None),
            key=lambda item: (-item[0], item[1]),
        )
        categorical_features.append(CategoricalFeature(c, sorted(v for _, v in ranked[:max_categories])))
    return FeaturePipeline(label=label, classes=labels, numeric=numeric_features, categorical=categorical_features)


def label_classes(ds: ray.data.Dataset, label: str) -> list[Any]:
    """The sorted label vocabulary over the whole dataset, so a class seen only in validation still maps."""
    values = ds.aggregate(Unique(label, alias_name="labels"))["labels"]
    if any(v is None for v in values):
        raise ValueError(f"data.label: column {label!r} has missing values")
    return sorted(v.item() if hasattr(v, "item") else v for v in values)
