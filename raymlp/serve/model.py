"""The model side of serving: raw rows to predictions, and the Serve replica that batches them.

`predict_columns` is the one definition of a prediction (batch inference writes its columns, the
HTTP app answers them as rows or as lists). `ModelReplica` loads one registered version, verified,
and batches concurrent calls into one forward pass: inside the HTTP replica, or as a deployment of
its own behind it. It answers prediction columns (numpy arrays), which the gateway shapes for the
route: they cross a handle as a few buffers, where 1,024 row objects were pickled one by one.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.entities.model_registry import ModelVersion
from ray import serve

from raymlp.artifacts import LoadedModel, load_bundle
from raymlp.config.schema import DriftConfig
from raymlp.data.features import FeaturePipeline
from raymlp.lifecycle.quantize import interleaved_latency_ms
from raymlp.lifecycle.registry import download_bundle, int8_accepted
from raymlp.monitor.drift import DriftWindow
from raymlp.monitor.metrics import BatchMetrics, DriftMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSource:
    """Which registered model a replica serves; the version is pinned when the app is built."""

    tracking_uri: str
    model_name: str
    version: str
    precision: str
    """`serve.precision`: auto, int8 or fp32."""


@dataclass(frozen=True)
class ReplicaSettings:
    threads: int
    max_batch_size: int
    batch_wait_timeout_s: float
    export_metrics: bool
    drift: DriftConfig | None = None
    """Score a window of served rows against the training reference (exported as metrics)."""


Columns = dict[str, list[Any]]
"""Validated input columns, one value per row: what a replica predicts from, whichever form a request came in."""

Predicted = dict[str, np.ndarray]
"""Prediction columns, one value per row: what `predict_columns` gives and a replica answers."""

PREDICTION = "prediction"
PROB_PREFIX = "prob_"


def predict_columns(model: LoadedModel, columns: Mapping[str, Any], device: str = "cpu") -> Predicted:
    """Raw input columns (name -> values, or an Arrow table) to prediction columns: `prediction`
    (the most probable class, or the value in the label's units) and, for classification, one
    `prob_<class>` column per class. The one definition of a prediction: batch inference writes
    these columns, and the HTTP API answers them as JSON rows or lists (`prediction_rows`,
    `prediction_lists`)."""
    features = model.features
    x = torch.from_numpy(features.transform(columns)).to(device)
    with torch.inference_mode():
        outputs = model.module(x).cpu()
    if features.task == "regression":
        return {PREDICTION: features.decode_values(outputs[:, 0].double().numpy())}
    probs = torch.softmax(outputs.float(), dim=1).numpy()
    predicted = {PREDICTION: np.asarray(features.classes)[probs.argmax(axis=1)]}
    return predicted | {f"{PROB_PREFIX}{c}": probs[:, i] for i, c in enumerate(features.classes)}


def prediction_names(features: FeaturePipeline) -> list[str]:
    """The columns `predict_columns` adds, known before any batch runs (to refuse a name clash)."""
    return [PREDICTION] + ([f"{PROB_PREFIX}{c}" for c in features.classes] if features.task == "classification" else [])


def predict_rows(model: LoadedModel, columns: Mapping[str, Any]) -> list[dict[str, Any]]:
    """`predict_columns` as one JSON-ready prediction per row."""
    return prediction_rows(predict_columns(model, columns))


def prediction_rows(predicted: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """`predict_columns`' columns as rows: the label and every class's probability (rounded to 6
    places), or the value in the label's units. Read from the columns alone, so that a canary whose
    classes differ from the served version's answers with its own."""
    names, probs = probabilities(predicted)
    if not names:
        return [{"value": v} for v in predicted[PREDICTION].astype(np.float64).tolist()]
    # Rounded and converted to Python numbers column-wise: per value, rounding and float() took
    # more time than the forward pass of a 1,024-row batch.
    rows = np.round(probs, 6).tolist()
    return [{"label": label, "probabilities": dict(zip(names, p))} for label, p in zip(predicted[PREDICTION].tolist(), rows)]


def prediction_lists(predicted: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """`predict_columns`' columns as one list per field, in row order, the answer to a request sent
    as columns: `{"label": [...], "probabilities": {class: [...]}}`, or `{"value": [...]}`. What
    `prediction_rows` holds, without an object per row (0.8 ms of a 1,024-row answer)."""
    names, probs = probabilities(predicted)
    if not names:
        return {"value": predicted[PREDICTION].astype(np.float64).tolist()}
    return {"label": predicted[PREDICTION].tolist(), "probabilities": dict(zip(names, np.round(probs, 6).T.tolist()))}


def probabilities(predicted: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """A classifier's classes (as text) and predicted probabilities, a (rows, classes) float64
    matrix in class order; no classes for regression."""
    names = [name.removeprefix(PROB_PREFIX) for name in predicted if name.startswith(PROB_PREFIX)]
    if not names:
        return [], np.empty((len(predicted[PREDICTION]), 0))
    return names, np.stack([predicted[f"{PROB_PREFIX}{n}"] for n in names], axis=1).astype(np.float64)


PROBE_ROWS = 64
"""Rows per forward pass when `auto` times int8 against fp32: a batch of concurrent requests."""


def load_served_model(
    version: ModelVersion, precision: str, dst: Path | None = None, device: str = "cpu"
) -> tuple[LoadedModel, str]:
    """The model to serve for `serve.precision`, verified, and which weights it holds ("int8" or
    "fp32"). `auto` loads both and keeps the faster on this machine's CPU; on another device it
    keeps fp32, since the int8 kernels raymlp compiles are CPU kernels."""
    planned = planned_precision(precision, int8_accepted(version), device)
    if planned == "fp32":
        return load_bundle(download_bundle(version, quantized=False, dst=dst)[0]), "fp32"
    int8 = load_bundle(download_bundle(version, quantized=True, dst=dst)[0])
    if planned == "int8":
        return int8, "int8"
    fp32 = load_bundle(download_bundle(version, quantized=False, dst=dst)[0])
    probe = torch.randn(PROBE_ROWS, fp32.spec.input_dim)
    times = interleaved_latency_ms({"int8": int8.module, "fp32": fp32.module}, probe, rounds=5, calls=5)
    median_ms = {name: statistics.median(t) for name, t in times.items()}
    chosen = faster_precision(median_ms)
    log.info("serve.precision auto: %s (median ms at %d rows: %s)", chosen, PROBE_ROWS, median_ms)
    return (int8 if chosen == "int8" else fp32), chosen


def planned_precision(requested: str, int8_accepted: bool, device: str = "cpu") -> str:
    """What `serve.precision` comes to before anything is timed: "int8", "fp32", or "auto" when
    the replica (or batch actor) must time both to choose."""
    if requested == "fp32" or not int8_accepted or (requested == "auto" and device != "cpu"):
        return "fp32"
    return requested


def faster_precision(median_ms: Mapping[str, float]) -> str:
    """int8 only when it is faster: its kernels win 1.3-3.3x on CPUs with VNNI and lose ~10x without."""
    return "int8" if median_ms["int8"] < median_ms["fp32"] else "fp32"


class ModelReplica:
    """One version of one model. Made a Serve deployment in `serve.app`, not by a decorator: a
    decorated class is shadowed by its Deployment, so cloudpickle would copy the class by value."""

    def __init__(self, source: ModelSource, settings: ReplicaSettings):
        mlflow.set_tracking_uri(source.tracking_uri)
        version = mlflow.MlflowClient().get_model_version(source.model_name, source.version)
        # As many threads as reserved CPUs: more would fight the other replicas for the same cores.
        # Set before loading: a compiled int8 model keeps the thread count it was compiled with.
        torch.set_num_threads(settings.threads)
        self.model, self.precision = load_served_model(version, source.precision)
        self.source = source
        registered_s = version.creation_timestamp / 1000
        self.metrics = BatchMetrics(source.model_name, source.version, registered_s) if settings.export_metrics else None
        self.drift = self._drift_monitor(settings)
        # `predict(columns)` batches: a queue per instance, since `serve.batch` on a method keeps one
        # for the class and a fused gateway holds two versions (served and canary) in one process.
        batch = serve.batch(max_batch_size=settings.max_batch_size, batch_wait_timeout_s=settings.batch_wait_timeout_s)
        self.predict = batch(self._predict_batch)

    async def version(self) -> dict[str, Any]:
        return {"version": self.source.version, "precision": self.precision}

    def _drift_monitor(self, settings: ReplicaSettings) -> DriftMonitor | None:
        if settings.drift is None or not settings.export_metrics:
            return None
        if self.model.features.reference is None:
            log.warning("drift: version %s has no training reference (fitted before raymlp kept one); not scored",
                        self.source.version)  # fmt: skip
            return None
        return DriftMonitor(self.model.features, settings.drift, DriftMetrics(self.source.model_name, self.source.version))

    async def _predict_batch(self, requests: list[Columns]) -> list[dict[str, Any]]:
        """Concurrent requests (each validated columns: name -> one value per row) share one forward
        pass; each answer holds its rows' prediction columns."""
        start = time.perf_counter()
        features = self.model.features
        names = features.input_columns
        columns = requests[0] if len(requests) == 1 else {n: [v for r in requests for v in r[n]] for n in names}
        predicted = predict_columns(self.model, columns)
        if self.metrics:
            self.metrics.observe(len(requests), predicted[PREDICTION], features.task == "regression",
                                 time.perf_counter() - start, features.label_center, features.label_scale)  # fmt: skip
        if self.drift:
            self.drift.add(columns, predicted[PREDICTION])
        answers, at = [], 0
        for request in requests:
            rows = len(request[names[0]])
            answers.append({"version": self.source.version, "precision": self.precision,
                            "predictions": {name: values[at : at + rows] for name, values in predicted.items()}})  # fmt: skip
            at += rows
        return answers


class DriftMonitor:
    """A replica's window of served rows, scored every `interval_s` into the drift gauges. The
    scoring runs in a thread of its own: counting a full window takes milliseconds that requests
    should not wait behind, and the event loop's default executor is shut down while a stopping
    replica's loop closes, under a score that may be due."""

    def __init__(self, features: FeaturePipeline, cfg: DriftConfig, metrics: DriftMetrics):
        self.window = DriftWindow(features, cfg.window_rows)
        self.cfg = cfg
        self.metrics = metrics
        self.task: asyncio.Task | None = None
        self.scorer = ThreadPoolExecutor(1, thread_name_prefix="raymlp-drift")
        self.drifted: list[str] = []

    def add(self, columns: Columns, predictions: np.ndarray) -> None:
        self.window.add(columns, predictions)
        if self.task is None:  # started from the first batch: Serve runs that on the replica's event loop
            self.task = asyncio.get_running_loop().create_task(self._report())

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval_s)
            try:
                report = await asyncio.get_running_loop().run_in_executor(
                    self.scorer, self.window.score, self.window.snapshot(), self.cfg
                )
            except Exception:  # noqa: BLE001 - a scoring bug must not end monitoring, nor touch serving
                log.exception("drift: scoring the served window failed")
                continue
            self.metrics.observe(report)
            if report.drifted != self.drifted:
                log.warning("drift: features over threshold (%d rows): %s", report.rows, report.drifted or "none")
                self.drifted = report.drifted
