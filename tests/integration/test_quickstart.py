"""The quickstart pipeline end to end at tiny size: real Ray, real MLflow store, real HTTP."""

import json
import logging
from pathlib import Path

import mlflow
import pytest
import requests

from raymlp.config import load_config
from raymlp.lifecycle.registry import INT8_ACCEPTED_TAG
from raymlp.pipeline import run_pipeline
from raymlp.serve.model import load_served_model

from conftest import QUICKSTART, free_port, tiny_overrides

pytestmark = pytest.mark.integration

ROW = {"tenure_months": 3.0, "monthly_charges": 80.0, "support_calls": 4, "age": 30, "plan": "basic", "region": "south"}


@pytest.fixture(scope="module")
def quickstart(ray_session, quickstart_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs")
    cfg = load_config(QUICKSTART / "pipeline.yaml", tiny_overrides(quickstart_data, run_dir, free_port()))
    return cfg, run_pipeline(cfg)


def auth(result) -> dict[str, str]:
    return {"Authorization": f"Bearer {result.api_key}"}


def test_pipeline_registers_tracks_compresses_and_serves(quickstart):
    cfg, result = quickstart
    assert result.model_version == "1"
    assert 0.5 < result.metrics["valid_accuracy"] <= 1.0
    assert load_config(result.run_dir / "config.yaml") == cfg

    client = mlflow.MlflowClient(result.tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.params["train.epochs"] == "2"
    assert result.validation.rows_read == result.validation.rows_valid == 1500
    assert run.data.metrics["data.rows_read"] == 1500 and run.data.metrics["data.rows_invalid"] == 0
    assert client.get_metric_history(result.mlflow_run_id, "valid_accuracy")
    trials = client.search_runs(
        [run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.mlflow_run_id}'"
    )
    assert len(trials) == cfg.tune.num_samples

    version = client.get_model_version(result.model_name, result.model_version)
    assert version.run_id == result.mlflow_run_id
    report = result.compress  # a model this small does not shrink: tests/unit/test_compress.py checks a wider one
    assert run.data.metrics["compress.size_int8_bytes"] == report.size_int8_bytes > 0
    assert run.data.metrics["compress.latency_64_int8_ms"] == report.latency_64_int8_ms > 0
    assert version.tags[INT8_ACCEPTED_TAG] == str(report.accepted).lower()

    [prediction] = result.prediction["predictions"][:1]
    assert prediction["label"] in (0, 1)
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # serve.precision auto: int8 only when accepted, and only where it runs faster than fp32.
    assert result.prediction["precision"] in (("int8", "fp32") if report.accepted else ("fp32",))


def test_serve_precision_picks_the_weights(quickstart, caplog):
    _, result = quickstart
    version = mlflow.MlflowClient(result.tracking_uri).get_model_version(result.model_name, result.model_version)
    accepted = version.tags[INT8_ACCEPTED_TAG] == "true"
    assert load_served_model(version, "fp32")[1] == "fp32"
    model, precision = load_served_model(version, "int8")
    assert precision == ("int8" if accepted else "fp32") and bool(model.spec.quantization) == accepted
    with caplog.at_level(logging.INFO, logger="raymlp.serve.model"):
        model, precision = load_served_model(version, "auto")
    assert bool(model.spec.quantization) == (precision == "int8")
    assert ("serve.precision auto" in caplog.text) == accepted  # timed only when there is a choice
    assert load_served_model(version, "auto", device="cuda")[1] == "fp32"  # the compiled int8 kernels are CPU-only


def test_http_predicts_raw_rows_and_reports_the_version(quickstart):
    _, result = quickstart
    response = requests.post(
        f"{result.endpoint}/predict", json={"rows": [ROW, {**ROW, "plan": "premium"}]}, headers=auth(result), timeout=30
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == result.model_name and body["version"] == result.model_version
    assert len(body["predictions"]) == 2
    assert "," not in response.headers["x-request-id"]  # one id (Serve's proxy makes it), not two
    traced = requests.post(
        f"{result.endpoint}/predict", json={"rows": [ROW]}, headers={**auth(result), "X-Request-ID": "trace-7"}, timeout=30
    )
    assert traced.headers["x-request-id"] == "trace-7"
    assert requests.get(f"{result.endpoint}/healthz", timeout=10).json()["status"] == "ok"
    schema = requests.get(f"{result.endpoint}/openapi.json", headers=auth(result), timeout=10).json()
    assert set(ROW) <= set(schema["components"]["schemas"]["Row"]["properties"])


def test_columns_get_the_same_predictions_as_rows_as_lists(quickstart):
    _, result = quickstart
    rows = [ROW, {**ROW, "plan": "premium", "age": None}, {**ROW, "region": "nowhere", "tenure_months": 40.0}]
    by_rows = requests.post(f"{result.endpoint}/predict", json={"rows": rows}, headers=auth(result), timeout=30)
    columns = {name: [row[name] for row in rows] for name in ROW}
    by_columns = requests.post(f"{result.endpoint}/predict/columns", json={"columns": columns}, headers=auth(result), timeout=30)
    assert by_rows.status_code == by_columns.status_code == 200, by_columns.text
    answer, predicted = by_columns.json(), by_rows.json()["predictions"]
    assert {k: v for k, v in answer.items() if k != "predictions"} == {k: v for k, v in by_rows.json().items() if k != "predictions"}
    assert answer["predictions"]["label"] == [p["label"] for p in predicted]
    classes = list(predicted[0]["probabilities"])
    assert answer["predictions"]["probabilities"] == {c: [p["probabilities"][c] for p in predicted] for c in classes}
    assert len(answer["predictions"]["label"]) == 3


@pytest.mark.parametrize(
    "columns, field",
    [
        ({**{k: [v] for k, v in ROW.items()}, "age": [30, 31]}, "body"),  # lengths differ
        ({**{k: [v] for k, v in ROW.items()}, "plan": ["\ud800"]}, "body.columns.plan"),
        ({k: [v] for k, v in ROW.items() if k != "age"}, "body.columns.age"),
        ({**{k: [v] for k, v in ROW.items()}, "age": ["old"]}, "body.columns.age.0"),
        ({k: [] for k in ROW}, "body.columns.age"),
    ],
)
def test_malformed_columns_get_422_naming_the_problem(quickstart, columns, field):
    _, result = quickstart
    response = requests.post(f"{result.endpoint}/predict/columns", data=json.dumps({"columns": columns}),
                             headers={"content-type": "application/json", **auth(result)}, timeout=30)  # fmt: skip
    assert response.status_code == 422, response.text
    assert any(e["field"] == field for e in response.json()["detail"]), response.json()


@pytest.mark.parametrize(
    "raw_body, field",
    [
        (json.dumps({"rows": [ROW]}).replace("3.0", "NaN"), "body.rows.0.tenure_months"),
        (json.dumps({"rows": [ROW]}).replace("3.0", "Infinity"), "body.rows.0.tenure_months"),
        (json.dumps({"rows": [{**ROW, "age": "old"}]}), "body.rows.0.age"),
        (json.dumps({"rows": [{k: v for k, v in ROW.items() if k != "plan"}]}), "body.rows.0.plan"),
        (json.dumps({"rows": [{**ROW, "colour": "red"}]}), "body.rows.0.colour"),
        (json.dumps({"rows": []}), "body.rows"),
        ("{not json", "body"),
    ],
)
def test_malformed_requests_get_422_naming_the_field_and_the_replica_keeps_serving(quickstart, raw_body, field):
    _, result = quickstart
    response = requests.post(
        f"{result.endpoint}/predict", data=raw_body, headers={"content-type": "application/json", **auth(result)}, timeout=30
    )
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json()["detail"]]
    assert any(f.startswith(field) for f in fields), fields
    assert "NaN" not in response.text and '"red"' not in response.text  # input is never echoed
    assert requests.post(f"{result.endpoint}/predict", json={"rows": [ROW]}, headers=auth(result), timeout=30).status_code == 200


def test_auth_is_on_by_default_with_a_generated_key(quickstart):
    cfg, result = quickstart
    key_file = Path(cfg.run_dir) / "api_keys"
    assert key_file.read_text().strip() == result.api_key and key_file.stat().st_mode & 0o077 == 0
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = requests.post(f"{result.endpoint}/predict", json={"rows": [ROW]}, headers=headers, timeout=30)
        assert response.status_code == 401 and "API key" in response.json()["detail"]
    assert requests.get(f"{result.endpoint}/docs", timeout=10).status_code == 401
    assert requests.get(f"{result.endpoint}/readyz", timeout=10).json()["status"] == "ready"  # probes stay open


def test_missing_data_path_is_named(ray_session, tmp_path):
    cfg = load_config(QUICKSTART / "pipeline.yaml", [f"data.path={tmp_path / 'nope'}", f"run_dir={tmp_path}"])
    with pytest.raises(FileNotFoundError, match=r"data.path: no such file or folder: .*nope"):
        run_pipeline(cfg, ["data"])
