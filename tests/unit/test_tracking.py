"""Tracking calls against a real (file-based SQLite) MLflow store."""

import mlflow

from raymlp.lifecycle.tracking import log_history


def test_a_history_longer_than_one_log_batch_call_is_logged_whole(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("tracking")  # not the experiment id an earlier test's store left active
    history = [{"epoch": e, **{f"m{i}": e * 0.5 + i for i in range(5)}} for e in range(1, 301)]  # 1500 metrics
    with mlflow.start_run() as run:
        log_history(history)
    series = mlflow.MlflowClient().get_metric_history(run.info.run_id, "m4")
    assert sorted((m.step, m.value) for m in series) == [(e, e * 0.5 + 4) for e in range(1, 301)]
