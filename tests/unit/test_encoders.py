import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.preprocessing import PowerTransformer

from raymlp.data import encoders
from raymlp.data.encoders import (
    DATETIME_PARTS,
    bucket_indices,
    datetime_parts,
    fit_yeo_johnson,
    hash_buckets,
    one_hot,
    ordinal_codes,
    parse_timestamps,
    yeo_johnson,
)

STAMPS = ["2024-03-10T23:15:00", "2024-01-01T00:00:00Z", "2024-06-30T12:45:30+02:00", None, "2023-12-31"]


def test_parse_timestamps_is_utc_with_nat_for_missing():
    out = parse_timestamps(STAMPS + [""])
    assert out.dtype == np.dtype("datetime64[ns]")
    expected = ["2024-03-10T23:15:00", "2024-01-01T00:00:00", "2024-06-30T10:45:30", "NaT", "2023-12-31", "NaT"]
    np.testing.assert_array_equal(out, np.array(expected, dtype="datetime64[ns]"))


def test_parse_timestamps_accepts_numpy_pandas_and_pyarrow_inputs():
    expected = np.array(["2024-01-01T05:00", "NaT"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(parse_timestamps(np.array(["2024-01-01T05:00", "NaT"], dtype="M8[s]")), expected)
    paris = [pd.Timestamp("2024-01-01T06:00", tz="Europe/Paris"), None]
    np.testing.assert_array_equal(parse_timestamps(paris), expected)
    arrow = pa.array([pd.Timestamp("2024-01-01T05:00"), None], type=pa.timestamp("us"))
    np.testing.assert_array_equal(parse_timestamps(arrow), expected)
    aware = pa.array([pd.Timestamp("2024-01-01T05:00", tz="UTC"), None], type=pa.timestamp("ms", tz="UTC"))
    np.testing.assert_array_equal(parse_timestamps(aware), expected)


def test_parse_timestamps_names_a_bad_value_instead_of_returning_nat():
    with pytest.raises(ValueError, match=r"cannot parse 2 timestamp\(s\).*'2024-13-45'"):
        parse_timestamps(["2024-01-01", "2024-13-45", None, "yesterday"])


def test_datetime_parts_match_pandas_dt():
    parts = datetime_parts(STAMPS, list(DATETIME_PARTS))
    dt = pd.to_datetime(pd.Series(STAMPS), utc=True, format="ISO8601").dt
    reference = {
        "year": dt.year,
        "month": dt.month,
        "day": dt.day,
        "hour": dt.hour,
        "minute": dt.minute,
        "day_of_week": dt.dayofweek,
        "day_of_year": dt.dayofyear,
    }
    for name, expected in reference.items():
        np.testing.assert_array_equal(parts[name], expected.to_numpy(dtype=np.float64), err_msg=name)
    for name, offset, period in [("hour", 0, 24), ("day_of_week", 0, 7), ("month", 1, 12)]:
        angle = 2 * np.pi * (reference[name].to_numpy(dtype=np.float64) - offset) / period
        np.testing.assert_allclose(parts[f"{name}_sin"], np.sin(angle), err_msg=name)
        np.testing.assert_allclose(parts[f"{name}_cos"], np.cos(angle), err_msg=name)
    assert all(v.dtype == np.float64 and np.isnan(v[3]) for v in parts.values())
    assert parts["day_of_week"][1] == 0.0  # 2024-01-01 was a Monday


def test_datetime_parts_rejects_unknown_parts():
    with pytest.raises(ValueError, match=r"unknown datetime parts \['weekday'\]; choose from"):
        datetime_parts(STAMPS, ["hour", "weekday"])


def test_hash_buckets_are_stable_across_processes_and_mark_missing():
    values = ["a", "b", None, 7, "7", float("nan"), "mcc_5411"]
    out = hash_buckets(values, 1000)
    assert out.dtype == np.int64 and out[2] == out[5] == -1 and out[3] == out[4]
    # pinned: a change here would silently remap every hashed feature of every trained model
    assert out[[0, 1, 3, 6]].tolist() == [504, 975, 352, 396]
    # load the file alone: the child only needs this function, not the package (and Ray) around it
    code = (
        "import importlib.util as u; s = u.spec_from_file_location('enc', %r); m = u.module_from_spec(s); "
        "s.loader.exec_module(m); print(m.hash_buckets(['a', 'b', 7, 'mcc_5411'], 1000).tolist())" % encoders.__file__
    )
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed}
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
        assert child.stdout.strip() == "[504, 975, 352, 396]"


def test_hash_buckets_rejects_zero_buckets():
    with pytest.raises(ValueError, match="at least 1"):
        hash_buckets(["a"], 0)


def test_one_hot_leaves_missing_rows_empty():
    out = one_hot(np.array([2, -1, 0]), 3)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 1], [0, 0, 0], [1, 0, 0]])
    assert one_hot(np.array([], dtype=np.int64), 4).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\[-1, 3\)"):
        one_hot(np.array([3]), 3)


def test_ordinal_codes_map_missing_and_unseen_to_minus_one():
    out = ordinal_codes(pd.Series(["b", None, "z", "a", np.nan, "b"]), ["a", "b"])
    assert out.dtype == np.float64 and out.tolist() == [1.0, -1.0, -1.0, 0.0, -1.0, 1.0]
    assert ordinal_codes(np.array([1, 2]), ["2", "1"]).tolist() == [1.0, 0.0]


def test_bucket_indices_match_digitize_and_cut():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 2, 200), [-1.0, 0.0, 2.5, -np.inf, np.inf]])
    edges = [-1.0, 0.0, 2.5]
    out = bucket_indices(x, edges)
    np.testing.assert_array_equal(out, np.digitize(x, edges))
    cut = pd.cut(x, [-np.inf, *edges, np.inf], right=False, labels=False)
    np.testing.assert_array_equal(out[np.isfinite(x)], cut[np.isfinite(x)])
    assert bucket_indices([np.nan, None, 1.0], edges).tolist() == [-1, -1, 2]


@pytest.mark.parametrize("edges", [[1.0, 1.0], [2.0, 1.0], [0.0, np.nan]])
def test_bucket_indices_rejects_unsorted_edges(edges):
    with pytest.raises(ValueError, match="strictly increasing"):
        bucket_indices([0.5], edges)


@pytest.mark.parametrize(
    "sample",
    [
        np.random.default_rng(1).lognormal(0, 1, 500),
        -np.random.default_rng(2).lognormal(0, 0.7, 500),
        np.random.default_rng(3).normal(0, 3, 500),
        np.random.default_rng(4).exponential(2, 500) - 1,
    ],
)
def test_yeo_johnson_matches_sklearn_power_transformer(sample):
    sample = sample.copy()
    sample[::50] = np.nan
    reference = PowerTransformer(method="yeo-johnson", standardize=False).fit(sample[:, None])
    lmbda = fit_yeo_johnson(sample)
    assert lmbda == pytest.approx(reference.lambdas_[0], abs=1e-4)
    expected = reference.transform(sample[:, None])[:, 0]
    np.testing.assert_allclose(yeo_johnson(sample, reference.lambdas_[0]), expected, atol=1e-6, equal_nan=True)
    assert np.isnan(yeo_johnson(sample, lmbda)[::50]).all()


@pytest.mark.parametrize("lmbda", [0.0, 2.0, 0.5, -1.0])
def test_yeo_johnson_special_lambdas_match_sklearn(lmbda):
    x = np.array([-3.0, -0.5, 0.0, 0.5, 4.0, np.nan])
    reference = PowerTransformer(method="yeo-johnson", standardize=False)
    reference.lambdas_ = np.array([lmbda])
    reference.n_features_in_ = 1
    np.testing.assert_allclose(yeo_johnson(x, lmbda), reference.transform(x[:, None])[:, 0], equal_nan=True)


def test_fit_yeo_johnson_constant_and_empty_samples():
    assert fit_yeo_johnson([3.0, 3.0, np.nan]) == 1.0
    with pytest.raises(ValueError, match="no non-missing values"):
        fit_yeo_johnson([np.nan, np.nan])
