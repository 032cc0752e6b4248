"""Training end to end on the session's Ray: regression and multiclass tasks, shards held in memory
or streamed, a worker killed mid-epoch, `--resume`, and a tampered checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from ray import tune

from conftest import QUICKSTART, REPO, example_generator, free_port
from raymlp.config import load_config
from raymlp.pipeline import run_pipeline
from raymlp.train.feed import SplitBlocks

pytestmark = pytest.mark.integration


def quickstart(data: Path, run_dir: Path, *overrides: str):
    return load_config(
        QUICKSTART / "pipeline.yaml",
        [f"data.path={data}", f"run_dir={run_dir}", "train.cpus_per_worker=1", "train.batch_size=64", *overrides],
    )


def latest_checkpoint(run_dir: Path) -> Path:
    """The run's checkpoint with the highest epoch (Ray keeps the latest beside the best ones)."""
    folders = [f for f in run_dir.glob("ray_results/*/checkpoint_*") if f.is_dir()]
    return max(folders, key=lambda f: json.loads((f / "metrics.json").read_text())["epoch"])


def latest_metrics(run_dir: Path) -> dict:
    return json.loads((latest_checkpoint(run_dir) / "metrics.json").read_text())


def test_workers_read_their_shards_straight_from_the_blocks(ray_session):
    import ray.data

    rows = 1003  # uneven blocks, and a remainder over 3 workers
    ds = ray.data.range(rows, override_num_blocks=7).map_batches(
        lambda b: {"x": np.stack([b["id"], -b["id"]], axis=1).astype(np.float32), "y": b["id"] % 5}
    ).materialize()
    blocks = SplitBlocks.of(ds)
    assert len(blocks.refs) > 1 and sum(blocks.rows) == rows

    def shards(equal: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [blocks.read(blocks.shard(r, 3, equal=equal), torch.int64, torch.device("cpu")) for r in range(3)]

    train = shards(equal=True)
    assert [len(x) for x, _ in train] == [334] * 3  # the same number of steps on every worker
    valid = shards(equal=False)
    ids = torch.cat([x[:, 0] for x, _ in valid]).long()
    assert sorted(ids.tolist()) == list(range(rows))  # every validation row, once
    for x, y in train + valid:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x[:, 1], -x[:, 0]) and torch.equal(y, x[:, 0].long() % 5)  # rows stay whole


def test_streamed_shards_train_too(ray_session, quickstart_data, tmp_path):
    cfg = quickstart(quickstart_data, tmp_path, "train.epochs=2", "train.cache_data=never")
    result = run_pipeline(cfg, ["data", "train"])

    assert result.metrics["valid_accuracy"] > 0.6
    assert [row["epoch"] for row in latest_metrics(result.run_dir)["history"]] == [1, 2]


def test_a_worker_killed_mid_epoch_resumes_from_the_last_checkpoint(
    ray_session, quickstart_data, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(REPO / "tests" / "support"))  # the driver loads the model too
    cfg = quickstart(quickstart_data, tmp_path, "train.epochs=4", "train.max_failures=1")
    marker = tmp_path / "died"
    # ~1050 train rows over 2 workers in batches of 64: 9 steps an epoch, so step 22 is in epoch 3.
    cfg.model.options = {"marker": str(marker), "fail_at_step": 22}
    cfg.model.name = "flaky_model:factory"
    interrupted = run_pipeline(cfg, ["data", "train"])

    assert marker.exists(), "the worker never died; the test proved nothing"
    final = latest_metrics(interrupted.run_dir)
    assert final["resumed_after"] == [2]  # restarted from epoch 2's checkpoint: only epoch 3 is redone
    history = final["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]  # none skipped, none twice
    # The restarted workers went on from epoch 2's weights, not from fresh ones, whose first epoch
    # would cost about what epoch 1 did.
    assert history[2]["train_loss"] < (history[0]["train_loss"] + history[1]["train_loss"]) / 2
    assert history[2]["valid_accuracy"] >= history[1]["valid_accuracy"] - 0.05


def test_a_trial_whose_worker_dies_is_retried_by_tune_from_its_checkpoint(
    ray_session, quickstart_data, tmp_path, monkeypatch
):
    """In a search the training run does not retry (see raymlp.tune.tuner); Tune retries the trial."""
    monkeypatch.syspath_prepend(str(REPO / "tests" / "support"))
    cfg = quickstart(
        quickstart_data, tmp_path, "train.epochs=4", "train.num_workers=1", "train.max_failures=1",
        "tune.num_samples=1", "tune.searcher=random", "tune.scheduler=none",
    )  # fmt: skip
    marker = tmp_path / "died"
    # ~1050 train rows on one worker in batches of 64: 17 steps an epoch, so step 40 is in epoch 3.
    cfg.model.options = {"marker": str(marker), "fail_at_step": 40}
    cfg.model.name = "flaky_model:factory"
    result = run_pipeline(cfg, ["data", "tune"])

    assert marker.exists(), "the worker never died; the test proved nothing"
    [experiment] = result.run_dir.glob("ray_results/*-tune")
    [trial] = tune.ExperimentAnalysis(str(experiment)).trials
    assert (trial.status, trial.num_failures) == ("TERMINATED", 1)
    # Retried from epoch 2's checkpoint: epochs 1 and 2 are not reported twice, nor 3 skipped.
    assert [row["epoch"] for row in result.trials[0].history] == [1, 2, 3, 4]
    assert latest_metrics(result.run_dir)["resumed_after"] == [2]


def test_resume_continues_a_run_and_refuses_a_tampered_checkpoint(ray_session, quickstart_data, tmp_path):
    first = run_pipeline(quickstart(quickstart_data, tmp_path, "train.epochs=2"), ["data", "train"])
    run = first.run_dir.name

    run_pipeline(quickstart(quickstart_data, tmp_path, "train.epochs=3"), ["data", "train"], resume=run)
    resumed = latest_metrics(first.run_dir)
    assert [row["epoch"] for row in resumed["history"]] == [1, 2, 3]
    assert resumed["resumed_after"] == [2]

    weights = latest_checkpoint(first.run_dir) / "weights.pt"
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0x01
    weights.write_bytes(bytes(content))
    tampered = quickstart(quickstart_data, tmp_path, "train.epochs=4", "train.max_failures=0")
    with pytest.raises(Exception, match="SHA-256 does not match the manifest"):
        run_pipeline(tampered, ["data", "train"], resume=run)


@pytest.mark.slow  # the housing example end to end, 6 epochs on elastic workers
def test_regression_trains_registers_and_serves_values(ray_session, tmp_path):
    from ray import serve

    serve.shutdown()  # an earlier test's Serve keeps its own HTTP port and app on /
    data = tmp_path / "housing"
    example_generator("housing").generate(data, rows=3000, shards=3, seed=0)
    port = free_port()
    cfg = load_config(
        REPO / "examples" / "housing" / "pipeline.yaml",
        [
            f"data.path={data}",
            f"run_dir={tmp_path / 'runs'}",
            "train.epochs=6",
            "train.num_workers=[1, 2]",  # elastic: starts with what the cluster has, up to 2
            f"serve.port={port}",
        ],
    )
    result = run_pipeline(cfg, ["data", "train", "register", "serve"])

    assert result.metrics["valid_r2"] > 0.8
    prediction = result.prediction["predictions"][0]
    assert set(prediction) == {"value"} and math.isfinite(prediction["value"]) and prediction["value"] > 0
    body = {"rows": [{"area_m2": 80.0, "rooms": 3, "age_years": 10.0, "neighbourhood": "center", "distance_km": None}]}
    response = requests.post(
        f"{result.endpoint}/predict", json=body, headers={"X-API-Key": result.api_key}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["value"] > 0


@pytest.mark.slow  # the digits example, 6 epochs of a CNN
def test_multiclass_cnn_on_digits(ray_session, tmp_path):
    data = tmp_path / "digits"
    example_generator("digits").generate(data, shards=3, seed=0)
    cfg = load_config(
        REPO / "examples" / "digits" / "pipeline.yaml",
        [f"data.path={data}", f"run_dir={tmp_path / 'runs'}", "train.epochs=6"],
    )
    result = run_pipeline(cfg, ["data", "train"])

    assert result.metrics["valid_accuracy"] > 0.85
    assert result.metrics["valid_auc"] > 0.95 and result.metrics["valid_f1"] > 0.8
    assert result.metrics["test_accuracy"] > 0.8


@pytest.mark.horovod
def test_horovod_backend_trains_with_the_same_loop(ray_session, quickstart_data, tmp_path):
    pytest.importorskip("horovod.torch")
    cfg = quickstart(quickstart_data, tmp_path, "train.epochs=2", "train.backend=horovod")
    result = run_pipeline(cfg, ["data", "train"])

    assert result.metrics["valid_accuracy"] > 0.6
    assert [row["epoch"] for row in latest_metrics(result.run_dir)["history"]] == [1, 2]
