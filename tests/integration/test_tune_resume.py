"""A Tune driver killed with SIGKILL mid-search, then `raymlp tune --resume`: every trial ends
exactly once in the results, and finished trials are not trained again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from ray import tune

from conftest import QUICKSTART, free_port, tiny_overrides

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # about 3 minutes: a Tune run killed and restored

TRIALS, EPOCHS = 3, 3


def reported_epochs(experiment: Path) -> dict[str, list[int]]:
    """Epochs each trial has reported so far, from Tune's result.json files."""
    return {
        path.parent.name: [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]
        for path in experiment.glob("*/result.json")
    }


def test_a_killed_tune_driver_is_restored_and_every_trial_finishes_once(ray_session, quickstart_data, tmp_path):
    run_dir = tmp_path / "runs"
    overrides = [
        *tiny_overrides(quickstart_data, run_dir, free_port()),
        "train.num_workers=1",
        f"train.epochs={EPOCHS}",
        f"tune.num_samples={TRIALS}",
        "tune.max_concurrent_trials=1",
        "tune.scheduler=none",
        "tune.objectives=[model_params]",
        # The driver joins the test's Ray: killing it ends its job (trials, trainers, workers), not Ray.
        f"runtime.address={ray_session.get_runtime_context().gcs_address}",
    ]
    command = [sys.executable, "-m", "raymlp", "tune", str(QUICKSTART / "pipeline.yaml"), *(f"--set={o}" for o in overrides)]
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        experiments = list(run_dir.glob("*/ray_results/*-tune"))
        epochs = reported_epochs(experiments[0]) if experiments else {}
        if sum(len(e) == EPOCHS for e in epochs.values()) >= 1 and len(epochs) >= 2:
            break  # one trial done, the next one started
        time.sleep(0.5)
    assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    [experiment] = experiments
    before = reported_epochs(experiment)
    assert len(before) < TRIALS or any(len(e) < EPOCHS for e in before.values())

    run_id = experiment.parents[1].name
    resumed = subprocess.run([*command, "--resume", run_id], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    results = tune.ExperimentAnalysis(str(experiment))
    assert len(results.trials) == TRIALS
    assert len({t.trial_id for t in results.trials}) == TRIALS
    assert all(t.status == "TERMINATED" for t in results.trials)
    after = reported_epochs(experiment)
    for trial_id, epochs in before.items():
        if len(epochs) == EPOCHS:  # finished before the kill: kept, not run again
            assert after[trial_id] == epochs
    for epochs in after.values():
        assert epochs[-1] == EPOCHS

    client = mlflow.MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    [parent] = client.search_runs(
        [client.get_experiment_by_name("quickstart-churn").experiment_id],
        f"tags.`mlflow.runName` = 'quickstart-churn-{run_id}' and attributes.status = 'FINISHED'",
    )
    nested = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(nested) == TRIALS
    assert all(float(r.data.metrics["model_params"]) > 0 for r in nested)
