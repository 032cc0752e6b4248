"""The fitted transform: distributed statistics match numpy, and the Ray Dataset path and the
single-request path give identical numbers."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray.data

from raymlp.config.schema import FeaturesConfig
from raymlp.data.fit import fit_dataset, resolve_roles
from raymlp.data.reference import PERCENTILES
from raymlp.monitor.drift import count_rows, score

pytestmark = pytest.mark.integration


def test_fit_matches_numpy_and_batch_equals_per_request_transform(ray_session, quickstart_data):
    ds = ray.data.read_parquet(str(quickstart_data)).materialize()  # each re-read lists the files again: ~5 s
    roles = resolve_roles(ds.schema().base_schema, "churned", FeaturesConfig())
    assert roles.numeric == ["tenure_months", "monthly_charges", "support_calls", "age"]
    assert roles.categorical == ["plan", "region"]
    pipeline = fit_dataset(ds, "churned", FeaturesConfig(max_categories=2)).pipeline

    table = pq.read_table(quickstart_data).to_pandas()
    for f in pipeline.numeric:
        assert f.center == pytest.approx(table[f.name].mean())
        assert f.scale == pytest.approx(table[f.name].std(ddof=0))
    plan = next(f for f in pipeline.categorical if f.name == "plan")
    assert plan.categories == sorted(table["plan"].value_counts().index[:2])  # max_categories keeps the top 2
    assert pipeline.classes == [0, 1]

    batched = np.concatenate([b["x"] for b in ds.map_batches(pipeline.transform_xy, batch_format="numpy").iter_batches(batch_size=None)])
    rows = table.to_dict("records")
    one_by_one = np.vstack([pipeline.transform({k: [row[k]] for k in pipeline.input_columns}) for row in rows])
    np.testing.assert_array_equal(np.sort(batched, axis=0), np.sort(one_by_one, axis=0))


def test_the_drift_reference_holds_the_training_distribution_and_scores_it_as_undrifted(ray_session, quickstart_data):
    ds = ray.data.read_parquet(str(quickstart_data)).materialize()
    pipeline = fit_dataset(ds, "churned", FeaturesConfig(max_categories=2)).pipeline
    ref, table = pipeline.reference, pq.read_table(quickstart_data)
    assert ref.rows == table.num_rows
    charges = next(f for f in ref.numeric if f.name == "monthly_charges")
    present = table["monthly_charges"].drop_null().to_numpy()
    np.testing.assert_allclose(charges.quantiles, np.quantile(present, PERCENTILES))  # a sample: every row, here
    assert charges.missing == pytest.approx(1 - len(present) / table.num_rows)
    plan = next(f for f in ref.categorical if f.name == "plan")
    shares = table["plan"].to_pandas().value_counts(normalize=True, dropna=False)
    assert plan.fractions == pytest.approx([shares[c] for c in plan.categories])
    assert plan.other == pytest.approx(shares.drop(plan.categories).sum())  # max_categories lumps the rest
    labels = table["churned"].to_pandas().value_counts(normalize=True)
    assert ref.prediction.categories == ["0", "1"] and ref.prediction.fractions == pytest.approx([labels[0], labels[1]])

    report = score(ref, count_rows(ref, pipeline.expand(table), table["churned"].to_numpy()))
    assert report.drifted == [] and not report.prediction.drifted
    assert max(f.psi for f in report.features) < 0.01


@pytest.mark.parametrize(
    "cfg",
    [
        FeaturesConfig(impute="mean"),
        FeaturesConfig(impute="median", cap="iqr", missing_indicators=True),
        FeaturesConfig(impute="constant", fill_value=-1.0, cap="quantile", cap_quantiles=(0.05, 0.95)),
        FeaturesConfig(cap="zscore", cap_z=2.0),
    ],
    ids=["mean", "median-iqr", "constant-quantile", "zscore"],
)
def test_impute_cap_scale_match_a_numpy_reference(ray_session, cfg):
    rng = np.random.default_rng(0)
    values = rng.normal(50, 10, 2000)
    values[rng.choice(2000, 20, replace=False)] = 1000.0  # outliers
    values[rng.choice(2000, 100, replace=False)] = np.nan  # missing
    ds = ray.data.from_items([{"v": None if np.isnan(v) else float(v), "y": i % 2} for i, v in enumerate(values)], override_num_blocks=4)
    [feature] = fit_dataset(ds, "y", cfg).pipeline.numeric

    present = values[~np.isnan(values)]
    iqr = np.subtract(*np.quantile(present, [0.75, 0.25]))

    def rank(x: float) -> float:  # quantiles come from a KLL sketch: check them in rank space
        return float((present <= x).mean())

    if cfg.impute == "median":
        assert rank(feature.fill) == pytest.approx(0.5, abs=0.01)
    else:
        assert feature.fill == pytest.approx({"mean": present.mean(), "constant": cfg.fill_value}[cfg.impute])
    if cfg.cap == "iqr":
        q1, q3 = np.quantile(present, [0.25, 0.75])
        assert feature.lower == pytest.approx(q1 - 1.5 * iqr, abs=0.05 * iqr)
        assert feature.upper == pytest.approx(q3 + 1.5 * iqr, abs=0.05 * iqr)
    elif cfg.cap == "quantile":
        assert (rank(feature.lower), rank(feature.upper)) == pytest.approx(cfg.cap_quantiles, abs=0.01)
    elif cfg.cap == "zscore":
        assert (feature.lower, feature.upper) == pytest.approx((present.mean() - 2 * present.std(), present.mean() + 2 * present.std()))
    else:
        assert feature.lower is None and feature.upper is None
    cleaned = np.clip(np.where(np.isnan(values), feature.fill, values), feature.lower, feature.upper)
    np.testing.assert_allclose(feature.clean(values), cleaned)
    assert feature.center == pytest.approx(cleaned.mean())  # the second pass: exact moments of cleaned values
    assert feature.scale == pytest.approx(cleaned.std())
    assert feature.indicator == cfg.missing_indicators


@pytest.mark.parametrize("scaler", ["standard", "minmax", "robust"])
def test_scalers_and_log1p_match_a_numpy_reference(ray_session, scaler):
    values = np.random.default_rng(1).lognormal(3.0, 1.0, 1000)
    ds = ray.data.from_items([{"v": float(v), "y": i % 2} for i, v in enumerate(values)], override_num_blocks=4)
    cfg = FeaturesConfig(scaler=scaler, log1p=["v"])
    [feature] = fit_dataset(ds, "y", cfg).pipeline.numeric
    logged = np.log1p(values)
    q1, median, q3 = np.quantile(logged, [0.25, 0.5, 0.75])
    center, scale = {
        "standard": (logged.mean(), logged.std()),
        "minmax": (logged.min(), logged.max() - logged.min()),
        "robust": (median, q3 - q1),
    }[scaler]
    tolerance = 0.02 if scaler == "robust" else 1e-6  # robust: quartiles from a KLL sketch
    assert feature.center == pytest.approx(center, rel=tolerance)
    assert feature.scale == pytest.approx(scale, rel=tolerance)
    with pytest.raises(ValueError, match="features.log1p"):
        fit_dataset(ds, "y", FeaturesConfig(log1p=["w"]))
