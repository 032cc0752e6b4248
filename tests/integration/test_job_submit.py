"""The same config through `ray job submit` on a separate `ray start --head` cluster on 127.0.0.1.

The cluster runs in its own process group and temp dir and is stopped by signalling that group:
a plain `ray stop` would kill every Ray process on the machine, the session fixture's included.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO, free_port, tiny_overrides

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


@pytest.fixture(scope="module")
def head_cluster():
    """Yield (dashboard URL, env for Ray CLI clients) of a fresh token-auth head node."""
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    dashboard_port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
    }
    env.pop("RAY_ADDRESS", None)
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard_port,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    cmd = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           "--num-cpus=4", f"--temp-dir={temp_dir}", *(f"{k}={v}" for k, v in ports.items())]
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{url}/api/version", timeout=2).status_code in (200, 401, 403):
                    break
            except requests.ConnectionError:
                pass
            assert head.poll() is None, head.stdout.read().decode()
            assert time.monotonic() < deadline, "the head node did not come up in 90 s"
            time.sleep(1)
        yield url, {**env, "RAY_ADDRESS": url}
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        time.sleep(2)
        try:  # workers that outlived the head
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit_runs_the_quickstart_and_leaves_the_app_serving(head_cluster, quickstart_data, tmp_path):
    url, env = head_cluster
    port = free_port()
    overrides = tiny_overrides(quickstart_data, tmp_path / "runs", port) + ["tune.num_samples=1"]
    entrypoint = ["raymlp", "run", "examples/quickstart/pipeline.yaml", *(f"--set={o}" for o in overrides)]
    job = subprocess.run(
        ["ray", "job", "submit", "--address", url, "--working-dir", str(REPO), "--", *entrypoint],
        env=env, capture_output=True, text=True, timeout=480,
    )
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-4000:]
    assert "succeeded" in output, output[-4000:]
    assert "registered:    quickstart-churn version 1" in output
    assert "attaching to the Ray cluster" in output  # not an embedded Ray inside the job

    # Serve apps on a cluster outlive the job that deployed them.
    row = {"tenure_months": 3.0, "monthly_charges": 80.0, "support_calls": 4, "age": 30, "plan": "basic", "region": "south"}
    response = requests.post(f"http://127.0.0.1:{port}/predict", json={"rows": [row]}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "1"


def test_jobs_api_refuses_requests_without_the_token(head_cluster):
    url, _ = head_cluster
    assert requests.get(f"{url}/api/jobs/", timeout=10).status_code == 401
