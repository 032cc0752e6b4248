"""PNG plots of a pipeline run for MLflow: the chosen model's learning curves, the search's
optimization history and parameter importances drawn by Optuna's own plotting, and drift reports.

The search runs in Ray Tune, so no Optuna study survives it (and a random or grid search has none):
the trials are replayed into an in-memory study just for the plots. matplotlib and Optuna are
imported inside the functions, so that importing raymlp (`raymlp validate`, a Serve replica) stays light.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import mlflow

from raymlp.config.schema import SearchDim

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

    from raymlp.monitor.drift import DriftReport
    from raymlp.tune import TrialSummary

PLOTS_DIR = "plots"
"""Where the PNGs go among the run's artifacts."""


def log_plots(
    history: list[dict[str, float]],
    trials: Sequence[TrialSummary],
    space: Mapping[str, SearchDim],
    metric: str,
    mode: Literal["min", "max"],
) -> list[str]:
    """Draw every plot there is data for and log it to the active run under `plots/`; returns the
    file names logged. No history (nothing trained) or no trials (no search, or every trial failed)
    just means fewer plots."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        drawn = [
            plot_learning_curves(history, metric, out / "learning_curves.png"),
            plot_optimization_history(trials, space, metric, mode, out / "optimization_history.png"),
            plot_param_importances(trials, space, metric, mode, out / "param_importances.png"),
        ]
        names = [path.name for path in drawn if path is not None]
        if names:
            mlflow.log_artifacts(tmp, PLOTS_DIR)
    return names


def plot_learning_curves(history: list[dict[str, float]], metric: str, path: Path) -> Path | None:
    """Train and valid loss by epoch, and `metric` (with its train counterpart when there is one)
    beside them; None for an empty history."""
    if not history:
        return None
    epochs = [row["epoch"] for row in history]
    panels = [("loss", ["train_loss", "valid_loss"])]
    if metric not in panels[0][1]:
        panels.append((metric, [f"train_{metric.removeprefix('valid_')}", metric]))
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            if key in history[0]:
                ax.plot(epochs, [row.get(key, math.nan) for row in history], marker="o", label=key)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5 on a short run
        ax.legend()
    return _save(fig, path)


def plot_drift(report: DriftReport, path: Path, shown: int = 3) -> Path:
    """PSI per feature against the threshold (drifted ones in red), and the reference against the
    new distribution for the `shown` most drifted features and the predictions."""
    plt = _pyplot()
    scored = sorted(report.features, key=lambda f: f.psi)
    details = scored[::-1][:shown] + ([report.prediction] if report.prediction else [])
    fig, axes = plt.subplots(1, 1 + len(details), figsize=(4.5 * (1 + len(details)), 0.5 + 0.35 * max(6, len(scored))),
                             squeeze=False)  # fmt: skip
    ax = axes[0][0]
    ax.barh([f.name for f in scored], [f.psi for f in scored], color=["tab:red" if f.drifted else "tab:blue" for f in scored])
    ax.axvline(report.thresholds["psi"], color="black", linestyle="--", label=f"threshold {report.thresholds['psi']:g}")
    ax.set(title=f"PSI against training ({report.rows:,} rows)", xlabel="PSI")
    ax.legend()
    for ax, f in zip(axes[0][1:], details):
        at = range(len(f.bins))
        ax.bar([i - 0.2 for i in at], f.expected, width=0.4, label="training")
        ax.bar([i + 0.2 for i in at], f.actual, width=0.4, label="new")
        ax.set_xticks(list(at), f.bins, rotation=60, ha="right", fontsize=7)
        ks = f", KS {f.ks:.3f}" if f.ks is not None else ""
        ax.set(title=f"{f.name}: PSI {f.psi:.3f}{ks}", ylabel="fraction of rows")
        ax.legend()
    return _save(fig, path)


def plot_optimization_history(
    trials: Sequence[TrialSummary], space: Mapping[str, SearchDim], metric: str, mode: Literal["min", "max"], path: Path
) -> Path | None:
    """Each trial's best `metric` in trial order, with the best so far; None without trials."""
    study = _study(trials, space, metric, mode)
    if not study.trials:
        return None
    from optuna.visualization.matplotlib import plot_optimization_history as draw

    _pyplot()
    with _optuna_quiet():
        ax = draw(study, target_name=metric)
    return _save(ax.figure, path)


def plot_param_importances(
    trials: Sequence[TrialSummary], space: Mapping[str, SearchDim], metric: str, mode: Literal["min", "max"], path: Path
) -> Path | None:
    """How much each searched parameter explains `metric`; None unless two or more trials differ
    in some parameter (with fewer, Optuna draws every importance equal, which says nothing)."""
    study = _study(trials, space, metric, mode)
    varied = any(len({repr(t.params[name]) for t in study.trials if name in t.params}) > 1 for name in space)
    if len(study.trials) < 2 or not varied:
        return None
    from optuna.visualization.matplotlib import plot_param_importances as draw

    _pyplot()
    with _optuna_quiet():
        ax = draw(study, target_name=metric)
    return _save(ax.figure, path)


def _study(
    trials: Sequence[TrialSummary], space: Mapping[str, SearchDim], metric: str, mode: Literal["min", "max"]
) -> optuna.Study:
    """The trials as completed trials of an in-memory study. A trial without a finite `metric`,
    or with a value outside the space (a search resumed after the space changed), is left out."""
    import optuna

    with _optuna_quiet():
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    distributions = {name: _distribution(dim) for name, dim in space.items()}
    for trial in trials:
        value = trial.metrics.get(metric)
        if value is None or not math.isfinite(value):
            continue
        params = {name: _internal(space[name], v) for name, v in trial.params.items() if name in space}
        try:
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions={k: distributions[k] for k in params}, value=value
                )
            )
        except ValueError:
            continue
    return study


def _distribution(dim: SearchDim) -> optuna.distributions.BaseDistribution:
    """Optuna's distribution for a dimension. `q` is left out: the plots need only the range, and
    Optuna takes no step on a log scale. Choices become their text: Optuna's categories must be
    scalars, and `model.hidden_sizes` chooses among lists."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.type == "choice":
        return CategoricalDistribution([str(v) for v in dim.values])
    if dim.type == "int":
        return IntDistribution(int(dim.low), int(dim.high))
    return FloatDistribution(dim.low, dim.high, log=dim.type == "loguniform")


def _internal(dim: SearchDim, value: Any) -> Any:
    if dim.type == "choice":
        return str(value)
    # Tune rounds quantized samples as q * round(x / q), which can land a hair outside the range.
    return min(max(value, dim.low), dim.high)


def _pyplot() -> Any:
    """pyplot on Agg: the driver may be headless, and a PNG needs no window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna warns that its matplotlib plots are experimental on every call, and logs the
    creation of a study, which in a pipeline's log reads as if a second search had started."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)  # pyplot keeps every figure it made until closed
    return path
