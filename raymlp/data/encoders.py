"""Small, stateless encoders shared by the batch transform and the serving request path.

Each takes array-likes (numpy, lists, pandas or pyarrow) and returns numpy, so one function serves a Ray
Data batch and a single request. Any state they need (categories, edges, a lambda) is a plain value the
caller fits and stores as JSON. Missing input always maps to one documented value: NaN for numbers and
-1 for indices, so it never lands in a real bucket or category.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pandas.util import hash_array

DATETIME_PARTS = (
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "day_of_week",
    "day_of_year",
    "hour_sin",
    "hour_cos",
    "day_of_week_sin",
    "day_of_week_cos",
    "month_sin",
    "month_cos",
)
"""Parts `datetime_parts` can emit; day_of_week counts from Monday=0."""

# The *_sin/*_cos parts put a cyclic value on a circle so 23h sits next to 0h: part -> (offset, period).
_CYCLES = {"hour": (0, 24), "day_of_week": (0, 7), "month": (1, 12)}


def parse_timestamps(values: Any) -> np.ndarray:
    """UTC datetime64[ns], NaT where missing. Naive values are taken as UTC; aware ones are converted.

    Accepts ISO-8601 strings, datetime64, datetime/Timestamp objects and pyarrow timestamps. A non-null,
    non-blank value that does not parse raises ValueError naming it, so a malformed value in the data is
    caught rather than silently turned into a missing one.
    """
    raw = pd.Series(values.to_pandas() if hasattr(values, "to_pandas") else values)
    parsed = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy() & ~raw.isna().to_numpy()
    if raw.dtype == object or pd.api.types.is_string_dtype(raw):  # blank strings count as missing
        bad &= ~raw.map(lambda v: isinstance(v, str) and not v.strip()).to_numpy(dtype=bool)
    if bad.any():
        example = raw[bad].iloc[0]
        raise ValueError(f"cannot parse {int(bad.sum())} timestamp(s) as ISO-8601, e.g. {example!r}")
    # pandas picks a resolution from the input (us for strings); callers get one fixed dtype
    return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")


def datetime_parts(values: Any, parts: list[str]) -> dict[str, np.ndarray]:
    """The requested calendar parts of each timestamp, in UTC, as float64 (NaN where missing).

    Cyclic parts use the integer part (hour 0-23, day of week 0-6, month 1-12 shifted to 0-11).
    """
    unknown = [p for p in parts if p not in DATETIME_PARTS]
    if unknown:
        raise ValueError(f"unknown datetime parts {unknown}; choose from {list(DATETIME_PARTS)}")
    ts = pd.DatetimeIndex(parse_timestamps(values))
    base = {
        "year": ts.year,
        "month": ts.month,
        "day": ts.day,
        "hour": ts.hour,
        "minute": ts.minute,
        "day_of_week": ts.dayofweek,
        "day_of_year": ts.dayofyear,
    }
    out = {}
    for part in parts:
        name, fn = part.rsplit("_", 1) if part.endswith(("_sin", "_cos")) else (part, None)
        value = np.asarray(base[name], dtype=np.float64)
        if fn is not None:
            offset, period = _CYCLES[name]
            angle = 2 * np.pi * (value - offset) / period
            value = np.sin(angle) if fn == "sin" else np.cos(angle)
        out[part] = value
    return out


def _as_text(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Values as an object array of `str(v)` and the mask of missing ones (None, NaN, NaT, pd.NA)."""
    raw = np.asarray(values, dtype=object).ravel()
    missing = np.asarray(pd.isna(raw), dtype=bool)
    text = raw.astype(str)
    text[missing] = ""
    return text.astype(object), missing


def hash_buckets(values: Any, buckets: int) -> np.ndarray:
    """int64 bucket in [0, buckets) of each value's string form, -1 where missing.

    Stable across processes, machines and Python versions: pandas' SipHash with a fixed key, not Python's
    salted `hash`. Hashing the string form means 7 and "7" share a bucket, but 7.0 ("7.0") does not.
    """
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    text, missing = _as_text(values)
    out = (hash_array(text) % np.uint64(buckets)).astype(np.int64)
    out[missing] = -1
    return out


def one_hot(indices: np.ndarray, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """float32 (rows, width) with a 1 at each index; -1 (missing) is an all-zero row. Written into
    `out` when given: a slice of the transform's output, which may be column-major, where
    assembling a row-major block and copying it across cost more than the encoding itself."""
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size and (idx.min() < -1 or idx.max() >= width):
        raise ValueError(f"one_hot: indices must be in [-1, {width}), got [{idx.min()}, {idx.max()}]")
    if out is None:
        out = np.zeros((idx.size, width), dtype=np.float32)
    else:
        out[...] = 0
    rows = np.flatnonzero(idx >= 0)
    out[rows, idx[rows]] = 1.0
    return out


def ordinal_codes(values: Any, categories: list[str]) -> np.ndarray:
    """float64 index of each value's string form in `categories`; -1.0 for missing and unseen values.

    float64 so the codes sit beside other numeric columns; one sentinel for missing and unseen because the
    model has no use for telling them apart and an unseen value at serving time must not fail.
    """
    text, missing = _as_text(values)
    text[missing] = None
    return pd.Categorical(text, categories=list(categories)).codes.astype(np.float64)


def bucket_indices(values: Any, edges: list[float]) -> np.ndarray:
    """int64 bucket i where edges[i-1] <= v < edges[i], so len(edges)+1 buckets; -1 where v is NaN."""
    edge = np.asarray(edges, dtype=np.float64)
    if edge.ndim != 1 or np.isnan(edge).any() or (np.diff(edge) <= 0).any():
        raise ValueError(f"bucket edges must be strictly increasing numbers, got {list(edges)}")
    x = np.asarray(values, dtype=np.float64).ravel()
    out = np.searchsorted(edge, x, side="right").astype(np.int64)
    out[np.isnan(x)] = -1
    return out


def fit_yeo_johnson(sample: Any) -> float:
    """Maximum-likelihood Yeo-Johnson lambda of a (bounded) sample, NaN ignored.

    A constant sample gets 1.0, the identity, as scikit-learn's PowerTransformer does: its likelihood has
    no maximum.
    """
    from scipy import stats  # only fitting needs scipy; applying the transform is plain numpy

    x = np.asarray(sample, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError("fit_yeo_johnson: the sample has no non-missing values")
    if np.ptp(x) == 0:
        return 1.0
    return float(stats.yeojohnson_normmax(x))


def yeo_johnson(values: Any, lmbda: float) -> np.ndarray:
    """The Yeo-Johnson transform with a fitted lambda, as float64; NaN passes through."""
    x = np.asarray(values, dtype=np.float64)
    out = np.full_like(x, np.nan)
    pos, neg = x >= 0, x < 0  # NaN is in neither, so stays NaN
    with np.errstate(all="ignore"):
        if abs(lmbda) < np.spacing(1.0):
            out[pos] = np.log1p(x[pos])
        else:
            out[pos] = (np.power(x[pos] + 1, lmbda) - 1) / lmbda
        if abs(lmbda - 2) < np.spacing(1.0):
            out[neg] = -np.log1p(-x[neg])
        else:
            out[neg] = -(np.power(-x[neg] + 1, 2 - lmbda) - 1) / (2 - lmbda)
    return out
