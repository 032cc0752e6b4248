"""`raymlp submit` and `raymlp job` against a separate autoscaling cluster on 127.0.0.1 with token
auth on: a `ray start --head` whose autoscaler runs Ray's fake multi-node provider, so worker
nodes are real raylets started and stopped on this machine. The two end-to-end tests (the
quickstart as a job, training that makes the cluster grow and shrink) are marked slow:
`bash scripts/test.sh -m cluster` runs them with the rest of this module.

The cluster lives in its own process group and temp dir and is stopped through them. Neither
`ray stop` nor `AutoscalingCluster` is used: both end every Ray process on the machine, this
session's shared cluster included.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from conftest import QUICKSTART, REPO, example_generator, free_port

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ROW = {"tenure_months": 3.0, "monthly_charges": 80.0, "support_calls": 4, "age": 30, "plan": "basic", "region": "south"}


@dataclass(frozen=True)
class Cluster:
    url: str  # dashboard and jobs API
    gcs_address: str  # for drivers that attach directly
    env: dict[str, str]  # for CLI clients: token auth on, this cluster's token
    token: str

    def alive_nodes(self) -> int:
        response = requests.get(
            f"{self.url}/api/v0/nodes", params={"filter_keys": "state", "filter_predicates": "=", "filter_values": "ALIVE"},
            headers={"Authorization": f"Bearer {self.token}"}, timeout=10,
        )
        response.raise_for_status()
        return len(response.json()["data"]["result"]["result"])

    def raymlp(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["raymlp", *args], env=env or self.env, capture_output=True, text=True, timeout=timeout, cwd=REPO
        )


def fake_autoscaling_config(gcs_address: str) -> dict:
    """A 3-CPU head (the quickstart fits) and up to two 1-CPU workers, ended after 6 s idle."""
    return {
        "cluster_name": "raymlp-test",
        "max_workers": 2,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 3}, "node_config": {}, "max_workers": 0},
            "cpu_worker": {"resources": {"CPU": 1, "object_store_memory": 200 * 1024**2}, "node_config": {},
                           "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default",
        "auth": {}, "docker": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


def kill_processes_mentioning(text: str) -> None:
    """Raylets and workers the fake provider started carry the cluster's temp dir in their command line."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")  # short: Ray's socket paths have a length limit
    token = secrets.token_hex(32)
    token_file = tmp_path_factory.mktemp("auth") / "token"
    token_file.write_text(token)
    gcs_port, dashboard_port = free_port(), free_port()
    config = tmp_path_factory.mktemp("autoscaler") / "fake.yaml"
    config.write_text(yaml.safe_dump(fake_autoscaling_config(f"127.0.0.1:{gcs_port}")))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("RAYMLP_COMPILE_CACHE", None)
    ports = {
        "--port": gcs_port,
        "--dashboard-port": dashboard_port,
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    cmd = ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           "--num-cpus=3", f"--autoscaling-config={config}", f"--temp-dir={temp_dir}",
           *(f"{k}={v}" for k, v in ports.items())]
    head_env = {**env, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    head = subprocess.Popen(cmd, env=head_env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
        yield Cluster(url=url, gcs_address=f"127.0.0.1:{gcs_port}", env={**env, "RAY_ADDRESS": url}, token=token)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=3)  # `ray start --block` can take long over SIGTERM; what is left is killed
        except subprocess.TimeoutExpired:
            pass
        kill_processes_mentioning(temp_dir)
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def job_folder(tmp_path_factory) -> Path:
    """The quickstart config beside its data, as a user's project folder: `raymlp submit` ships both."""
    folder = tmp_path_factory.mktemp("project")
    shutil.copy(QUICKSTART / "pipeline.yaml", folder / "pipeline.yaml")
    example_generator("quickstart").generate(folder / "data", rows=1500, shards=3, seed=0)
    return folder


def test_jobs_api_and_cli_refuse_a_client_without_the_token(cluster):
    assert requests.get(f"{cluster.url}/api/jobs/", timeout=10).status_code == 401
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    done = cluster.raymlp("job", "list", env=env)
    assert done.returncode == 2
    assert "error:" in done.stderr and "token" in done.stderr.lower(), done.stderr


def test_submit_no_wait_then_status_logs_list_and_stop(cluster, job_folder):
    submitted = cluster.raymlp("submit", str(job_folder / "pipeline.yaml"), "--no-wait", "--job-id", "to-stop",
                               "--set", "train.epochs=50")
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted job to-stop: raymlp run pipeline.yaml --set=train.epochs=50" in submitted.stdout
    assert "to-stop" in cluster.raymlp("job", "list").stdout
    assert cluster.raymlp("job", "stop", "to-stop").returncode == 0
    deadline = time.monotonic() + 60
    while "STOPPED" not in (status := cluster.raymlp("job", "status", "to-stop").stdout):
        assert time.monotonic() < deadline, status
        time.sleep(1)
    followed = cluster.raymlp("job", "logs", "to-stop", "--follow")
    assert followed.returncode == 1 and "job to-stop STOPPED" in followed.stdout
    missing = cluster.raymlp("job", "status", "no-such-job")
    assert missing.returncode == 2 and "no-such-job" in missing.stderr


@pytest.mark.slow
def test_submit_runs_the_quickstart_streams_its_log_and_leaves_the_app_serving(cluster, job_folder, tmp_path):
    key = secrets.token_urlsafe(16)
    port = free_port()
    job = cluster.raymlp(
        "submit", str(job_folder / "pipeline.yaml"), "--env", f"RAYMLP_API_KEYS={key}",
        "--set", "train.epochs=2", "--set", "train.cpus_per_worker=1", "--set", "tune.num_samples=1",
        "--set", f"serve.port={port}", "--set", f"run_dir={tmp_path}", timeout=600,
    )
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-4000:]
    assert "registered:    quickstart-churn version 1" in output  # the job's own log, streamed
    assert "attaching to the Ray cluster" in output  # not an embedded Ray inside the job
    assert job.stdout.splitlines()[-1].endswith(" SUCCEEDED")

    response = requests.post(f"http://127.0.0.1:{port}/predict", json={"rows": [ROW]},
                             headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "1"
    shutdown = subprocess.run(["serve", "shutdown", "--address", cluster.url, "--yes"], env=cluster.env,
                              capture_output=True, text=True, timeout=60)
    assert shutdown.returncode == 0, shutdown.stderr


@pytest.mark.slow
def test_training_wider_than_the_head_adds_worker_nodes_that_go_when_idle(cluster, job_folder, tmp_path):
    """Four 1-CPU training workers do not fit the 3-CPU head: the autoscaler adds nodes, and ends
    them once the run is over. The driver attaches directly (no job, so no working_dir: the fake
    nodes share this machine's disk, where each node's runtime-env agent would unpack a job's
    files over the others')."""
    assert cluster.alive_nodes() == 1
    peak, done = [1], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak.append(cluster.alive_nodes())
            done.wait(2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        run = cluster.raymlp(
            "train", str(job_folder / "pipeline.yaml"), "--set", "train.num_workers=4", "--set", "train.cpus_per_worker=1",
            "--set", "train.epochs=1", "--set", f"run_dir={tmp_path}",
            env={**cluster.env, "RAY_ADDRESS": cluster.gcs_address}, timeout=600,
        )
    finally:
        done.set()
        watcher.join()
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert max(peak) >= 2, peak
    ended = time.monotonic()
    while (nodes := cluster.alive_nodes()) > 1:
        assert time.monotonic() < ended + 90, f"{nodes} nodes still alive 90 s after the run ended"
        time.sleep(2)
    print(f"alive nodes every 2 s during the run: {peak}; back to 1 node {time.monotonic() - ended:.0f} s after it")
