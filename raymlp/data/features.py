"""The fitted feature transform: statistics from one distributed pass, applied by the same code to a
Ray Dataset batch at training time and to a request at serving time.

Fitted state is plain JSON (no pickle), so it can be read by a person, diffed between versions and
checksummed beside the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.aggregate import Max, Mean, Min, Quantile, Std, Unique, ValueCounter

from raymlp.config.schema import FeaturesConfig

FORMAT_VERSION = 1


@dataclass(frozen=True)
class NumericFeature:
    """Impute, cap, optionally log1p, then scale: `(clean(v) - center) / scale`.

    `center`/`scale` are mean/std, min/range or median/IQR, by `features.scaler`.
    """

    name: str
    fill: float
    lower: float | None = None
    upper: float | None = None
    log1p: bool = False
    """log1p after capping; values below 0 are clipped to 0 first."""
    indicator: bool = False
    """Also emit a 0/1 column marking missing values."""
    center: float = 0.0
    scale: float = 1.0

    def clean(self, values: Any) -> np.ndarray:
        """Imputed, capped and log-transformed values, before scaling."""
        raw = np.asarray(values, dtype=np.float64)
        out = np.where(np.isnan(raw), self.fill, raw)
        if self.lower is not None or self.upper is not None:
            out = np.clip(out, self.lower, self.upper)
        return np.log1p(np.maximum(out, 0.0)) if self.log1p else out


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    categories: list[str]
    other: bool = False
    """Also emit an "other" column for present values outside `categories` (rare or unseen)."""

    @property
    def width(self) -> int:
        return len(self.categories) + self.other

    def encode(self, values: Any) -> np.ndarray:
        text = np.asarray(values, dtype=object)
        hits = text.astype(str)[:, None] == np.asarray(self.categories, dtype=str)[None, :]
        if not self.other:
            return hits
        present = np.fromiter((v is not None for v in text), dtype=bool, count=len(text))
        return np.hstack([hits, (present & ~hits.any(axis=1))[:, None]])


@dataclass(frozen=True)
class FeaturePipeline:
    """Imputation, capping, log and scaling for numeric columns, one-hot for categorical ones, and
    the label vocabulary. Missing categories encode as all zeros; rare and unseen ones as all zeros
    or, with `other`, in the "other" column.
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
        numeric = sum(2 if f.indicator else 1 for f in self.numeric)
        return numeric + sum(f.width for f in self.categorical)

    def transform(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Raw columns (name -> array-like of equal length) to a float32 matrix (rows, output_dim)."""
        parts = []
        for f in self.numeric:
            parts.append(((f.clean(columns[f.name]) - f.center) / f.scale)[:, None])
            if f.indicator:
                parts.append(np.isnan(np.asarray(columns[f.name], dtype=np.float64))[:, None])
        parts += [f.encode(columns[f.name]) for f in self.categorical]
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


def is_numeric(type_: pa.DataType) -> bool:
    return pa.types.is_integer(type_) or pa.types.is_floating(type_)


def select_columns(schema: pa.Schema, label: str, cfg: FeaturesConfig) -> tuple[list[str], list[str]]:
    """Numeric and categorical inputs: as configured, else inferred from the Arrow schema."""
    names = set(schema.names)
    if label not in names:
        raise ValueError(f"data.label: column {label!r} is not in the data; it has {sorted(names)}")
    missing = [c for c in (cfg.numeric or []) + (cfg.categorical or []) if c not in names]
    if missing:
        raise ValueError(f"features: columns {missing} are not in the data; it has {sorted(names)}")
    inputs = [f for f in schema if f.name != label]
    numeric, categorical, unsupported = [], [], []
    for f in inputs:
        if is_numeric(f.type):
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
    train: ray.data.Dataset,
    labels: list[Any],
    label: str,
    numeric: list[str],
    categorical: list[str],
    cfg: FeaturesConfig,
) -> FeaturePipeline:
    """Fit every statistic on `train` with Ray Data aggregations, never collecting rows on the driver.

    Two passes, as an imputer, a capper and a scaler fitted in sequence would: the first gives the
    fill values, fences and category counts on raw data; the second the scaling statistics of the
    imputed, capped (and log-transformed) values.
    """
    unknown = sorted(set(cfg.log1p) - set(numeric))
    if unknown:
        raise ValueError(f"features.log1p: {unknown} are not numeric inputs; choose from {numeric}")
    raw = train.aggregate(*_raw_aggregations(numeric, categorical, cfg)) if numeric or categorical else {}
    cleaners = [_cleaner(c, raw, cfg) for c in numeric]
    numeric_features = []
    if cleaners:

        def clean(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {f.name: f.clean(batch[f.name]) for f in cleaners}

        aggs = [a for f in cleaners for a in _scaler_aggregations(f.name, cfg.scaler)]
        stats = train.select_columns(numeric).map_batches(clean, batch_format="numpy").aggregate(*aggs)
        numeric_features = [replace(f, **_center_scale(f.name, stats, cfg.scaler)) for f in cleaners]
    categorical_features = []
    for c in categorical:
        counts = raw[f"counts:{c}"]
        ranked = sorted(
            ((n, str(v)) for v, n in zip(counts["values"], counts["counts"]) if v is not None),
            key=lambda item: (-item[0], item[1]),
        )
        top = sorted(v for _, v in ranked[: cfg.max_categories])
        categorical_features.append(CategoricalFeature(c, top, other=cfg.other_bucket))
    return FeaturePipeline(label=label, classes=labels, numeric=numeric_features, categorical=categorical_features)


def _scaler_aggregations(c: str, scaler: str) -> list[Any]:
    if scaler == "standard":
        return [Mean(c, alias_name=f"center:{c}"), Std(c, ddof=0, alias_name=f"scale:{c}")]
    if scaler == "minmax":
        return [Min(c, alias_name=f"center:{c}"), Max(c, alias_name=f"max:{c}")]
    return [Quantile(c, q=q, alias_name=f"q{q}:{c}") for q in (0.25, 0.5, 0.75)]


def _center_scale(c: str, stats: dict[str, Any], scaler: str) -> dict[str, float]:
    """A constant (or all-null) column gets scale 1, so it encodes as zeros rather than NaN."""
    if scaler == "standard":
        center, scale = stats[f"center:{c}"], stats[f"scale:{c}"]
    elif scaler == "minmax":
        center = stats[f"center:{c}"]
        scale = None if center is None else stats[f"max:{c}"] - center
    else:
        center = stats[f"q0.5:{c}"]
        scale = None if center is None else stats[f"q0.75:{c}"] - stats[f"q0.25:{c}"]
    return {"center": float(center or 0.0), "scale": float(scale or 0.0) or 1.0}


def _raw_aggregations(numeric: list[str], categorical: list[str], cfg: FeaturesConfig) -> list[Any]:
    quantiles = {"iqr": [0.25, 0.75], "quantile": list(cfg.cap_quantiles)}.get(cfg.cap, [])
    if cfg.impute == "median":
        quantiles.append(0.5)
    aggs: list[Any] = []
    for c in numeric:
        aggs += [Mean(c, alias_name=f"mean:{c}"), Std(c, ddof=0, alias_name=f"std:{c}")]
        aggs += [Quantile(c, q=q, alias_name=f"q{q}:{c}") for q in quantiles]
    return aggs + [ValueCounter(c, alias_name=f"counts:{c}") for c in categorical]


def _cleaner(c: str, raw: dict[str, Any], cfg: FeaturesConfig) -> NumericFeature:
    """Fill and fences for column `c` from the raw statistics (an all-null column fills with 0)."""
    mean, std = float(raw[f"mean:{c}"] or 0.0), float(raw[f"std:{c}"] or 0.0)
    fill = {"mean": mean, "median": float(raw.get(f"q0.5:{c}") or 0.0), "constant": cfg.fill_value}[cfg.impute]
    lower = upper = None
    if cfg.cap == "iqr":
        q1, q3 = float(raw[f"q0.25:{c}"] or 0.0), float(raw[f"q0.75:{c}"] or 0.0)
        lower, upper = q1 - cfg.cap_iqr_k * (q3 - q1), q3 + cfg.cap_iqr_k * (q3 - q1)
    elif cfg.cap == "quantile":
        lo, hi = cfg.cap_quantiles
        lower, upper = float(raw[f"q{lo}:{c}"] or 0.0), float(raw[f"q{hi}:{c}"] or 0.0)
    elif cfg.cap == "zscore":
        lower, upper = mean - cfg.cap_z * std, mean + cfg.cap_z * std
    return NumericFeature(
        c, fill=fill, lower=lower, upper=upper, log1p=c in cfg.log1p, indicator=cfg.missing_indicators
    )


def label_classes(ds: ray.data.Dataset, label: str) -> list[Any]:
    """The sorted label vocabulary over the whole dataset, so a class seen only in validation still maps."""
    values = ds.aggregate(Unique(label, alias_name="labels"))["labels"]
    if any(v is None for v in values):
        raise ValueError(f"data.label: column {label!r} has missing values")
    return sorted(v.item() if hasattr(v, "item") else v for v in values)
