"""Retraining on new data: no drift, no retrain; drift retrains, a better model is promoted and the
running app rolls over to it, a worse one stays challenger; a second retrain at once is refused;
live metrics past their thresholds retrain, and not before labels say so."""

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from ray import serve

from raymlp.config import load_config, with_values
from raymlp.lifecycle.registry import CHAMPION, alias_version, list_versions
from raymlp.monitor.retrain import RetrainRunning, retrain, retrain_guard
from raymlp.serve.app import build_model_app, deploy
from raymlp.serve.client import predict, send_feedback

from conftest import QUICKSTART, STRONG, WEAK, copy_registry, example_generator, free_port, tiny_overrides

pytestmark = pytest.mark.integration

STAGES = ["data", "train", "register"]  # compress only adds its int8 compile time here
ROW = {"tenure_months": 3.0, "monthly_charges": 80.0, "support_calls": 4, "age": 30, "plan": "basic", "region": "south"}


@pytest.fixture(scope="module")
def pipeline(registry_runs, quickstart_data, tmp_path_factory):
    """The shared registry with its weak version 1 as champion, served without auth."""
    serve.shutdown()
    overrides = [*tiny_overrides(quickstart_data, tmp_path_factory.mktemp("retrain"), free_port()),
                 "train.num_workers=1", "tune.metric=valid_auc", "serve.auth.mode=none", "serve.cpus_per_replica=0.25"]  # fmt: skip
    cfg = load_config(QUICKSTART / "pipeline.yaml", overrides)
    yield cfg, copy_registry(registry_runs, cfg, champion="1")
    serve.shutdown()


def new_data(folder, seed: int, charges_shift: float = 0.0):
    table = example_generator("quickstart").make_table(1500, seed=seed)
    charges = pa.array(table["monthly_charges"].to_numpy() + charges_shift)
    folder.mkdir()
    pq.write_table(table.set_column(table.schema.get_field_index("monthly_charges"), "monthly_charges", charges), folder / "part.parquet")
    return str(folder)


def test_data_like_the_training_data_is_not_retrained_on_and_one_retrain_runs_at_a_time(pipeline, tmp_path):
    cfg, target = pipeline
    client = mlflow.MlflowClient(target.tracking_uri)
    before = len(list_versions(client, target.model_name))
    data = new_data(tmp_path / "same", seed=21)
    with retrain_guard(cfg.name), pytest.raises(RetrainRunning, match="already running"):
        retrain(cfg, data, ("drifted",), STAGES)
    outcome = retrain(cfg, data, ("drifted",), STAGES)
    assert not outcome.ran and outcome.reason.startswith("no drift") and outcome.drift.report.drifted == []
    assert len(list_versions(client, target.model_name)) == before


def test_drift_retrains_and_only_a_better_model_takes_over_the_running_app(pipeline, tmp_path):
    cfg, target = pipeline
    client = mlflow.MlflowClient(target.tracking_uri)
    url = deploy(build_model_app(cfg.serve, cfg.monitor, target, []), cfg.serve, name=cfg.name)
    assert predict(url, [ROW])["version"] == "1"
    drifted = new_data(tmp_path / "drifted", seed=22, charges_shift=40.0)

    better = retrain(with_values(cfg, dict(o.split("=") for o in STRONG)), drifted, ("drifted",), STAGES)
    assert better.ran and "monthly_charges" in better.reason
    new = better.result.model_version
    assert better.result.promotion.promote and alias_version(client, target.model_name, CHAMPION).version == int(new)
    assert better.redeployed == url and predict(url, [ROW])["version"] == new

    worse = retrain(with_values(cfg, dict(o.split("=") for o in WEAK)), drifted, ("always",), STAGES)
    assert worse.ran and not worse.result.promotion.promote and worse.redeployed is None
    assert alias_version(client, target.model_name, CHAMPION).version == int(new)
    assert np.isclose(better.result.promotion.challenger_metric, worse.result.promotion.champion_metric)
    assert predict(url, [ROW])["version"] == new


def test_live_metrics_past_their_threshold_retrain(pipeline):
    cfg, target = pipeline
    with pytest.raises(ValueError, match="monitor.feedback.enabled: true and monitor.feedback.thresholds"):
        retrain(cfg, None, ("degraded",), ["data"])
    cfg = with_values(cfg, {"monitor.feedback.enabled": True, "monitor.feedback.thresholds": {"accuracy": 0.6},
                            "monitor.feedback.min_rows": 40})  # fmt: skip
    url = deploy(build_model_app(cfg.serve, cfg.monitor, target, []), cfg.serve, name=cfg.name)
    version = predict(url, [ROW])["version"]
    quiet = retrain(cfg, None, ("degraded",), ["data"])
    assert not quiet.ran and quiet.reason == f"no labels joined to version {version}'s answers yet: not retrained"

    rows = example_generator("quickstart").make_table(40, seed=23).drop(["churned"]).to_pylist()
    wrong = [1 - p["label"] for p in predict(url, rows, request_id="all-wrong")["predictions"]]
    assert send_feedback(url, [{"request_id": "all-wrong", "labels": wrong}])["degraded"] == {version: ["accuracy"]}
    assert requests.get(f"{url}/feedback", timeout=30).json()["versions"][version]["degraded"] == ["accuracy"]
    loud = retrain(cfg, None, ("drifted", "degraded"), ["data"])  # either trigger retrains; the reason names each that fired
    assert loud.ran and loud.drift is not None
    assert loud.reason.endswith(f"live accuracy 0.000 (threshold 0.6) over version {version}'s latest 40 labelled rows: retrained")
