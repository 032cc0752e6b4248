"""raymlp's metrics, all named `raymlp_*` and labelled by model and version.

They go through `ray.util.metrics`, which Ray's metrics agent exports for Prometheus; a
prometheus_client registry inside a Serve replica would live in that process only and never be
scraped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from ray.util import metrics

if TYPE_CHECKING:
    from raymlp.monitor.drift import DriftReport

LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]
DIFFERENCE_BUCKETS = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096]
Z_EDGES = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
Z_BINS = ["<-3", *(f"{a:g}..{b:g}" for a, b in zip(Z_EDGES, Z_EDGES[1:])), ">=3"]


class HttpMetrics:
    """Requests by route and status, and their latency, as the gateway sees them (auth and limit
    rejections included)."""

    def __init__(self, model: str, version: str):
        keys = ("model", "version", "route", "status")
        self.tags = {"model": model, "version": version}
        self.requests = metrics.Counter("raymlp_http_requests_total", "HTTP requests by route and status.", tag_keys=keys)
        self.latency = metrics.Histogram(
            "raymlp_http_latency_seconds", "Gateway time per request.", boundaries=LATENCY_BUCKETS_S,
            tag_keys=("model", "version", "route"),
        )  # fmt: skip

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.inc(tags={**self.tags, "route": route, "status": str(status)})
        self.latency.observe(seconds, tags={**self.tags, "route": route})


class BatchMetrics:
    """What a model replica does with each batch: its size, its forward time, and the distribution
    of what it predicts (labels, or regression values in standard units of the training label);
    and when the version it serves was registered."""

    def __init__(self, model: str, version: str, registered_s: float):
        keys = ("model", "version")
        self.tags = {"model": model, "version": version}
        # For the stale-model alert: a replica knows when the version it serves was registered. Set
        # with every batch: a gauge set once, as the replica starts, did not always reach the export.
        self.registered_s = registered_s
        self.registered = metrics.Gauge("raymlp_model_registered_timestamp_seconds",
                                        "When the served version was registered (Unix seconds).", tag_keys=keys)  # fmt: skip
        self.rows = metrics.Counter("raymlp_predicted_rows_total", "Rows predicted.", tag_keys=keys)
        self.batch_rows = metrics.Histogram(
            "raymlp_batch_rows", "Rows per forward pass.", boundaries=BATCH_BUCKETS, tag_keys=keys
        )
        self.batch_requests = metrics.Histogram(
            "raymlp_batch_requests", "Requests per forward pass.", boundaries=BATCH_BUCKETS, tag_keys=keys
        )
        self.latency = metrics.Histogram(
            "raymlp_batch_latency_seconds", "Model time per batch.", boundaries=LATENCY_BUCKETS_S, tag_keys=keys
        )
        self.labels = metrics.Counter(
            "raymlp_predicted_labels_total", "Predicted rows by label.", tag_keys=(*keys, "label")
        )
        # Ray's histograms take positive boundaries only: standard units are counted by bin instead.
        self.values = metrics.Counter(
            "raymlp_predicted_values_total", "Predicted values by bin, in standard units of the training label.",
            tag_keys=(*keys, "bin"),
        )  # fmt: skip

    def observe(self, requests: int, predicted: np.ndarray, regression: bool, seconds: float, center: float,
                scale: float) -> None:  # fmt: skip
        """`predicted`: a batch's labels, or its regression values in the label's units."""
        self.registered.set(self.registered_s, tags=self.tags)
        self.rows.inc(len(predicted), tags=self.tags)
        self.batch_rows.observe(len(predicted), tags=self.tags)
        self.batch_requests.observe(requests, tags=self.tags)
        self.latency.observe(seconds, tags=self.tags)
        if regression:
            for z_bin, count in value_bins(predicted, center, scale).items():
                self.values.inc(count, tags={**self.tags, "bin": z_bin})
        else:
            for label, count in label_counts(predicted).items():
                self.labels.inc(count, tags={**self.tags, "label": label})


def label_counts(labels: np.ndarray) -> dict[str, int]:
    """Rows per predicted label, the label as text."""
    found, counts = np.unique(labels, return_counts=True)
    return {str(label): int(count) for label, count in zip(found.tolist(), counts.tolist())}


def value_bins(values: np.ndarray, center: float, scale: float) -> dict[str, int]:
    """Rows per bin of standard units (`Z_BINS`) of the training label."""
    index = np.searchsorted(Z_EDGES, (np.asarray(values, dtype=np.float64) - center) / scale, side="right")
    found, counts = np.unique(index, return_counts=True)
    return {Z_BINS[i]: int(count) for i, count in zip(found.tolist(), counts.tolist())}


class ShadowMetrics:
    """How a shadow version's answers compare with the served version's, row by row: the same
    label (classification) or the absolute difference (regression)."""

    def __init__(self, model: str, version: str, shadow_version: str):
        keys = ("model", "version", "shadow_version")
        self.tags = {"model": model, "version": version, "shadow_version": shadow_version}
        self.rows = metrics.Counter("raymlp_shadow_rows_total", "Rows the shadow version answered.", tag_keys=keys)
        self.agreed = metrics.Counter(
            "raymlp_shadow_agreed_rows_total", "Shadow rows with the served label.", tag_keys=keys
        )
        self.difference = metrics.Histogram(
            "raymlp_shadow_abs_difference", "|shadow - served| per regression row.", boundaries=DIFFERENCE_BUCKETS,
            tag_keys=keys,
        )  # fmt: skip
        self.failures = metrics.Counter("raymlp_shadow_failures_total", "Shadow calls that failed.", tag_keys=keys)

    def compare(self, served: np.ndarray, shadow: np.ndarray, regression: bool) -> None:
        """`served` and `shadow`: the two versions' predictions of the same rows (labels or values)."""
        self.rows.inc(len(served), tags=self.tags)
        if not regression:
            if agreed := int(np.sum(served == shadow)):  # Ray's Counter refuses 0
                self.agreed.inc(agreed, tags=self.tags)
        else:
            for difference in np.abs(served.astype(np.float64) - shadow.astype(np.float64)).tolist():
                self.difference.observe(difference, tags=self.tags)

    def failed(self) -> None:
        self.failures.inc(tags=self.tags)


class DriftMetrics:
    """The drift of one replica's window of served rows against the training reference: PSI and
    KS per feature, PSI of the predictions, the rows scored, and how many features drift."""

    def __init__(self, model: str, version: str):
        keys = ("model", "version")
        self.tags = {"model": model, "version": version}
        self.psi = metrics.Gauge("raymlp_drift_psi", "PSI of a feature's served values against training.",
                                 tag_keys=(*keys, "feature"))  # fmt: skip
        self.ks = metrics.Gauge("raymlp_drift_ks", "KS statistic of a numeric feature's served values against training.",
                                tag_keys=(*keys, "feature"))  # fmt: skip
        self.prediction_psi = metrics.Gauge(
            "raymlp_prediction_drift_psi", "PSI of served predictions against the training labels.", tag_keys=keys
        )
        self.rows = metrics.Gauge("raymlp_drift_window_rows", "Served rows the drift scores cover.", tag_keys=keys)
        self.drifted = metrics.Gauge("raymlp_drifted_features", "Features over a drift threshold.", tag_keys=keys)

    def observe(self, report: DriftReport) -> None:
        for f in report.features:
            self.psi.set(f.psi, tags={**self.tags, "feature": f.name})
            if f.ks is not None:
                self.ks.set(f.ks, tags={**self.tags, "feature": f.name})
        if report.prediction is not None:
            self.prediction_psi.set(report.prediction.psi, tags=self.tags)
        self.rows.set(report.rows, tags=self.tags)
        self.drifted.set(len(report.drifted), tags=self.tags)


class LiveMetrics:
    """Live performance from labels joined to served predictions (monitor/live.py): the metrics of
    each version's latest labelled rows, and label rows by whether they joined a prediction."""

    def __init__(self, model: str):
        keys = ("model", "version")
        self.model = model
        self.gauges = {  # the names `MetricSpec.summarize` gives, prefixed `live_`
            "live_accuracy": metrics.Gauge("raymlp_live_accuracy", "Accuracy over the latest labelled rows.", tag_keys=keys),
            "live_auc": metrics.Gauge("raymlp_live_auc", "ROC AUC (macro, one-vs-rest) over the latest labelled rows.", tag_keys=keys),
            "live_f1": metrics.Gauge("raymlp_live_f1", "Macro F1 over the latest labelled rows.", tag_keys=keys),
            "live_loss": metrics.Gauge("raymlp_live_loss", "Loss (cross-entropy or MSE) over the latest labelled rows.", tag_keys=keys),
            "live_rmse": metrics.Gauge("raymlp_live_rmse", "RMSE, in the label's units, over the latest labelled rows.", tag_keys=keys),
            "live_mae": metrics.Gauge("raymlp_live_mae", "MAE, in the label's units, over the latest labelled rows.", tag_keys=keys),
            "live_r2": metrics.Gauge("raymlp_live_r2", "R-squared over the latest labelled rows.", tag_keys=keys),
            "live_rows": metrics.Gauge("raymlp_live_rows", "Labelled rows the live metrics cover.", tag_keys=keys),
        }  # fmt: skip
        self.crossed = metrics.Gauge("raymlp_live_thresholds_crossed",
                                     "Live metrics past their monitor.feedback.thresholds.", tag_keys=keys)  # fmt: skip
        self.rows = metrics.Counter("raymlp_feedback_rows_total", "Label rows received, by whether they joined a prediction.",
                                    tag_keys=("model", "outcome"))  # fmt: skip

    def observe(self, version: str, scores: dict[str, float], crossed: int) -> None:
        tags = {"model": self.model, "version": version}
        for name, value in scores.items():
            if name in self.gauges:
                self.gauges[name].set(value, tags=tags)
        self.crossed.set(crossed, tags=tags)

    def counted(self, outcome: str, rows: int) -> None:
        if rows:  # Ray's counters refuse 0
            self.rows.inc(rows, tags={"model": self.model, "outcome": outcome})


class DataMetrics:
    """What a pipeline run's data stage read: rows by outcome (valid, duplicate, and quarantined by
    reason, e.g. `range:age`), and files it could not read. From the driver; Ray's metrics agent
    goes on exporting the counts after the driver exits."""

    def __init__(self, model: str):
        self.tags = {"model": model}
        self.rows = metrics.Counter("raymlp_data_rows_total", "Rows the data stage read, by outcome and reason.",
                                    tag_keys=("model", "outcome", "reason"))  # fmt: skip
        self.unreadable = metrics.Counter("raymlp_data_unreadable_files_total", "Files quarantined whole.", tag_keys=("model",))

    def observe(self, valid: int, duplicates: int, quarantined: dict[str, int], unreadable_files: int) -> None:
        counts = [("valid", "", valid), ("duplicate", "", duplicates)] + [("quarantined", r, n) for r, n in quarantined.items()]
        for outcome, reason, n in counts:
            if n:  # Ray's counters refuse 0
                self.rows.inc(n, tags={**self.tags, "outcome": outcome, "reason": reason})
        if unreadable_files:
            self.unreadable.inc(unreadable_files, tags=self.tags)


class TrainMetrics:
    """A training run's progress, from its rank-0 worker each epoch: the epoch, and its losses, the
    run's chosen metric and throughput, by run (a tune trial is a run of its own)."""

    def __init__(self, run: str):
        self.tags = {"run": run}
        self.epoch = metrics.Gauge("raymlp_train_epoch", "Latest finished epoch.", tag_keys=("run",))
        self.values = metrics.Gauge("raymlp_train_metric", "Latest epoch's metrics: losses, the chosen metric, samples/s.",
                                    tag_keys=("run", "metric"))  # fmt: skip

    def observe(self, epoch: int, row: dict[str, float], names: list[str]) -> None:
        self.epoch.set(epoch, tags=self.tags)
        for name in names:
            if name in row and np.isfinite(row[name]):
                self.values.set(row[name], tags={**self.tags, "metric": name})


class RetrainMetrics:
    """Retraining events by outcome: skipped (no trigger fired), promoted, challenger (registered, refused by
    the promotion policy) and refused (another retrain of the pipeline was running)."""

    def __init__(self, model: str):
        self.tags = {"model": model}
        self.events = metrics.Counter("raymlp_retrains_total", "Retrains by outcome.", tag_keys=("model", "outcome"))

    def observe(self, outcome: str) -> None:
        self.events.inc(tags={**self.tags, "outcome": outcome})
