"""The fitted feature transform: applied by the same code to a Ray Data batch at training and batch
inference time and to a request at serving time, so both see identical numbers.

Fitted state is plain JSON (no pickle), so it can be read by a person, diffed between versions and
checksummed beside the model. Order of operations per batch: derived columns and datetime parts are
computed from the raw columns; then numeric inputs are imputed, capped, log- or power-transformed
and scaled (and optionally bucketized); categorical inputs are one-hot, ordinal or hash encoded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlp.data.encoders import (
    bucket_indices,
    datetime_parts,
    hash_buckets,
    one_hot,
    yeo_johnson,
)
from raymlp.data.expressions import compile_expression
from raymlp.data.reference import DriftReference

FORMAT_VERSION = 4
"""4 added the drift reference; a format 3 transform (without one) still loads."""
READABLE_VERSIONS = (3, 4)


@dataclass(frozen=True)
class DerivedFeature:
    """A numeric column computed from others by an arithmetic expression (see expressions.py)."""

    name: str
    expression: str

    @property
    def sources(self) -> list[str]:
        return compile_expression(self.expression).columns


@dataclass(frozen=True)
class DatetimeFeature:
    """Numeric columns `<name>_<part>` extracted from a timestamp column."""

    name: str
    parts: list[str]

    @property
    def outputs(self) -> list[str]:
        return [f"{self.name}_{p}" for p in self.parts]


@dataclass(frozen=True)
class NumericFeature:
    """Impute, cap, optionally log1p or Yeo-Johnson, then scale: `(clean(v) - center) / scale`.

    `center`/`scale` are mean/std, min/range or median/IQR, by `features.scaler`.
    """

    name: str
    fill: float
    lower: float | None = None
    upper: float | None = None
    log1p: bool = False
    """log1p after capping; values below 0 are clipped to 0 first."""
    power: float | None = None
    """Yeo-Johnson lambda, applied after capping."""
    indicator: bool = False
    """Also emit a 0/1 column marking missing values."""
    center: float = 0.0
    scale: float = 1.0

    def clean(self, values: Any) -> np.ndarray:
        """Imputed, capped and log- or power-transformed values, before scaling."""
        out = np.array(values, dtype=np.float64)  # a copy: the steps below work in place...
        if not out.flags.writeable:  # ...but a pyarrow ChunkedArray hands numpy a read-only view
            out = out.copy()
        np.copyto(out, self.fill, where=np.isnan(out))
        if self.lower is not None or self.upper is not None:
            np.clip(out, self.lower, self.upper, out=out)
        if self.log1p:
            return np.log1p(np.maximum(out, 0.0))
        return yeo_johnson(out, self.power) if self.power is not None else out


@dataclass(frozen=True)
class BucketFeature:
    """One-hot of the range a raw numeric value falls in: len(edges) + 1 buckets; missing is all zeros."""

    name: str
    edges: list[float]

    @property
    def width(self) -> int:
        return len(self.edges) + 1

    def encode(self, values: Any, out: np.ndarray | None = None) -> np.ndarray:
        return one_hot(bucket_indices(np.asarray(values, dtype=np.float64), self.edges), self.width, out)


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    categories: list[str]
    encoding: Literal["onehot", "ordinal"] = "onehot"
    """One-hot columns, or one column holding the category's index (-1: missing or unseen)."""
    other: bool = False
    """One-hot only: also emit an "other" column for present values outside `categories`."""
    fill: str | None = None
    """The category a missing value takes (mode imputation); None leaves it missing."""

    @property
    def width(self) -> int:
        return 1 if self.encoding == "ordinal" else len(self.categories) + self.other

    def encode(self, values: Any, out: np.ndarray | None = None) -> np.ndarray:
        """(rows, width) float32, written into `out` when given (see encoders.one_hot)."""
        text = category_text(values)
        codes = self.codes(text)
        if out is None:
            out = np.empty((len(codes), self.width), dtype=np.float32)
        if self.encoding == "ordinal":
            out[:, 0] = codes
            return out
        one_hot(codes, len(self.categories), out[:, : len(self.categories)])
        if self.other:
            present = pc.is_valid(text).to_numpy(zero_copy_only=False)
            out[:, -1] = (codes < 0) & present
        return out

    def codes(self, values: Any) -> np.ndarray:
        """Index of each value in `categories`; -1 for missing (unless filled) and unseen values."""
        text = category_text(values)
        if self.fill is not None:
            text = pc.fill_null(text, self.fill)
        found = pc.index_in(text, value_set=pa.array(self.categories, pa.string()))
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass(frozen=True)
class HashedFeature:
    """One-hot of a stable hash bucket of the value; missing is all zeros."""

    name: str
    buckets: int

    @property
    def width(self) -> int:
        return self.buckets

    def encode(self, values: Any, out: np.ndarray | None = None) -> np.ndarray:
        return one_hot(hash_buckets(values, self.buckets), self.buckets, out)


@dataclass(frozen=True)
class FeaturePipeline:
    """Every fitted transform, and how labels are coded: class indices, or a standardized number."""

    label: str
    classes: list[Any]
    """The class of each output index (empty for regression)."""
    task: Literal["classification", "regression"] = "classification"
    label_center: float = 0.0
    """Regression: training targets are (label - center) / scale, predictions are mapped back."""
    label_scale: float = 1.0
    numeric: list[NumericFeature] = field(default_factory=list)
    categorical: list[CategoricalFeature] = field(default_factory=list)
    derived: list[DerivedFeature] = field(default_factory=list)
    datetime: list[DatetimeFeature] = field(default_factory=list)
    buckets: list[BucketFeature] = field(default_factory=list)
    hashed: list[HashedFeature] = field(default_factory=list)
    reference: DriftReference | None = None
    """The training distribution of the inputs and the label, that drift is measured against."""

    @property
    def input_columns(self) -> list[str]:
        """Raw columns a request must carry: every source of an output, in a stable order."""
        computed = {d.name for d in self.derived} | {o for d in self.datetime for o in d.outputs}
        names = [f.name for f in self.numeric + self.buckets if f.name not in computed]
        names += [d.name for d in self.datetime]
        names += [s for d in self.derived for s in d.sources]
        names += [f.name for f in self.categorical + self.hashed]
        return list(dict.fromkeys(names))

    @property
    def numeric_inputs(self) -> list[str]:
        """Raw columns read as numbers (the rest are text or timestamps)."""
        text = {f.name for f in self.categorical + self.hashed} | {d.name for d in self.datetime}
        return [c for c in self.input_columns if c not in text]

    @property
    def output_names(self) -> list[str]:
        names = []
        for f in self.numeric:
            names += [f.name] + ([f"{f.name}_missing"] if f.indicator else [])
        for b in self.buckets:
            names += [f"{b.name}_bucket{i}" for i in range(b.width)]
        for c in self.categorical:
            names += [c.name] if c.encoding == "ordinal" else [f"{c.name}={v}" for v in c.categories]
            names += [f"{c.name}=other"] if c.encoding == "onehot" and c.other else []
        for h in self.hashed:
            names += [f"{h.name}_hash{i}" for i in range(h.buckets)]
        return names

    @property
    def output_dim(self) -> int:
        return len(self.output_names)

    def computed(self, columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The derived and datetime columns, computed from the raw `columns`."""
        out = {d.name: compile_expression(d.expression).evaluate(columns) for d in self.derived}
        for d in self.datetime:
            out |= {f"{d.name}_{part}": values for part, values in datetime_parts(columns[d.name], d.parts).items()}
        return out

    def expand(self, columns: Mapping[str, Any]) -> dict[str, Any]:
        """`columns` plus the derived and datetime columns computed from them."""
        names = columns.column_names if isinstance(columns, pa.Table) else list(columns)
        raw = {c: columns[c] for c in names}  # a dict: expressions look columns up by name, which a Table cannot
        return raw | self.computed(raw)

    def transform(self, columns: Mapping[str, Any], order: Literal["C", "F"] = "C") -> np.ndarray:
        """Raw columns (name -> array-like or Arrow array, equal lengths) to a float32 matrix
        (rows, output_dim): row-major for a model, column-major when its columns are written out."""
        cols = self.expand(columns)
        rows = len(cols[self.input_columns[0]]) if self.input_columns else 0
        out = np.empty((rows, self.output_dim), dtype=np.float32, order=order)
        at = 0  # each group writes its own columns, in `output_names` order
        for f in self.numeric:
            scaled = f.clean(cols[f.name])
            scaled -= f.center
            scaled /= f.scale
            out[:, at] = scaled
            if f.indicator:
                at += 1
                out[:, at] = np.isnan(np.asarray(cols[f.name], dtype=np.float64))
            at += 1
        for encoder in self.buckets + self.categorical + self.hashed:
            encoder.encode(cols[encoder.name], out[:, at : at + encoder.width])
            at += encoder.width
        return out

    @property
    def num_outputs(self) -> int:
        """Model outputs: one logit per class, or the one predicted value."""
        return len(self.classes) if self.task == "classification" else 1

    def encode_labels(self, values: Any) -> np.ndarray:
        """Class indices (int64), or standardized regression targets (float32)."""
        if self.task == "regression":
            numbers = values.to_numpy(zero_copy_only=False) if isinstance(values, (pa.Array, pa.ChunkedArray)) else values
            return ((np.asarray(numbers, dtype=np.float64) - self.label_center) / self.label_scale).astype(np.float32)
        labels = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(values).tolist())
        index = pc.index_in(labels, value_set=pa.array(self.classes, labels.type))
        if index.null_count:
            unknown = pc.filter(labels, pc.is_null(index))[0]
            raise ValueError(f"label {unknown} is not one of the fitted classes {self.classes}")
        return index.to_numpy(zero_copy_only=False).astype(np.int64)

    def decode_values(self, outputs: np.ndarray) -> np.ndarray:
        """Regression model outputs back in the label's units."""
        return outputs * self.label_scale + self.label_center

    def transform_xy(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """A Ray Data batch to model inputs `x` and targets `y` (see `encode_labels`)."""
        return {"x": self.transform(batch), "y": self.encode_labels(batch[self.label])}

    def transform_columns(self, batch: Mapping[str, Any]) -> pa.Table:
        """A Ray Data batch to one named float32 column per output (see `output_names`) and `y`:
        what batch preprocessing writes, as plain columns any parquet reader can use. An Arrow table
        (zero-copy from the column-major matrix): Ray converts a dict of ~80 numpy columns 5x slower."""
        x = self.transform(batch, order="F")
        return pa.table(dict(zip(self.output_names, x.T)) | {"y": self.encode_labels(batch[self.label])})

    def to_json(self) -> str:
        return json.dumps({"format_version": FORMAT_VERSION, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeaturePipeline:
        state = json.loads(text)
        version = state.pop("format_version", None)
        if version not in READABLE_VERSIONS:
            raise ValueError(f"feature pipeline format {version} is not supported (expected {FORMAT_VERSION})")
        kinds = {
            "numeric": NumericFeature,
            "categorical": CategoricalFeature,
            "derived": DerivedFeature,
            "datetime": DatetimeFeature,
            "buckets": BucketFeature,
            "hashed": HashedFeature,
        }
        return cls(
            label=state["label"],
            classes=state["classes"],
            task=state["task"],
            label_center=state["label_center"],
            label_scale=state["label_scale"],
            **{key: [kind(**f) for f in state.get(key, [])] for key, kind in kinds.items()},
            reference=DriftReference.from_dict(state["reference"]) if state.get("reference") else None,
        )


def category_text(values: Any) -> pa.Array | pa.ChunkedArray:
    """Category values as Arrow text, nulls kept: the one conversion used to count categories at
    fitting time and to look them up at transform time (a bool is "true"/"false")."""
    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = pa.array(values if isinstance(values, np.ndarray) else list(values), from_pandas=True)
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
