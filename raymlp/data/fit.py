"""Fit the feature transform on the train split with Ray Data aggregations, in two streaming passes.

As an imputer, a capper and a scaler fitted in sequence would: the first pass gives fill values,
fences, bucket edges and category counts on the raw values (and the data profile); the second the
scaling statistics of the cleaned values, plus what selection and power transforms need (variances,
a correlation matrix, a bounded uniform sample). No pass collects rows on the driver.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
from ray.data.aggregate import Count, ValueCounter

from raymlp.config.schema import FeaturesConfig
from raymlp.data.aggregates import CrossMoments, Quantiles, Sample, Summary, aggregate
from raymlp.data.encoders import fit_yeo_johnson, hash_buckets, yeo_johnson
from raymlp.data.expressions import compile_expression
from raymlp.data.features import (
    BucketFeature,
    CategoricalFeature,
    DatetimeFeature,
    DerivedFeature,
    FeaturePipeline,
    HashedFeature,
    NumericFeature,
    category_text,
)
from raymlp.data.reference import PERCENTILES, DriftReference, category_reference, numeric_reference
from raymlp.data.selection import Task, correlation_keep, model_importance, mutual_information, top_k, variance_keep

log = logging.getLogger(__name__)

LABEL_CODE = "_raymlp_label"
REFERENCE_SAMPLE_ROWS = 50_000
"""Rows of the uniform sample the drift reference's quantiles come from."""


@dataclass(frozen=True)
class Roles:
    """Which input gets which treatment, resolved from the config and the data's schema."""

    numeric: list[str]
    """Raw numeric inputs, then derived columns, then datetime parts."""
    categorical: list[str]
    ordinal: list[str]
    hashed: dict[str, int]
    derived: list[DerivedFeature] = field(default_factory=list)
    datetime: list[DatetimeFeature] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        """Raw columns the fitted transform reads."""
        computed = {d.name for d in self.derived} | {o for d in self.datetime for o in d.outputs}
        raw = [c for c in self.numeric if c not in computed] + [s for d in self.derived for s in d.sources]
        raw += [d.name for d in self.datetime] + self.categorical + self.ordinal + list(self.hashed)
        return list(dict.fromkeys(raw))

    def columns(self, label: str) -> tuple[str, ...]:
        """The raw columns fitting reads: the sources and the label."""
        return tuple(dict.fromkeys([*self.sources, label]))

    @property
    def categories(self) -> list[str]:
        return self.categorical + self.ordinal


def resolve_roles(schema: pa.Schema, label: str, cfg: FeaturesConfig, exclude: set[str] = frozenset()) -> Roles:
    """Inputs as configured; unset lists are inferred from the schema (every numeric, or string and
    bool, column that is not the label, in `exclude`, or given another encoding)."""
    names = set(schema.names)
    if label not in names:
        raise ValueError(f"data.label: column {label!r} is not in the data; it has {sorted(names)}")
    listed = {
        "features.numeric": cfg.numeric or [],
        "features.categorical": cfg.categorical or [],
        "features.ordinal": cfg.ordinal,
        "features.hashed": list(cfg.hashed),
        "features.datetime": list(cfg.datetime),
    }
    for key, columns in listed.items():
        missing = [c for c in columns if c not in names]
        if missing:
            raise ValueError(f"{key}: columns {missing} are not in the data; it has {sorted(names)}")
    derived = [DerivedFeature(name, text) for name, text in cfg.derived.items()]
    for d in derived:
        clash = d.name in names
        unknown = sorted(set(compile_expression(d.expression).columns) - names)
        if clash or unknown:
            problem = f"{d.name!r} is already a column" if clash else f"it uses unknown columns {unknown}"
            raise ValueError(f"features.derived.{d.name}: {problem}; the data has {sorted(names)}")
    datetime = [DatetimeFeature(c, list(parts)) for c, parts in cfg.datetime.items()]
    taken = {label} | set(exclude) | set(cfg.ordinal) | set(cfg.hashed) | set(cfg.datetime)
    inferred_numeric, inferred_categorical, unsupported = [], [], []
    for f in schema:
        if f.name in taken:
            continue
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            inferred_numeric.append(f.name)
        elif pa.types.is_string(f.type) or pa.types.is_boolean(f.type):
            inferred_categorical.append(f.name)
        else:
            unsupported.append(f"{f.name} ({f.type})")
    if unsupported and (cfg.numeric is None or cfg.categorical is None):
        raise ValueError(
            f"features: cannot infer how to encode {unsupported}; list the inputs in features.numeric and "
            "features.categorical, or give timestamps their parts in features.datetime"
        )
    numeric = list(cfg.numeric if cfg.numeric is not None else inferred_numeric)
    numeric += [d.name for d in derived] + [o for d in datetime for o in d.outputs]
    roles = Roles(
        numeric=numeric,
        categorical=list(cfg.categorical if cfg.categorical is not None else inferred_categorical),
        ordinal=list(cfg.ordinal),
        hashed=dict(cfg.hashed),
        derived=derived,
        datetime=datetime,
    )
    for key, columns in {"features.log1p": cfg.log1p, "features.power": cfg.power, "features.bucketize": cfg.bucketize}.items():
        unknown = sorted(set(columns) - set(numeric))
        if unknown:
            raise ValueError(f"{key}: {unknown} are not numeric inputs; choose from {numeric}")
    if not numeric and not roles.categories and not roles.hashed:
        raise ValueError("features: no input columns; set features.numeric or features.categorical")
    return roles


@dataclass
class Fitted:
    pipeline: FeaturePipeline
    raw_stats: dict[str, Any]
    """The first pass's statistics (the data profile is built from them)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Input -> why feature selection dropped it."""


def fit_dataset(ds: ray.data.Dataset, label: str, cfg: FeaturesConfig, seed: int = 0) -> Fitted:
    """Fit on any dataset of clean rows, all of them train: for drivers that bring their own data."""
    roles = resolve_roles(_arrow_schema(ds), label, cfg)
    raw = raw_statistics(ds, roles, cfg, label, seed=seed) | aggregate(ds, ValueCounter(label, alias_name="labels"))
    labels = dict(zip(raw["labels"]["values"], raw["labels"]["counts"]))
    classes = sorted(v.item() if hasattr(v, "item") else v for v in labels if v is not None)
    return fit_feature_pipeline(ds, raw, classes, label, roles, cfg, seed, labels=labels)


def _arrow_schema(ds: ray.data.Dataset) -> pa.Schema:
    """`ds`'s schema in Arrow types, also when its blocks are pandas (`from_pandas`), whose object
    columns are taken as text."""
    schema = ds.schema()
    if isinstance(schema.base_schema, pa.Schema):
        return schema.base_schema
    return pa.schema([(n, t if isinstance(t, pa.DataType) else pa.string()) for n, t in zip(schema.names, schema.types)])


def raw_statistics(
    train: ray.data.Dataset, roles: Roles, cfg: FeaturesConfig, label: str, task: Task = "classification", seed: int = 0
) -> dict[str, Any]:
    """The first pass: statistics of the raw (and derived) inputs on `train`, the valid train rows,
    and of a regression label; and a uniform sample of the numeric ones, for the drift reference's
    percentiles (within ~0.5% of rank: a quantile sketch of every column would cost ~50 ns a value,
    seconds of CPU over millions of rows of many columns)."""
    aggs = _raw_aggregations(roles, cfg)
    sampled = roles.numeric
    if task == "regression":
        aggs.append(Summary([label], alias_name="target"))
        sampled = [*sampled, label]
    aggs.append(Sample(sampled, REFERENCE_SAMPLE_ROWS, seed, alias_name="reference_sample"))
    return aggregate(_expanded(train, roles, label), *aggs)


def fit_feature_pipeline(
    train: ray.data.Dataset,
    raw: dict[str, Any],
    classes: list[Any],
    label: str,
    roles: Roles,
    cfg: FeaturesConfig,
    seed: int,
    task: Task = "classification",
    labels: Mapping[Any, int] | None = None,
) -> Fitted:
    """The second pass: scaling statistics of the cleaned inputs, selection, and the fitted transform
    with its drift reference (`labels`: rows per class, for classification)."""
    cleaners = [_cleaner(c, raw, cfg) for c in roles.numeric]
    categorical = [_categories(c, raw, cfg, "onehot") for c in roles.categorical]
    categorical += [_categories(c, raw, cfg, "ordinal") for c in roles.ordinal]
    hashed = [HashedFeature(c, n) for c, n in roles.hashed.items()]
    buckets = [BucketFeature(c, _edges(c, spec, raw)) for c, spec in cfg.bucketize.items()]

    sampled = bool(cfg.power or cfg.select.top_k)
    target = {"task": task}
    if task == "regression":
        label_stats = raw["target"][label]
        target |= {"label_center": label_stats["mean"] or 0.0, "label_scale": label_stats["std"] or 1.0}
    codes = FeaturePipeline(label=label, classes=classes, **target)

    def clean(batch: pa.Table) -> pa.Table:
        out = {f.name: f.clean(batch[f.name]) for f in cleaners}
        if sampled:  # encoded inputs and labels only feed the sample
            out |= {c.name: c.codes(batch[c.name]).astype(np.float64) for c in categorical}
            out |= {h.name: hash_buckets(batch[h.name], h.buckets).astype(np.float64) for h in hashed}
            out[LABEL_CODE] = codes.encode_labels(batch[label])
        return pa.table(out)  # zero-copy; Ray converts a dict of numpy columns far more slowly

    cleaned = _expanded(train, roles, label).map_batches(clean, batch_format="pyarrow", batch_size=None)
    stats = aggregate(cleaned, *_clean_aggregations(roles, cfg, seed))
    numeric = []
    for f in cleaners:
        if f.name in cfg.power:
            f = replace(f, power=fit_yeo_johnson(stats["sample"][f.name]))
            numeric.append(replace(f, **_sample_center_scale(yeo_johnson(stats["sample"][f.name], f.power), cfg.scaler)))
        else:
            numeric.append(replace(f, **_center_scale(f.name, stats, cfg.scaler)))
    dropped = _select(roles, cfg, stats, seed, task)

    def keep(features: list[Any]) -> list[Any]:
        return [f for f in features if f.name not in dropped]

    pipeline = FeaturePipeline(
        label=label,
        classes=classes,
        **target,
        numeric=keep(numeric),
        categorical=keep(categorical),
        derived=[d for d in roles.derived if d.name not in dropped],
        datetime=[
            replace(d, parts=[p for p in d.parts if f"{d.name}_{p}" not in dropped]) for d in roles.datetime
        ],
        buckets=keep(buckets),
        hashed=keep(hashed),
    )
    pipeline = replace(pipeline, datetime=[d for d in pipeline.datetime if d.parts])
    if not pipeline.output_dim:
        raise ValueError(f"features.select: every input was dropped ({dropped}); loosen the selection")
    return Fitted(replace(pipeline, reference=_reference(pipeline, raw, labels or {})), raw, dropped)


def _reference(pipeline: FeaturePipeline, raw: dict[str, Any], labels: Mapping[Any, int]) -> DriftReference:
    """The training distribution of every kept numeric and categorical feature, and of the label,
    from the first pass's statistics (hashed features have no reference: too many values)."""
    rows, sample = raw["rows"] or 0, raw["reference_sample"]
    numeric = [numeric_reference(f.name, _percentiles(sample[f.name]), raw["numeric"][f.name]["count"], rows) for f in pipeline.numeric]
    categorical = [category_reference(f.name, f.categories, _text_counts(raw[f"counts:{f.name}"]), rows) for f in pipeline.categorical]
    if pipeline.task == "regression":
        prediction = numeric_reference(pipeline.label, _percentiles(sample[pipeline.label]), rows, rows)
    else:
        classes = category_text(pipeline.classes).to_pylist()
        counts = _text_counts({"values": list(labels), "counts": list(labels.values())})
        prediction = category_reference(pipeline.label, classes, counts, sum(labels.values()))
    return DriftReference(rows, [r for r in numeric if r is not None], categorical, prediction)


def _percentiles(values: np.ndarray) -> list[float] | None:
    present = np.asarray(values, dtype=np.float64)
    present = present[~np.isnan(present)]
    return np.quantile(present, PERCENTILES).tolist() if len(present) else None


def _text_counts(counts: dict[str, list] | None) -> dict[str | None, int]:
    """A value counter's result keyed by the values as category text (None: missing)."""
    if not counts:
        return {}
    return dict(zip(category_text(counts["values"]).to_pylist(), counts["counts"]))


def _expanded(train: ray.data.Dataset, roles: Roles, label: str) -> ray.data.Dataset:
    """The inputs the transform reads, plus the derived and datetime columns computed from them."""
    skeleton = FeaturePipeline(label=label, classes=[], derived=roles.derived, datetime=roles.datetime)
    columns = list(roles.columns(label))
    if not roles.derived and not roles.datetime:
        return train.select_columns(columns)

    def expand(table: pa.Table) -> pa.Table:
        # Arrow keeps nulls as nulls (aggregations skip them), where numpy would make them NaN.
        computed = skeleton.computed({c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names})
        for name, values in computed.items():
            table = table.append_column(name, pa.array(values, pa.float64(), from_pandas=True))
        return table

    return train.select_columns(columns).map_batches(expand, batch_format="pyarrow", batch_size=None)


def _raw_aggregations(roles: Roles, cfg: FeaturesConfig) -> list[Any]:
    aggs: list[Any] = [Count(alias_name="rows"), Summary(roles.numeric, alias_name="numeric")]
    for c in roles.numeric:
        if quantiles := _raw_quantiles(c, cfg):
            aggs.append(Quantiles(c, quantiles, alias_name=f"q:{c}"))
        if cfg.impute == "mode":
            aggs.append(ValueCounter(c, alias_name=f"counts:{c}"))
    aggs += [ValueCounter(c, alias_name=f"counts:{c}") for c in roles.categories]
    aggs += [Count(c, ignore_nulls=True, alias_name=f"count:{c}") for c in roles.hashed]
    return aggs


def _raw_quantiles(c: str, cfg: FeaturesConfig) -> list[float]:
    """Quantiles of raw column `c` that capping, median imputation and bucket edges need."""
    quantiles = {"iqr": [0.25, 0.75], "quantile": list(cfg.cap_quantiles)}.get(cfg.cap, [])
    if cfg.impute == "median":
        quantiles.append(0.5)
    bins = cfg.bucketize.get(c)
    return quantiles + ([i / bins for i in range(1, bins)] if isinstance(bins, int) else [])


def _quantile(raw: dict[str, Any], c: str, q: float, cfg: FeaturesConfig) -> float:
    """Quantile `q` of column `c` from the first pass's sketch (0 for an all-null column)."""
    values = raw.get(f"q:{c}")
    return 0.0 if values is None else float(values[_raw_quantiles(c, cfg).index(q)])


def _cleaner(c: str, raw: dict[str, Any], cfg: FeaturesConfig) -> NumericFeature:
    """Fill and fences for column `c` from the raw statistics (an all-null column fills with 0)."""
    summary = raw["numeric"][c]
    mean, std = summary["mean"] or 0.0, summary["std"] or 0.0
    if cfg.impute == "mode":
        fill = _most_frequent(raw[f"counts:{c}"]) or 0.0
    else:
        fill = {"mean": mean, "median": _quantile(raw, c, 0.5, cfg) if cfg.impute == "median" else 0.0}.get(
            cfg.impute, cfg.fill_value
        )
    lower = upper = None
    if cfg.cap == "iqr":
        q1, q3 = _quantile(raw, c, 0.25, cfg), _quantile(raw, c, 0.75, cfg)
        lower, upper = q1 - cfg.cap_iqr_k * (q3 - q1), q3 + cfg.cap_iqr_k * (q3 - q1)
    elif cfg.cap == "quantile":
        lower, upper = (_quantile(raw, c, q, cfg) for q in cfg.cap_quantiles)
    elif cfg.cap == "zscore":
        lower, upper = mean - cfg.cap_z * std, mean + cfg.cap_z * std
    return NumericFeature(
        c, fill=float(fill), lower=lower, upper=upper, log1p=c in cfg.log1p, indicator=cfg.missing_indicators
    )


def _categories(c: str, raw: dict[str, Any], cfg: FeaturesConfig, encoding: str) -> CategoricalFeature:
    """One-hot keeps the `max_categories` most frequent values (sorted); ordinal keeps them all."""
    counts = raw[f"counts:{c}"] or {"values": [], "counts": []}
    text = category_text(counts["values"]).to_pylist()
    ranked = sorted(((n, v) for v, n in zip(text, counts["counts"]) if v is not None), key=lambda item: (-item[0], item[1]))
    kept = ranked if encoding == "ordinal" else ranked[: cfg.max_categories]
    fill = ranked[0][1] if ranked and cfg.impute_categorical == "mode" else None
    return CategoricalFeature(
        c, sorted(v for _, v in kept), encoding=encoding, other=cfg.other_bucket and encoding == "onehot", fill=fill
    )


def _edges(c: str, spec: int | list[float], raw: dict[str, Any]) -> list[float]:
    """Given edges, or the equal-frequency ones (the sketch's last `spec - 1` quantiles; repeated
    edges of a lumpy column collapse into one)."""
    if isinstance(spec, list):
        return sorted(spec)
    values = raw.get(f"q:{c}") or []
    return sorted({float(v) for v in values[len(values) - (spec - 1) :]}) if spec > 1 else []


def _most_frequent(counts: dict[str, list] | None) -> float | None:
    pairs = [(n, v) for v, n in zip(counts["values"], counts["counts"]) if v is not None] if counts else []
    return float(min(pairs, key=lambda p: (-p[0], p[1]))[1]) if pairs else None


def _clean_aggregations(roles: Roles, cfg: FeaturesConfig, seed: int) -> list[Any]:
    aggs: list[Any] = [Count(alias_name="rows"), Summary(roles.numeric, alias_name="numeric")]
    if cfg.scaler == "robust":
        aggs += [Quantiles(c, [0.25, 0.5, 0.75], alias_name=f"q:{c}") for c in roles.numeric]
    if cfg.select.max_correlation is not None and len(roles.numeric) > 1:
        aggs.append(CrossMoments(roles.numeric, alias_name="moments"))
    if cfg.power or cfg.select.top_k is not None:
        columns = roles.numeric + roles.categories + list(roles.hashed) + [LABEL_CODE]
        aggs.append(Sample(columns, cfg.select.sample_rows, seed, alias_name="sample"))
    return aggs


def _center_scale(c: str, stats: dict[str, Any], scaler: str) -> dict[str, float]:
    """A constant (or all-null) column gets scale 1, so it encodes as zeros rather than NaN."""
    summary = stats["numeric"][c]
    if scaler == "standard":
        center, scale = summary["mean"], summary["std"]
    elif scaler == "minmax":
        center = summary["min"]
        scale = None if center is None else summary["max"] - center
    else:
        q = stats[f"q:{c}"]
        center, scale = (None, None) if q is None else (q[1], q[2] - q[0])
    return {"center": float(center or 0.0), "scale": float(scale or 0.0) or 1.0}


def _sample_center_scale(values: np.ndarray, scaler: str) -> dict[str, float]:
    """Scaling of a power-transformed column, from the sample (its lambda is only known after the pass)."""
    if not len(values):
        return {"center": 0.0, "scale": 1.0}
    if scaler == "standard":
        center, scale = values.mean(), values.std()
    elif scaler == "minmax":
        center, scale = values.min(), values.max() - values.min()
    else:
        q1, center, q3 = np.quantile(values, [0.25, 0.5, 0.75])
        scale = q3 - q1
    return {"center": float(center), "scale": float(scale) or 1.0}


def _select(roles: Roles, cfg: FeaturesConfig, stats: dict[str, Any], seed: int, task: Task) -> dict[str, str]:
    """Inputs to drop, each with the reason: variance, then correlation, then top-k scores."""
    select, dropped = cfg.select, {}
    numeric = list(roles.numeric)
    if select.variance_threshold is not None:
        variances = [(stats["numeric"][c]["std"] or 0.0) ** 2 for c in numeric]
        kept = variance_keep(numeric, variances, select.variance_threshold)
        dropped |= {c: f"variance <= {select.variance_threshold}" for c in numeric if c not in kept}
        numeric = kept
    if select.max_correlation is not None and stats.get("moments") is not None:
        corr = stats["moments"].correlation()
        index = [roles.numeric.index(c) for c in numeric]
        kept = correlation_keep(numeric, corr[np.ix_(index, index)], select.max_correlation)
        dropped |= {c: f"|r| > {select.max_correlation} with an earlier input" for c in numeric if c not in kept}
        numeric = kept
    if select.top_k is not None:
        candidates = numeric + roles.categories + list(roles.hashed)
        sample = stats["sample"]  # lists, not arrays: an aggregation's result comes back through an Arrow row
        x = np.column_stack([np.nan_to_num(np.asarray(sample[c], dtype=np.float64)) for c in candidates])
        y = np.asarray(sample[LABEL_CODE], dtype=np.int64 if task == "classification" else np.float64)
        discrete = [c not in numeric for c in candidates]
        if select.method == "mutual_info":
            scores = mutual_information(x, y, discrete, task, seed)
        else:
            scores = model_importance(x, y, task, seed)
        kept = top_k(candidates, scores, select.top_k)
        dropped |= {c: f"not in the top {select.top_k} by {select.method}" for c in candidates if c not in kept}
    if dropped:
        log.info("feature selection dropped %d inputs: %s", len(dropped), dropped)
    return dropped

