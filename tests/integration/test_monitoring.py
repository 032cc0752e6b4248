"""A real Prometheus on 127.0.0.1, configured by the shipped clusters/monitoring files, scrapes the
served app through Ray's metrics export: request counts rise, the drift score of a feature crosses
its threshold once drifted traffic arrives (and not before), and labels sent after their
predictions show as live accuracy, past its threshold."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import ray
import requests
import yaml
from ray import serve

from raymlp.cli import main
from raymlp.monitor.metrics import RetrainMetrics
from raymlp.config import load_config
from raymlp.serve.app import build_model_app, deploy
from raymlp.serve.client import predict

from conftest import QUICKSTART, REPO, copy_registry, example_generator, free_port, tiny_overrides

pytestmark = [
    pytest.mark.integration,
    pytest.mark.prometheus,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus: scripts/install_prometheus.sh"),
]

MONITORING = REPO / "clusters" / "monitoring"
WINDOW = 1_000


@pytest.fixture(scope="module")
def served(registry_runs, quickstart_data, tmp_path_factory):
    """The shared registry's strong version as champion, served without auth; each replica scores
    its latest 1,000 rows every second."""
    serve.shutdown()
    run_dir = tmp_path_factory.mktemp("monitoring")
    overrides = [
        *tiny_overrides(quickstart_data, run_dir, free_port()),
        "serve.cpus_per_replica=0.25",
        "serve.auth.mode=none",
        "monitor.drift.interval_s=1",
        f"monitor.drift.window_rows={WINDOW}",
        "monitor.drift.min_rows=500",
        "monitor.feedback.enabled=true",
        "monitor.feedback.thresholds={accuracy: 0.99}",  # above what the model scores: crossed
    ]
    cfg = load_config(QUICKSTART / "pipeline.yaml", overrides)
    target = copy_registry(registry_runs, cfg, champion="2")
    yield deploy(build_model_app(cfg.serve, cfg.monitor, target, []), cfg.serve, name=cfg.name)
    serve.shutdown()


@pytest.fixture(scope="module")
def prometheus(ray_session, tmp_path_factory):
    """Prometheus with the shipped config, pointed at this session's Ray (its service discovery
    file), scraping and evaluating every second."""
    work = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    discovery = Path(ray._private.worker._global_node.get_temp_dir_path()) / "prom_metrics_service_discovery.json"
    config["scrape_configs"][0]["file_sd_configs"][0] |= {"files": [str(discovery)], "refresh_interval": "1s"}
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(work / "prometheus.log").open("w"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/-/ready", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.2)
    else:
        pytest.fail(f"prometheus did not start:\n{(work / 'prometheus.log').read_text()[-2000:]}")
    time.sleep(6)  # Ray writes the file every 5 s: a young session's lists its nodes' agents by then
    targets = len(json.loads(discovery.read_text())[0]["targets"])
    wait_for(url, "count(up == 1)", lambda n: n >= targets, timeout_s=30)  # scraped: what ran before is in
    time.sleep(2)
    yield url
    process.terminate()
    process.wait(timeout=30)


def query(url: str, promql: str) -> float | None:
    """The single value of an instant PromQL query; None when it has no series (yet)."""
    answer = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(url: str, promql: str, done, timeout_s: float = 90.0) -> float | None:
    """Poll `promql` until `done(value)`; Ray exports a replica's metrics every few seconds."""
    deadline, value = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        value = query(url, promql)
        if value is not None and done(value):
            return value
        time.sleep(1)
    pytest.fail(f"{promql} never met the condition in {timeout_s:.0f} s; last value {value}")


def send(url: str, rows: list[dict], per_request: int = 50) -> None:
    for start in range(0, len(rows), per_request):
        predict(url, rows[start : start + per_request])


def test_prometheus_sees_requests_and_a_drift_crossing_its_threshold(served, prometheus):
    rows = example_generator("quickstart").make_table(2 * WINDOW, seed=7).drop(["churned"]).to_pylist()
    requests_200 = 'sum(raymlp_http_requests_total{route="/predict", status="200"})'
    before = query(prometheus, requests_200) or 0  # earlier tests' apps of this model count too
    send(served, rows[:WINDOW])  # traffic like the training data
    assert wait_for(prometheus, requests_200, lambda n: n >= before + WINDOW / 50) >= before + WINDOW / 50
    wait_for(prometheus, "max(raymlp_drift_window_rows)", lambda n: n >= WINDOW)
    assert query(prometheus, "max(raymlp_drifted_features)") == 0
    assert query(prometheus, 'max(raymlp_drift_psi{feature="monthly_charges"})') < 0.1

    shifted = [{**row, "monthly_charges": row["monthly_charges"] + 60.0} for row in rows[WINDOW:]]  # 3 std up
    send(served, shifted)
    psi = wait_for(prometheus, 'max(raymlp_drift_psi{feature="monthly_charges"})', lambda v: v >= 0.2)
    assert psi > 1.0
    assert wait_for(prometheus, 'max(raymlp_drift_ks{feature="monthly_charges"})', lambda v: v >= 0.1) > 0.8
    assert wait_for(prometheus, "max(raymlp_drifted_features)", lambda n: n >= 1) == 1  # only monthly_charges moved
    assert wait_for(prometheus, requests_200, lambda n: n >= before + 2 * WINDOW / 50) == before + 2 * WINDOW / 50
    registered = wait_for(prometheus, "max(raymlp_model_registered_timestamp_seconds)", lambda t: t > 0)
    assert time.time() - 86400 < registered < time.time()
    # The data stages of this session's pipeline runs counted their rows from the driver (this process).
    assert wait_for(prometheus, 'sum(raymlp_data_rows_total{outcome="valid"})', lambda n: n > 0) >= 1_000
    rules = [r for g in requests.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} >= {"RaymlpFeatureDrift", "RaymlpHighErrorRate", "RaymlpStaleModel", "RaymlpLiveMetricDegraded"}
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []  # every rule evaluates cleanly


def test_labels_sent_later_join_their_predictions_as_live_accuracy(served, prometheus):
    joined_rows = 'sum(raymlp_feedback_rows_total{outcome="joined"})'
    before = query(prometheus, joined_rows) or 0  # earlier tests' apps of this model count too
    table = example_generator("quickstart").make_table(200, seed=9)
    rows, labels = table.drop(["churned"]).to_pylist(), table["churned"].to_pylist()
    predicted = []
    for start in range(0, 200, 20):
        answer = requests.post(f"{served}/predict", json={"rows": rows[start : start + 20]},
                               headers={"X-Request-ID": f"live-{start}"}, timeout=30)  # fmt: skip
        assert answer.status_code == 200 and answer.headers["x-request-id"] == f"live-{start}"
        predicted += [p["label"] for p in answer.json()["predictions"]]
    accuracy = float(np.mean(np.array(predicted) == np.array(labels)))

    feedback = [{"request_id": f"live-{s}", "labels": labels[s : s + 20]} for s in range(0, 200, 20)]
    joined = requests.post(f"{served}/feedback", json={"feedback": [*feedback, {"request_id": "never-answered", "labels": [1]}]}, timeout=30)
    assert joined.status_code == 200, joined.text
    body = joined.json()
    assert body["joined_rows"] == 200 and body["unknown_request_ids"] == ["never-answered"]
    assert body["live"]["2"]["live_accuracy"] == pytest.approx(accuracy) and body["live"]["2"]["live_rows"] == 200
    assert body["degraded"] == {"2": ["accuracy"]}  # 200 labelled rows: as many as min_rows asks

    wrong = requests.post(f"{served}/feedback", json={"feedback": [{"request_id": "live-0", "labels": ["maybe"] * 20}]}, timeout=30)
    assert wrong.status_code == 422 and "among the classes [0, 1]" in wrong.text and "maybe" not in wrong.text

    assert wait_for(prometheus, 'max(raymlp_live_accuracy{version="2"})', lambda v: abs(v - accuracy) < 1e-9) == pytest.approx(accuracy)
    assert wait_for(prometheus, joined_rows, lambda n: n >= before + 200) == before + 200
    assert wait_for(prometheus, 'max(raymlp_live_thresholds_crossed{version="2"})', lambda n: n >= 1) == 1


def test_labels_from_a_file_through_the_cli(served, tmp_path, capsys):
    table = example_generator("quickstart").make_table(50, seed=10)
    answer = requests.post(f"{served}/predict", json={"rows": table.drop(["churned"]).to_pylist()},
                           headers={"X-Request-ID": "from-file"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200
    labels = pa.table({"request_id": ["from-file"] * 50 + ["unknown"], "churned": [*table["churned"].to_pylist(), 0]})
    pacsv.write_csv(labels, tmp_path / "labels.csv")
    assert main(["feedback", "--url", served, "--labels", str(tmp_path / "labels.csv"), "--label-column", "churned"]) == 0
    assert "50 label rows joined; 1 request ids unknown" in capsys.readouterr().out
    assert main(["feedback", "--url", served, "--labels", str(tmp_path / "labels.csv")]) == 2  # no `label` column


def test_a_short_lived_drivers_counts_outlive_it(prometheus):
    """`raymlp retrain` exits right after it counts its outcome: Ray's metrics agent keeps exporting
    the count of a driver that has exited."""
    script = "import sys, ray; ray.init(address=sys.argv[1]); from raymlp.monitor.metrics import RetrainMetrics; " \
             "RetrainMetrics('short-lived').observe('skipped')"  # fmt: skip
    gcs = ray.get_runtime_context().gcs_address
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script, gcs], check=True, timeout=120, capture_output=True, cwd=REPO)
    RetrainMetrics("short-lived").observe("refused")  # and a driver that stays counts into the same series
    retrains = 'sum by (outcome) (raymlp_retrains_total{model="short-lived", outcome="%s"})'
    assert wait_for(prometheus, retrains % "skipped", lambda n: n >= 2, timeout_s=60) == 2
    assert wait_for(prometheus, retrains % "refused", lambda n: n >= 1, timeout_s=60) == 1
