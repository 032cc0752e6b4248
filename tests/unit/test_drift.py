"""Drift scores against a training reference: same distribution stays quiet, a shift is flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raymlp.data.features import CategoricalFeature, FeaturePipeline, NumericFeature
from raymlp.data.reference import PERCENTILES, DriftReference, category_reference, numeric_reference
from raymlp.config.schema import DriftConfig
from raymlp.monitor.drift import PREDICTION_KEY, DriftWindow, add_counts, count_rows, score


def counts_of(values: np.ndarray) -> dict[str, int]:
    found, n = np.unique(values, return_counts=True)
    return dict(zip(found.tolist(), n.tolist()))


def reference_of(numeric: dict[str, np.ndarray], plan: np.ndarray, labels: np.ndarray) -> DriftReference:
    """What fitting keeps, computed exactly from a sample (fitting uses a quantile sketch).
    `plan` keeps categories a, b and c: the transform lumps the rarer "d" with other values."""
    rows = len(labels)
    references = [numeric_reference(n, np.quantile(v, PERCENTILES).tolist(), len(v), rows) for n, v in numeric.items()]
    categorical = [category_reference("plan", ["a", "b", "c"], counts_of(plan), rows)]
    prediction = category_reference("label", ["no", "yes"], counts_of(labels), rows)
    return DriftReference(rows, references, categorical, prediction)


RNG = np.random.default_rng(0)
N = 20_000
REF = reference_of(
    {"amount": RNG.normal(100, 15, N), "calls": RNG.poisson(1.2, N).astype(float)},
    RNG.choice(["a", "b", "c", "d"], size=N, p=[0.4, 0.3, 0.2, 0.1]),
    RNG.choice(["no", "yes"], size=N, p=[0.7, 0.3]),
)


def new_rows(n: int, shift: float = 0.0, missing: float = 0.0, plan_p=(0.4, 0.3, 0.2, 0.1), seed: int = 1):
    rng = np.random.default_rng(seed)
    amount = rng.normal(100 + shift * 15, 15, n)
    amount[rng.random(n) < missing] = np.nan
    return {"amount": amount, "calls": rng.poisson(1.2, n).astype(float), "plan": rng.choice(["a", "b", "c", "d"], size=n, p=plan_p)}


def by_name(report):
    return {f.name: f for f in report.features}


def test_rows_from_the_training_distribution_do_not_drift():
    report = score(REF, count_rows(REF, new_rows(5_000), np.random.default_rng(2).choice(["no", "yes"], 5_000, p=[0.7, 0.3])))
    assert report.rows == 5_000 and report.drifted == []
    features = by_name(report)
    assert features["amount"].psi < 0.02 and features["amount"].ks < 0.03
    # A lumpy count column: the deciles repeat values, and tied bins merge instead of splitting.
    assert features["calls"].psi < 0.02 and features["calls"].ks < 0.03
    assert len(features["calls"].bins) < len(features["amount"].bins)
    assert features["plan"].psi < 0.02 and features["plan"].ks is None
    assert report.prediction.psi < 0.02 and not report.prediction.drifted


def test_a_shifted_numeric_feature_is_flagged_by_psi_and_ks():
    features = by_name(score(REF, count_rows(REF, new_rows(5_000, shift=1.0))))
    assert features["amount"].drifted and features["amount"].psi > 0.5 and features["amount"].ks > 0.3
    assert not features["calls"].drifted and not features["plan"].drifted


def test_a_small_shift_shows_in_ks_before_psi_crosses_its_threshold():
    amount = by_name(score(REF, count_rows(REF, new_rows(20_000, shift=0.3))))["amount"]
    assert 0.1 <= amount.ks < 0.2 and amount.psi < 0.2 and amount.drifted


def test_values_going_missing_drift_through_the_missing_bin():
    amount = by_name(score(REF, count_rows(REF, new_rows(5_000, missing=0.3))))["amount"]
    assert amount.actual[-1] == pytest.approx(0.3, abs=0.02) and amount.expected[-1] == 0.0
    assert amount.psi > 0.2 and amount.drifted
    assert amount.ks < 0.03  # the present values have not moved


def test_category_shift_and_unseen_values_count_as_other():
    rows = new_rows(5_000, plan_p=(0.1, 0.1, 0.2, 0.6))
    rows["plan"] = np.where(np.arange(5_000) % 10 == 0, None, np.where(rows["plan"] == "d", "brand-new", rows["plan"]))
    plan = by_name(score(REF, count_rows(REF, rows)))["plan"]
    assert plan.bins == ["a", "b", "c", "other", "missing"]
    assert plan.actual[3] == pytest.approx(0.54, abs=0.03) and plan.actual[4] == pytest.approx(0.1, abs=0.001)
    assert plan.drifted and plan.psi > 1.0


def test_prediction_drift_compares_predicted_labels_with_training_labels():
    predicted = np.random.default_rng(3).choice(["no", "yes"], 5_000, p=[0.3, 0.7])
    report = score(REF, count_rows(REF, new_rows(5_000), predicted))
    assert report.prediction.kind == "prediction" and report.prediction.drifted
    assert report.drifted == []  # prediction drift is reported apart from the features


def test_counts_of_parts_add_up_to_the_counts_of_the_whole():
    rows = new_rows(3_000, shift=0.5, missing=0.1)
    labels = np.random.default_rng(4).choice(["no", "yes"], 3_000)
    whole = count_rows(REF, rows, labels)
    first = count_rows(REF, {k: v[:1_000] for k, v in rows.items()}, labels[:1_000])
    rest = count_rows(REF, {k: v[1_000:] for k, v in rows.items()}, labels[1_000:])
    summed = add_counts(first, rest)
    assert summed.keys() == whole.keys() and PREDICTION_KEY in whole
    for name in whole:
        np.testing.assert_array_equal(summed[name], whole[name])
    assert score(REF, summed) == score(REF, whole)


def test_too_few_rows_are_scored_but_never_flagged():
    report = score(REF, count_rows(REF, new_rows(100, shift=3.0)), DriftConfig(min_rows=500))
    assert by_name(report)["amount"].psi > 1.0 and report.drifted == []


def test_reference_travels_inside_the_feature_pipeline_json():
    pipeline = FeaturePipeline(label="churned", classes=["no", "yes"], numeric=[NumericFeature("amount", fill=100.0)], reference=REF)
    loaded = FeaturePipeline.from_json(pipeline.to_json())
    assert loaded.reference == REF and loaded == pipeline


def test_a_transform_saved_before_the_reference_existed_still_loads():
    state = json.loads(FeaturePipeline(label="y", classes=[0, 1]).to_json())
    state["format_version"] = 3
    del state["reference"]
    assert FeaturePipeline.from_json(json.dumps(state)).reference is None


def test_a_serving_window_keeps_the_latest_rows_in_whole_batches():
    numeric = [NumericFeature("amount", fill=100.0), NumericFeature("calls", fill=1.0)]
    categorical = [CategoricalFeature("plan", ["a", "b", "c"])]
    pipeline = FeaturePipeline(label="label", classes=["no", "yes"], numeric=numeric, categorical=categorical, reference=REF)
    window = DriftWindow(pipeline, rows=1_000)
    shifted = new_rows(1_500, shift=2.0)
    for start in range(0, 1_500, 300):  # 1,500 rows of shifted traffic, then 1,200 of the training kind
        window.add({k: v[start : start + 300].tolist() for k, v in shifted.items()}, np.full(300, "no"))
    calm = new_rows(1_200)
    for start in range(0, 1_200, 300):
        window.add({k: v[start : start + 300].tolist() for k, v in calm.items()}, np.full(300, "no"))
    assert window.held == 1_200  # whole batches: the oldest goes once the rest still hold 1,000 rows
    report = window.score(window.snapshot(), DriftConfig())
    assert report.rows == 1_200 and report.drifted == [] and report.prediction.drifted
    window.add({k: v.tolist() for k, v in shifted.items()}, np.full(1_500, "no"))
    assert window.held == 1_500 and window.score(window.snapshot(), DriftConfig()).drifted == ["amount"]
