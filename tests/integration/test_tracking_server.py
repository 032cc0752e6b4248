"""The quickstart against a real `mlflow server` (SQLite backend, proxied artifacts) instead of the
embedded store: runs, artifacts and the registry go over HTTP, and Serve loads the model from it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import requests

from raymlp.config import load_config
from raymlp.pipeline import run_pipeline

from conftest import QUICKSTART, free_port, tiny_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # about 3.5 minutes: its own mlflow server and pipeline

ROW = {"tenure_months": 3.0, "monthly_charges": 80.0, "support_calls": 4, "age": 30, "plan": "basic", "region": "south"}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free local port, until the module's tests are done. Artifacts are
    proxied (`mlflow-artifacts:/`): clients never see the server's folder."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = (root / "server.log").open("w")
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # Its own process group: the server starts workers of its own, and all of them must go.
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # creating the SQLite schema takes a while on 2 busy cores
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield url, root / "artifacts"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="module")
def served(ray_session, quickstart_data, mlflow_server, tmp_path_factory):
    from ray import serve

    url, _ = mlflow_server
    serve.shutdown()  # an earlier test's Serve keeps its own HTTP port and app on /
    previous_uri = mlflow.get_tracking_uri()
    overrides = tiny_overrides(quickstart_data, tmp_path_factory.mktemp("runs"), free_port())
    cfg = load_config(QUICKSTART / "pipeline.yaml", [*overrides, f"registry.tracking_uri={url}"])
    yield run_pipeline(cfg, ["data", "train", "register", "compress", "serve"])
    serve.shutdown()  # its replicas read the registry of a server about to stop
    mlflow.set_tracking_uri(previous_uri)


def test_run_artifacts_and_registry_live_on_the_server(served, mlflow_server, tmp_path):
    url, artifacts_dir = mlflow_server
    result = served
    assert result.tracking_uri == url
    client = mlflow.MlflowClient(url)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert run.data.tags["data.fingerprint"] == result.validation.fingerprint
    assert run.data.tags["version.mlflow"] == mlflow.__version__
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "data/features.json" in {a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert list(artifacts_dir.rglob("config.yaml"))  # stored by the server, not beside the client
    # No search among these stages: the learning curves are the only plot.
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/learning_curves.png"]
    png = client.download_artifacts(run.info.run_id, "plots/learning_curves.png", str(tmp_path))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    version = client.get_model_version(result.model_name, result.model_version)
    assert version.run_id == run.info.run_id
    assert version.tags["lineage.data_fingerprint"] == result.validation.fingerprint
    assert client.list_artifacts(run.info.run_id, "model")


def test_served_model_loaded_from_the_server_answers_http(served):
    result = served
    assert result.prediction["predictions"]
    response = requests.post(
        f"{result.endpoint}/predict",
        json={"rows": [ROW, {**ROW, "plan": "premium"}]},
        headers={"Authorization": f"Bearer {result.api_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == result.model_version
    assert [set(p) for p in body["predictions"]] == [set(p) for p in result.prediction["predictions"][:1]] * 2
