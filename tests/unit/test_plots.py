"""Plots and run context logged to MLflow: real PNGs, a real SQLite store, a real git repository."""

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from raymlp.config.schema import RegistryConfig, SearchDim
from raymlp.lifecycle.plots import log_plots, plot_learning_curves, plot_optimization_history, plot_param_importances
from raymlp.lifecycle.tracking import GIT_COMMIT_TAG, configure_tracking, log_run_context, log_trial, pipeline_run
from raymlp.tune import TrialSummary

SPACE = {
    "train.lr": SearchDim(type="loguniform", low=1e-4, high=1e-2),
    "train.batch_size": SearchDim(type="int", low=128, high=1024, q=128),
    "model.dropout": SearchDim(type="uniform", low=0.0, high=0.3, q=0.05),
    "model.hidden_sizes": SearchDim(type="choice", values=[[32], [64, 64]]),
}
HISTORY = [
    {"epoch": e, "train_loss": 1 / e, "valid_loss": 1.1 / e, "train_accuracy": 1 - 0.3 / e, "valid_accuracy": 1 - 0.4 / e}
    for e in range(1, 5)
]


def trial(i: int, accuracy: float, **params) -> TrialSummary:
    params = {"train.lr": 1e-3, "train.batch_size": 256, "model.dropout": 0.1, "model.hidden_sizes": [32]} | params
    return TrialSummary(str(i), params, {"epoch": 4, "valid_accuracy": accuracy}, len(HISTORY), HISTORY)


TRIALS = [
    trial(0, 0.71, **{"train.lr": 2e-4, "model.hidden_sizes": [64, 64], "model.dropout": 0.30000000000000004}),
    trial(1, 0.78, **{"train.lr": 3e-3, "train.batch_size": 1024}),
    trial(2, 0.74, **{"train.lr": 8e-3, "model.hidden_sizes": [64, 64], "model.dropout": 0.0}),
    trial(3, float("nan")),  # diverged: left out of the study
]


def assert_png(path: Path | None) -> None:
    assert path is not None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


@pytest.mark.parametrize("metric", ["valid_accuracy", "valid_loss"])
def test_learning_curves(tmp_path, metric):
    assert_png(plot_learning_curves(HISTORY, metric, tmp_path / "curves.png"))
    assert plot_learning_curves([], metric, tmp_path / "none.png") is None


def test_search_plots_over_every_kind_of_dimension(tmp_path):
    """Choices over lists, log and quantized ranges, a quantized sample a hair over its bound."""
    assert_png(plot_optimization_history(TRIALS, SPACE, "valid_accuracy", "max", tmp_path / "history.png"))
    assert_png(plot_param_importances(TRIALS, SPACE, "valid_accuracy", "max", tmp_path / "importances.png"))


@pytest.mark.parametrize("trials", [[], TRIALS[:1], [trial(0, 0.7), trial(1, 0.8)]], ids=["none", "one", "same-params"])
def test_importances_need_two_trials_that_differ(tmp_path, trials):
    assert plot_param_importances(trials, SPACE, "valid_accuracy", "max", tmp_path / "importances.png") is None
    history = plot_optimization_history(trials, SPACE, "valid_accuracy", "max", tmp_path / "history.png")
    if trials:
        assert_png(history)
    else:
        assert history is None


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """The embedded store the pipeline uses by default: SQLite plus a local artifact folder."""
    return configure_tracking(RegistryConfig(), tmp_path_factory.mktemp("mlflow"), "test-plots")


def artifacts(run_id: str, path: str) -> list[str]:
    return sorted(Path(a.path).name for a in mlflow.MlflowClient().list_artifacts(run_id, path))


@pytest.mark.parametrize(
    "history, trials, logged",
    [
        (HISTORY, TRIALS, ["learning_curves.png", "optimization_history.png", "param_importances.png"]),
        (HISTORY, [], ["learning_curves.png"]),  # train only, or every trial failed
        ([], [], []),
    ],
)
def test_log_plots_to_the_run(tracking, history, trials, logged):
    with pipeline_run(tracking, "plots") as run:
        assert sorted(log_plots(history, trials, SPACE, "valid_accuracy", "max")) == logged
    assert artifacts(run.info.run_id, "plots") == logged


def test_trial_is_a_nested_run_with_epochs_and_best_metrics(tracking):
    client = mlflow.MlflowClient()
    with pipeline_run(tracking, "trials") as run:
        log_trial(TRIALS[0])
    [nested] = client.search_runs([tracking.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert nested.data.params["model.hidden_sizes"] == "[64, 64]"
    assert nested.data.metrics["best.valid_accuracy"] == 0.71 and nested.data.tags["pareto"] == "true"
    steps = client.get_metric_history(nested.info.run_id, "valid_loss")
    by_epoch = [(m.step, m.value) for m in sorted(steps, key=lambda m: m.step)]
    assert by_epoch == [(row["epoch"], row["valid_loss"]) for row in HISTORY]


def git(repo: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_run_context_records_the_commit_and_whether_the_tree_is_dirty(tracking, tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "first")
    with pipeline_run(tracking, "clean") as clean:
        log_run_context(tmp_path / "pkg")
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    with pipeline_run(tracking, "dirty") as dirty:
        log_run_context(tmp_path / "pkg")

    client = mlflow.MlflowClient()
    clean_tags, dirty_tags = (client.get_run(r.info.run_id).data.tags for r in (clean, dirty))
    assert clean_tags[GIT_COMMIT_TAG] == dirty_tags[GIT_COMMIT_TAG] == git(tmp_path, "rev-parse", "HEAD")
    assert (clean_tags["git.dirty"], dirty_tags["git.dirty"]) == ("false", "true")


def test_run_context_outside_a_repository_has_versions_and_no_commit(tracking, tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # never find a repo above
    with pipeline_run(tracking, "no-git") as run:
        log_run_context(tmp_path)
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert GIT_COMMIT_TAG not in tags and "git.dirty" not in tags
    assert tags["version.mlflow"] == mlflow.__version__
    assert tags["version.python"] == ".".join(map(str, sys.version_info[:3]))
    assert {"version.raymlp", "version.ray", "version.torch", "version.optuna"} <= set(tags)
