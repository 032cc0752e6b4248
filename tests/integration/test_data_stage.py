"""The data stage end to end on real Ray Data: deduplication, splits, every feature kind against a
pandas or scikit-learn reference, feature selection, train/serve parity, bad input, and the fraud
example's config on its own generated data.

Tiny data and module-scoped fixtures: each prepared result serves several tests.
"""

import json
from datetime import timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data
from pydantic import ValidationError

from conftest import REPO, example_generator
from raymlp.config import parse_config
from raymlp.config.load import load_config
from raymlp.data import prepare as prepare_module
from raymlp.data.encoders import hash_buckets
from raymlp.data.features import FeaturePipeline
from raymlp.data.fit import fit_dataset
from raymlp.data.prepare import fit_data, prepare_data, validate_data
from raymlp.data.split import SPLIT, TEST, TRAIN, VALID
from raymlp.data.validate import DETAIL, REASON, ROW, SOURCE
from raymlp.serve.schemas import make_request_model

pytestmark = pytest.mark.integration

FRAUD = REPO / "examples" / "fraud"
START = pd.Timestamp("2024-01-01")
# A numeric feature that recovers each row's id: minmax scaling is exactly invertible.
ID_FEATURES = {"numeric": ["rid"], "categorical": [], "scaler": "minmax"}


def config(path: Path, features: dict | None = None, seed: int = 0, **data):
    raw = {"name": "t", "seed": seed, "data": {"path": str(path), "label": "y", **data}, "features": features or {}}
    return parse_config(raw)


def prepare(path: Path, quarantine: Path, features: dict | None = None, seed: int = 0, **data):
    cfg = config(path, features, seed, **data)
    return prepare_data(cfg.data, cfg.features, cfg.seed, quarantine)


def matrix(ds: ray.data.Dataset, column: str = "x") -> np.ndarray:
    return np.concatenate([b[column] for b in ds.iter_batches(batch_format="numpy", batch_size=None)])


def ids(prepared, split: str) -> np.ndarray:
    """The `rid` of every row in a split, read back through its minmax-scaled feature."""
    [f] = prepared.features.numeric
    return np.rint(matrix(getattr(prepared, split))[:, 0].astype(np.float64) * f.scale + f.center).astype(np.int64)


def write_shards(frame: pd.DataFrame, folder: Path, shards: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        paths.append(folder / f"part-{i}.parquet")
        pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False), paths[-1])
    return paths


def sort_rows(x: np.ndarray) -> np.ndarray:
    return x[np.lexsort(x.T[::-1])]


# --- 1. Deduplication -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def duplicated(tmp_path_factory):
    """Three parquet shards with whole-row copies and key repeats, within and across files, and two
    invalid rows (one of them copied) that must be quarantined, not counted as duplicates."""
    rng = np.random.default_rng(0)
    n = 300
    rids = rng.permutation(100_000)  # ids unrelated to file order, so "first" is not "smallest id"
    base = pd.DataFrame(
        {"k": [f"k{i}" for i in range(n)], "v": rng.uniform(0, 10, n).round(3), "y": rng.integers(0, 2, n), "rid": rids[:n]}
    )
    copies = base.sample(30, random_state=1)
    repeats = base.sample(20, random_state=2).assign(v=rng.uniform(0, 10, 20).round(3), rid=rids[n : n + 20])
    bad = pd.DataFrame({"k": ["bad0", "bad1", "bad1"], "v": [-1.0, -2.0, -2.0], "y": [0, 1, 1], "rid": rids[n + 20 : n + 23]})
    bad.loc[2, "rid"] = bad.loc[1, "rid"]  # an exact copy of an invalid row
    frame = pd.concat([base, copies, repeats, bad]).sample(frac=1.0, random_state=3).reset_index(drop=True)
    folder = tmp_path_factory.mktemp("dedupe")
    paths = write_shards(frame, folder / "data", 3)
    in_order = pd.concat([pd.read_parquet(p).assign(file=i) for i, p in enumerate(paths)], ignore_index=True)
    valid = in_order[in_order.v >= 0]
    repeated = valid[valid.duplicated("k", keep=False)]
    assert (repeated.groupby("k").file.nunique() > 1).any() and (repeated.groupby(["k", "file"]).size() > 1).any()
    return folder, valid.drop(columns="file")


@pytest.mark.parametrize("mode", ["exact", "key"])
def test_dedupe_drops_what_pandas_drops_keeping_the_first_copy(ray_session, duplicated, mode):
    folder, valid = duplicated
    key = {"dedupe_key": ["k"]} if mode == "key" else {}
    prepared = prepare(
        folder / "data", folder / f"q-{mode}", ID_FEATURES, dedupe=mode, columns={"v": {"min": 0}}, max_bad_fraction=0.1, **key
    )
    reference = valid.drop_duplicates(subset=["k"] if mode == "key" else None, keep="first")
    report = prepared.validation
    assert report.quarantined == {"range:v": 3} and report.rows_valid == len(valid)
    assert report.duplicates == len(valid) - len(reference) == (50 if mode == "key" else 30)
    assert prepared.num_rows["train"] + prepared.num_rows["valid"] == report.rows_valid - report.duplicates
    assert prepared.test is None and prepared.num_rows["test"] == 0
    kept = np.concatenate([ids(prepared, "train"), ids(prepared, "valid")])
    # Key repeats carry new ids, so equal id multisets mean the first copy by file and row order was kept.
    assert sorted(kept) == sorted(reference.rid)


# --- 2. Splits --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_splits(ray_session, tmp_path_factory):
    folder = tmp_path_factory.mktemp("random")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"rid": rng.permutation(2000), "y": rng.integers(0, 2, 2000)})
    write_shards(frame, folder / "data", 2)
    runs = {}
    for name, seed in [("a", 0), ("b", 0), ("other", 1)]:
        runs[name] = prepare(folder / "data", folder / "q", ID_FEATURES, seed=seed, valid_fraction=0.2, test_fraction=0.1)
    return runs


def test_random_split_is_a_seeded_partition_with_the_configured_fractions(random_splits):
    a, b, other = (random_splits[k] for k in ("a", "b", "other"))
    parts = {s: ids(a, s) for s in ("train", "valid", "test")}
    everything = np.concatenate(list(parts.values()))
    assert sorted(everything) == list(range(2000))  # disjoint, and nothing lost
    assert len(parts["valid"]) / 2000 == pytest.approx(0.2, abs=0.03)
    assert len(parts["test"]) / 2000 == pytest.approx(0.1, abs=0.025)
    assert a.num_rows == {s: len(v) for s, v in parts.items()}
    for split in ("valid", "test"):
        assert sorted(ids(b, split)) == sorted(parts[split])  # same seed, same rows
    moved = set(ids(other, "valid"))
    assert moved != set(parts["valid"])
    assert len(moved & set(parts["valid"])) / len(moved) == pytest.approx(0.2, abs=0.08)  # another seed draws afresh


def test_time_split_orders_train_before_valid_before_test(ray_session, tmp_path):
    rng = np.random.default_rng(2)
    n = 1200
    seconds = rng.choice(90 * 86400, n, replace=False)
    frame = pd.DataFrame({"ts": START + pd.to_timedelta(seconds, unit="s"), "a": rng.normal(size=n), "y": rng.integers(0, 2, n)})
    frame.loc[7, "ts"] = pd.NaT  # the time column may never be null
    write_shards(frame, tmp_path / "data", 2)
    features = {"numeric": ["a"], "categorical": []}
    cfg = config(tmp_path / "data", features, split="time", time_column="ts", valid_fraction=0.2, test_fraction=0.1)
    fit = fit_data(cfg.data, cfg.features, 0, tmp_path / "q", hold_out=True)
    rows = fit.source.dataset().select_columns(["ts", "a", SPLIT]).to_pandas()
    assert fit.passes.validated().quarantined == {"null:ts": 1} and len(rows) == n - 1
    t = {code: rows.ts[rows[SPLIT] == code] for code in (TRAIN, VALID, TEST)}
    assert t[TRAIN].max() < t[VALID].min() and t[VALID].max() < t[TEST].min()
    shares = [len(t[c]) / len(rows) for c in (TRAIN, VALID, TEST)]
    assert shares == pytest.approx([0.7, 0.2, 0.1], abs=0.02)
    train = rows[rows[SPLIT] == TRAIN]
    assert fit.fitted.raw_stats["rows"] == len(train)  # fitted on the train split only
    assert fit.fitted.pipeline.numeric[0].center == pytest.approx(train.a.mean())


# --- 3. Feature kinds against references -------------------------------------------------------


@pytest.fixture(scope="module")
def kinds(ray_session, tmp_path_factory):
    """One fit of every feature kind on 1500 rows from a parquet file with a timestamp column."""
    rng = np.random.default_rng(3)
    n = 1500
    m = rng.choice([0.0, 1.0, 2.0, 5.0], n, p=[0.2, 0.45, 0.25, 0.1])
    m[rng.random(n) < 0.1] = np.nan
    c = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]).astype(object)
    c[rng.random(n) < 0.1] = None
    e = rng.uniform(0, 100, n).round(1)
    e[:4] = [10.0, 25.5, 50.0, 90.0]  # values on the edges themselves
    frame = pd.DataFrame({
        "m": m,
        "b": rng.normal(0, 1, n),
        "e": e,
        "p": rng.lognormal(2.0, 0.8, n),
        "c": c,
        "o": rng.choice(["a1", "b2", "c3", "d4", "e5"], n),
        "h": np.char.add("merchant_", rng.integers(0, 500, n).astype(str)),
        "ts": START + pd.to_timedelta(rng.integers(0, 365 * 86400, n), unit="s"),
        "y": rng.integers(0, 2, n),
    })  # fmt: skip
    path = tmp_path_factory.mktemp("kinds") / "kinds.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    features = parse_config({"name": "t", "data": {"path": ".", "label": "y"}, "features": {
        "numeric": ["m", "b", "e", "p"],
        "categorical": ["c"],
        "ordinal": ["o"],
        "hashed": {"h": 16},
        "datetime": {"ts": ["hour", "day_of_week", "month", "day_of_year", "hour_sin", "hour_cos", "month_cos"]},
        "derived": {"d": "sqrt(e) * 2 + p / (e + 1) - b ** 2"},
        "bucketize": {"b": 4, "e": [90.0, 10.0, 25.5, 50.0]},
        "power": ["p"],
        "impute": "mode",
        "impute_categorical": "mode",
    }}).features  # fmt: skip
    fitted = fit_dataset(ray.data.read_parquet(str(path)).materialize(), "y", features)  # read once, not per pass
    return frame, fitted.pipeline


def feature(pipeline: FeaturePipeline, kind: str, name: str):
    return next(f for f in getattr(pipeline, kind) if f.name == name)


def test_ordinal_codes_follow_sklearn_on_seen_values_and_unseen_is_minus_one(kinds):
    from sklearn.preprocessing import OrdinalEncoder

    frame, pipeline = kinds
    o = feature(pipeline, "categorical", "o")
    assert o.encoding == "ordinal" and o.width == 1 and o.categories == sorted(frame.o.unique())
    reference = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1).fit(frame[["o"]])
    probe = pd.DataFrame({"o": ["c3", "a1", "e5", "zz", "b2"]})
    np.testing.assert_array_equal(o.encode(probe.o.tolist())[:, 0], reference.transform(probe)[:, 0])
    # impute_categorical: mode fills a missing ordinal with the most frequent category's code
    assert o.encode([None])[0, 0] == o.categories.index(frame.o.mode()[0])


def test_hashed_buckets_have_the_configured_width_and_match_hash_buckets_in_any_process(kinds):
    frame, pipeline = kinds
    h = feature(pipeline, "hashed", "h")
    assert h.width == 16 and sum(n.startswith("h_hash") for n in pipeline.output_names) == 16
    values = frame.h.tolist()[:200] + [None]
    encoded = h.encode(values)
    expected = hash_buckets(values, 16)
    np.testing.assert_array_equal(encoded[:-1].argmax(axis=1), expected[:-1])
    assert expected[-1] == -1 and not encoded[-1].any() and (encoded[:-1].sum(axis=1) == 1).all()
    elsewhere = ray.get(ray.remote(hash_buckets).remote(values, 16))  # another process, another hash salt
    np.testing.assert_array_equal(elsewhere, expected)


def test_datetime_parts_equal_pandas_dt(kinds):
    frame, pipeline = kinds
    ts = frame.ts.dt
    angle = 2 * np.pi * ts.hour / 24
    expected = {
        "ts_hour": ts.hour, "ts_day_of_week": ts.dayofweek, "ts_month": ts.month, "ts_day_of_year": ts.dayofyear,
        "ts_hour_sin": np.sin(angle), "ts_hour_cos": np.cos(angle), "ts_month_cos": np.cos(2 * np.pi * (ts.month - 1) / 12),
    }  # fmt: skip
    computed = pipeline.computed({"ts": frame.ts.to_numpy(), "e": frame.e, "p": frame.p, "b": frame.b})
    for name, values in expected.items():
        np.testing.assert_allclose(computed[name], np.asarray(values, dtype=np.float64), atol=1e-12, err_msg=name)
        # fitted in Ray from the same parts: the scaling centre is their mean
        assert feature(pipeline, "numeric", name).center == pytest.approx(np.mean(values)), name


def test_bucketize_equal_frequency_and_explicit_edges(kinds):
    frame, pipeline = kinds
    b = feature(pipeline, "buckets", "b")
    assert b.width == 4
    counts = b.encode(frame.b).sum(axis=0)
    assert counts.sum() == len(frame)
    np.testing.assert_allclose(counts / len(frame), 0.25, atol=0.02)  # edges from a KLL sketch
    e = feature(pipeline, "buckets", "e")
    assert e.edges == [10.0, 25.5, 50.0, 90.0] and e.width == 5
    values = np.append(frame.e.to_numpy(), np.nan)
    encoded = e.encode(values)
    np.testing.assert_array_equal(encoded[:-1].argmax(axis=1), np.digitize(values[:-1], e.edges))
    assert not encoded[-1].any()  # missing: no bucket


def test_power_transform_matches_sklearn_yeo_johnson(kinds):
    from sklearn.preprocessing import PowerTransformer

    frame, pipeline = kinds
    p = feature(pipeline, "numeric", "p")
    reference = PowerTransformer(method="yeo-johnson", standardize=True).fit(frame[["p"]])
    assert p.power == pytest.approx(reference.lambdas_[0], abs=0.02)
    scaled = (p.clean(frame.p) - p.center) / p.scale
    np.testing.assert_allclose(scaled, reference.transform(frame[["p"]])[:, 0], atol=0.02)


def test_derived_expression_equals_pandas_eval(kinds):
    frame, pipeline = kinds
    expected = frame.eval("sqrt(e) * 2 + p / (e + 1) - b ** 2").to_numpy()
    computed = pipeline.computed({c: frame[c].to_numpy() for c in ("e", "p", "b", "ts")})["d"]
    np.testing.assert_allclose(computed, expected, rtol=1e-12)
    d = feature(pipeline, "numeric", "d")
    assert d.center == pytest.approx(expected.mean()) and d.scale == pytest.approx(expected.std())


def test_mode_imputation_of_numbers_and_categories(kinds):
    frame, pipeline = kinds
    m = feature(pipeline, "numeric", "m")
    assert m.fill == frame.m.mode()[0] == 1.0
    filled = frame.m.fillna(1.0)
    assert m.center == pytest.approx(filled.mean()) and m.scale == pytest.approx(filled.std(ddof=0))
    assert m.clean([np.nan])[0] == 1.0
    c = feature(pipeline, "categorical", "c")
    assert c.fill == frame.c.mode()[0] == "red" and c.categories == ["blue", "green", "red"]
    np.testing.assert_array_equal(c.encode([None, "green", "purple"]), [[0, 0, 1], [0, 1, 0], [0, 0, 0]])


# --- 4. Feature selection ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["mutual_info", "importance"])
def test_selection_drops_constant_copy_and_noise_and_names_why(ray_session, method):
    rng = np.random.default_rng(4)
    n = 1500
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    columns = {"x1": x1, "x2": x2, "x1_copy": 2 * x1 + 1, "const": np.full(n, 3.0)}
    columns |= {f"noise{i}": rng.normal(size=n) for i in range(3)}
    columns["tag"] = rng.choice(["p", "q", "r"], n)
    columns["y"] = (x1 + x2 + rng.normal(0, 0.3, n) > 0).astype(int)
    ds = ray.data.from_pandas(pd.DataFrame(columns))
    cfg = parse_config({"name": "t", "data": {"path": ".", "label": "y"}, "features": {
        "numeric": ["x1", "x2", "x1_copy", "const", "noise0", "noise1", "noise2"],
        "categorical": ["tag"],
        "select": {"variance_threshold": 0.0, "max_correlation": 0.99, "top_k": 2, "method": method},
    }}).features  # fmt: skip
    fitted = fit_dataset(ds, "y", cfg)
    assert set(fitted.dropped) == {"const", "x1_copy", "noise0", "noise1", "noise2", "tag"}
    assert fitted.dropped["const"].startswith("variance <= 0.0")
    assert fitted.dropped["x1_copy"].startswith("|r| > 0.99")
    for name in ("noise0", "noise1", "noise2", "tag"):
        assert fitted.dropped[name] == f"not in the top 2 by {method}"
    assert fitted.pipeline.output_names == ["x1", "x2"]


# --- 5. Train/serve parity ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def parity(ray_session, tmp_path_factory):
    rng = np.random.default_rng(5)
    n = 600
    amount = rng.lognormal(3, 1, n)
    amount[rng.random(n) < 0.05] = np.nan
    ts = pd.Series(START + pd.to_timedelta(rng.integers(0, 200 * 86400, n), unit="s"))
    ts[rng.random(n) < 0.05] = pd.NaT
    frame = pd.DataFrame({
        "amount": amount,
        "age": pa.array(np.where(rng.random(n) < 0.05, None, rng.integers(0, 2000, n)).tolist(), pa.int64()),
        "country": pd.Series(rng.choice(["US", "GB", "DE", "rare", None], n, p=[0.5, 0.25, 0.2, 0.02, 0.03]), dtype=object),
        "plan": rng.choice(["basic", "plus", "pro"], n),
        "merchant": np.char.add("m", rng.integers(0, 50, n).astype(str)),
        "ts": ts,
        "y": rng.choice(["no", "yes"], n),
    })  # fmt: skip
    path = tmp_path_factory.mktemp("parity") / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    features = parse_config({"name": "t", "data": {"path": ".", "label": "y"}, "features": {
        "numeric": ["amount", "age"],
        "categorical": ["country"],
        "ordinal": ["plan"],
        "hashed": {"merchant": 8},
        "datetime": {"ts": ["hour_sin", "hour_cos", "day_of_week", "month"]},
        "derived": {"per_day": "amount / (age + 1)"},
        "bucketize": {"age": 3, "amount": [10.0, 50.0]},
        "impute": "median",
        "missing_indicators": True,
        "cap": "iqr",
        "log1p": ["amount", "per_day"],
        "max_categories": 3,
        "other_bucket": True,
    }}).features  # fmt: skip
    ds = ray.data.read_parquet(str(path)).materialize()
    pipeline = fit_dataset(ds, "y", features).pipeline
    batched = {}
    for fmt in ("numpy", "pyarrow"):  # training maps numpy batches, the data stage Arrow tables
        batches = ds.map_batches(pipeline.transform_xy, batch_format=fmt).iter_batches(batch_size=None, batch_format="numpy")
        batched[fmt] = sort_rows(np.concatenate([np.hstack([b["x"], b["y"][:, None]]) for b in batches]))
    np.testing.assert_array_equal(batched["pyarrow"], batched["numpy"])
    return pq.read_table(path).to_pylist(), pipeline, batched["numpy"]


def as_request(row: dict, i: int) -> dict:
    """A row as a client sends it: JSON values, timestamps as ISO text in assorted offsets."""
    out = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
    if out["ts"] is not None:
        utc = out["ts"].replace(tzinfo=timezone.utc)
        out["ts"] = [utc.replace(tzinfo=None).isoformat(), utc.isoformat().replace("+00:00", "Z"),
                     utc.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()][i % 3]  # fmt: skip
    return out


def one_by_one(pipeline: FeaturePipeline, rows: list[dict]) -> np.ndarray:
    x = np.vstack([pipeline.transform({k: [r[k]] for k in pipeline.input_columns}) for r in rows])
    return sort_rows(np.hstack([x, pipeline.encode_labels([r["y"] for r in rows])[:, None]]))


def test_ray_batches_equal_one_request_at_a_time(parity):
    rows, pipeline, batched = parity
    assert batched.shape == (len(rows), pipeline.output_dim + 1)
    every_kind = {"amount_missing", "per_day", "ts_month", "age_bucket2", "country=other", "plan", "merchant_hash7"}
    assert every_kind <= set(pipeline.output_names)
    requests = [as_request(r, i) for i, r in enumerate(rows)]
    np.testing.assert_array_equal(one_by_one(pipeline, requests), batched)
    restored = FeaturePipeline.from_json(pipeline.to_json())
    assert restored == pipeline
    np.testing.assert_array_equal(one_by_one(restored, requests), batched)


def test_ordinal_without_imputation_codes_missing_and_unseen_as_minus_one(parity):
    _, pipeline, _ = parity
    plan = feature(pipeline, "categorical", "plan")
    assert plan.categories == ["basic", "plus", "pro"] and plan.fill is None
    np.testing.assert_array_equal(plan.encode(["pro", None, "gold", "basic"])[:, 0], [2, -1, -1, 0])


def test_request_model_path_equals_batches_and_rejects_malformed_timestamps(parity):
    rows, pipeline, batched = parity
    Request = make_request_model(pipeline, max_rows=len(rows))
    requests = [{k: v for k, v in as_request(r, i).items() if k in pipeline.input_columns} for i, r in enumerate(rows)]
    body = Request.model_validate({"rows": requests})
    served = [row | {"y": r["y"]} for row, r in zip(body.rows, rows)]  # what the replica transforms
    np.testing.assert_array_equal(one_by_one(pipeline, served), batched)
    good = dict(requests[0], ts="2024-03-01T12:30:00+02:00")
    assert Request.model_validate({"rows": [good]}).rows[0]["ts"].utcoffset() == timedelta(hours=2)
    for bad in ("2024-13-45T99:00:00", "yesterday"):
        with pytest.raises(ValidationError) as info:
            Request.model_validate({"rows": [dict(good, ts=bad)]})
        assert [e["loc"] for e in info.value.errors()] == [("rows", 0, "ts")]


# --- 6. Bad input ------------------------------------------------------------------------------


def test_a_string_in_a_number_column_quarantines_only_its_row(ray_session, tmp_path):
    (tmp_path / "a.jsonl").write_text("".join(f'{{"a": {i}.5, "c": "x", "y": {i % 2}}}\n' for i in range(4)))
    lines = [f'{{"a": {10 + i}.25, "c": "z", "y": {i % 2}}}' for i in range(6)]
    lines[3] = '{"a": "n/a", "c": "z", "y": 1}'
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n")
    good, report = validate_data(config(tmp_path, max_bad_fraction=0.2).data, tmp_path / "q")
    assert report.rows_read == 10 and report.quarantined == {"type:a": 1}
    assert sorted(r["a"] for r in good.take_all()) == [0.5, 1.5, 2.5, 3.5, 10.25, 11.25, 12.25, 14.25, 15.25]
    [row] = pq.read_table(tmp_path / "q").to_pylist()
    assert (row[ROW], row[DETAIL], row[REASON], row[SOURCE]) == (3, "a=n/a", "type:a", str(tmp_path / "b.jsonl"))
    assert row["a"] is None and row["c"] == "z"


def test_shards_whose_first_block_all_mix_types_still_give_a_schema(ray_session, tmp_path):
    # Every file fails the typed first-block read that schema inference uses, as large dirty exports do.
    for name, a in [("a", [1.5, "n/a", 2.5]), ("b", ["?", 3.5, 4.5])]:
        (tmp_path / f"{name}.jsonl").write_text("".join(f'{{"a": {json.dumps(v)}, "y": {i % 2}}}\n' for i, v in enumerate(a)))
    good, report = validate_data(config(tmp_path, columns={"a": {"type": "float"}}, max_bad_fraction=0.5).data, tmp_path / "q")
    assert report.quarantined == {"type:a": 2} and report.schema["a"] == "double"
    assert sorted(r["a"] for r in good.take_all()) == [1.5, 2.5, 3.5, 4.5]


def test_an_empty_dataset_fails_clearly(ray_session, tmp_path):
    pq.write_table(pa.table({"a": pa.array([], pa.float64()), "y": pa.array([], pa.int64())}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="no valid rows"):
        prepare(tmp_path, tmp_path / "q")


def test_too_few_rows_for_a_split_fails_clearly(ray_session, tmp_path):
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0], "y": [0, 1, 0]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="data.valid_fraction"):
        prepare(tmp_path, tmp_path / "q", valid_fraction=0.01)


@pytest.mark.parametrize(
    "features, data, field",
    [
        ({"derived": {"ratio": "a / nope"}}, {}, "features.derived.ratio"),
        ({"hashed": {"nope": 8}}, {}, "features.hashed"),
        ({}, {"dedupe": "key", "dedupe_key": ["nope"]}, "data.dedupe_key"),
    ],
)
def test_unknown_columns_in_the_config_name_the_field(ray_session, tmp_path, features, data, field):
    pq.write_table(pa.table({"a": [1.0, 2.0], "c": ["x", "y"], "y": [0, 1]}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match=rf"^{field}: .*nope"):
        prepare(tmp_path, tmp_path / "q", features, **data)


# --- The fraud example ---------------------------------------------------------------------------


def test_fraud_example_config_prepares_its_generated_data(ray_session, tmp_path, monkeypatch):
    paths, defects = example_generator("fraud").generate(tmp_path / "data", rows=3000, shards=3, seed=0)
    cfg = load_config(FRAUD / "pipeline.yaml", [f"data.path={tmp_path / 'data'}"])
    assert cfg.data.path == str(tmp_path / "data")
    cuts, fit_time_split = [], prepare_module.fit_time_split

    def spy(*args):  # keep the cutoffs the stage fitted, to split a pandas reference at them
        cuts.append(fit_time_split(*args))
        return cuts[-1]

    monkeypatch.setattr(prepare_module, "fit_time_split", spy)
    prepared = prepare_data(cfg.data, cfg.features, cfg.seed, tmp_path / "quarantine")

    report = prepared.validation
    bad = np.bincount(np.arange(defects["malformed"]) % 3, minlength=3)  # the generator's three kinds, in turn
    assert report.quarantined == {"type:amount": bad[0], "range:amount": bad[1], "not_allowed:country": bad[2]}
    assert sorted(pq.read_table(tmp_path / "quarantine").column(REASON).to_pylist()) == sorted(
        ["type:amount"] * bad[0] + ["range:amount"] * bad[1] + ["not_allowed:country"] * bad[2]
    )
    assert report.duplicates == defects["exact_duplicates"] + defects["key_duplicates"] > 0

    # pandas reference: valid rows, first copy per transaction id, split at the fitted cutoffs
    frame = pd.concat([pd.read_json(p, lines=True, dtype=False) for p in paths], ignore_index=True)
    amount = pd.to_numeric(frame.amount, errors="coerce")
    frame = frame[(amount >= 0) & (frame.country != "ZZ")].drop_duplicates("transaction_id")
    seconds = (pd.to_datetime(frame.ts, utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    [rule] = cuts
    expected = {
        "train": int((seconds < rule.valid_from).sum()),
        "valid": int(((seconds >= rule.valid_from) & (seconds < rule.test_from)).sum()),
        "test": int((seconds >= rule.test_from).sum()),
    }
    assert prepared.num_rows == expected and min(expected.values()) > 0
    assert [n / len(frame) for n in expected.values()] == pytest.approx([0.7, 0.2, 0.1], abs=0.02)

    pipeline = prepared.features
    widths = {"country": len(feature(pipeline, "categorical", "country").categories), "device": 3}
    numeric = ["amount", "card_age_days", "customer_tenure_days", "amount_per_card_day"]
    numeric += ["ts_hour_sin", "ts_hour_cos", "ts_day_of_week"]
    assert [f.name for f in pipeline.numeric] == numeric
    bucket = feature(pipeline, "buckets", "card_age_days")
    assert pipeline.output_dim == 2 * len(numeric) + bucket.width + sum(widths.values()) + 64
    assert feature(pipeline, "categorical", "device").fill == "phone"
    assert feature(pipeline, "numeric", "amount").power is not None
    for split in ("train", "valid", "test"):
        assert matrix(getattr(prepared, split)).shape == (prepared.num_rows[split], pipeline.output_dim)

