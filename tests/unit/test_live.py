"""Live performance: served answers joined to labels by request id, scored as validation is."""

import asyncio

import numpy as np
import pytest

from raymlp.config.schema import FeedbackConfig
from raymlp.data.features import FeaturePipeline
from raymlp.monitor.live import Answered, Feedback, LiveScores, crossed

CLASSES = FeaturePipeline(label="churned", classes=[0, 1])
VALUES = FeaturePipeline(label="price", classes=[], task="regression", label_center=100.0, label_scale=10.0)


def served(*p_one: float) -> dict[str, np.ndarray]:
    """A replica's prediction columns for rows whose class-1 probability is each of `p_one`."""
    ones = np.array(p_one, dtype=np.float32)
    return {"prediction": (ones > 0.5).astype(np.int64), "prob_0": 1 - ones, "prob_1": ones}


def valued(*values: float) -> dict[str, np.ndarray]:
    return {"prediction": np.array(values)}


def test_classification_scores_match_what_was_served():
    scores = LiveScores(CLASSES, window_rows=100)
    scores.add("3", served(0.9, 0.2, 0.7, 0.4), [1, 0, 0, 1])
    live = scores.metrics("3")
    assert live["live_accuracy"] == pytest.approx(0.5) and live["live_rows"] == 4
    assert live["live_auc"] == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs ranked right
    assert scores.metrics("2") == {}


def test_the_window_keeps_the_latest_rows_per_version():
    scores = LiveScores(CLASSES, window_rows=4)
    scores.add("3", served(*[0.9] * 4), [0] * 4)  # all wrong...
    scores.add("3", served(*[0.9] * 4), [1] * 4)  # ...then all right: the wrong ones leave the window
    scores.add("4", served(0.9, 0.9), [0] * 2)
    assert scores.metrics("3")["live_accuracy"] == 1.0 and scores.metrics("3")["live_rows"] == 4
    assert scores.metrics("4")["live_accuracy"] == 0.0
    assert "live_auc" not in scores.metrics("4")  # one class only: AUC is undefined, not NaN


def test_regression_errors_are_in_the_label_units():
    scores = LiveScores(VALUES, window_rows=100)
    scores.add("1", valued(103.0, 96.0), [100.0, 100.0])
    assert scores.metrics("1")["live_rmse"] == pytest.approx(((9 + 16) / 2) ** 0.5, rel=1e-5)
    assert scores.metrics("1")["live_mae"] == pytest.approx(3.5, rel=1e-5)


def test_labels_join_by_request_id_and_only_the_latest_answers_are_kept():
    store = Feedback("churn", CLASSES.to_json(), FeedbackConfig(max_requests=2, window_rows=100), export_metrics=False)
    answers = [Answered(f"r{i}", "3", served(0.8, 0.3)) for i in range(3)]
    asyncio.run(store.record(answers))
    result = asyncio.run(store.join([
        {"request_id": "r0", "labels": [1, 0]},  # dropped: only the latest 2 answers are kept
        {"request_id": "r1", "labels": [1]},  # one label for two rows
        {"request_id": "r2", "labels": [1, 1]},
        {"request_id": "nope", "labels": [0]},
    ]))  # fmt: skip
    assert result["joined_rows"] == 2
    assert result["unknown_request_ids"] == ["r0", "nope"] and result["mismatched_request_ids"] == ["r1"]
    live = result["live"]["3"]
    assert live["live_accuracy"] == 0.5 and live["live_rows"] == 2  # r2: predicted 1 then 0, both labelled 1
    again = asyncio.run(store.join([{"request_id": "r2", "labels": [1, 1]}, {"request_id": "r1", "labels": [1, 0]}]))
    assert again["unknown_request_ids"] == ["r2"] and again["joined_rows"] == 2  # r2 joined once already; r1 now fits
    assert again["live"]["3"]["live_rows"] == 4


def test_thresholds_are_floors_or_ceilings_and_need_min_rows():
    cfg = FeedbackConfig(thresholds={"auc": 0.75, "accuracy": 0.8, "loss": 0.6}, min_rows=100)
    scores = {"live_auc": 0.74, "live_accuracy": 0.9, "live_loss": 0.61, "live_rows": 100.0}
    assert crossed(scores, cfg) == ["auc", "loss"]  # AUC under its floor, loss over its ceiling
    assert crossed({**scores, "live_rows": 99.0}, cfg) == []  # too few labelled rows to judge
    assert crossed({"live_accuracy": 0.5, "live_rows": 100.0}, cfg) == ["accuracy"]  # no AUC (one class): not judged


def test_a_version_past_its_thresholds_is_reported_degraded():
    cfg = FeedbackConfig(window_rows=100, thresholds={"accuracy": 0.75}, min_rows=4)
    store = Feedback("churn", CLASSES.to_json(), cfg, export_metrics=False)
    asyncio.run(store.record([Answered("good", "2", served(*[0.9] * 4)), Answered("bad", "3", served(*[0.9] * 4))]))
    result = asyncio.run(store.join([{"request_id": "good", "labels": [1] * 4}, {"request_id": "bad", "labels": [1, 0, 0, 0]}]))
    assert result["degraded"] == {"3": ["accuracy"]}
    live = asyncio.run(store.live())
    assert live["thresholds"] == {"accuracy": 0.75} and live["min_rows"] == 4
    assert live["versions"]["2"] == {"metrics": result["live"]["2"], "degraded": []}
    assert live["versions"]["3"]["degraded"] == ["accuracy"] and live["versions"]["3"]["metrics"]["live_accuracy"] == 0.25
