"""Live performance: labels that arrive after their predictions, joined by request id.

Every answer the app gives is kept by request id (the `X-Request-ID` it answered with) in the
app's `Feedback` deployment, the latest `monitor.feedback.max_requests` of them; labels sent to
`POST /feedback` (or from a file, `raymlp feedback`) are joined to them row by row and scored by the
code that scores validation during training (`train.metrics.MetricSpec`), over the latest
`window_rows` labelled rows per served version: accuracy, AUC and F1, or RMSE, MAE and R², exported
as `raymlp_live_<metric>` gauges. A version whose live metrics cross `monitor.feedback.thresholds`
is degraded: what the RaymlpLiveMetricDegraded alert and `raymlp retrain --when degraded` act on.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from raymlp.config.schema import LOWER_IS_BETTER, FeedbackConfig
from raymlp.data.features import FeaturePipeline
from raymlp.monitor.metrics import LiveMetrics
from raymlp.serve.model import PREDICTION, Predicted, probabilities
from raymlp.train.metrics import MetricSpec


@dataclass(frozen=True)
class Answered:
    """One answered request: the version that answered and its prediction columns."""

    request_id: str
    version: str
    predictions: Predicted

    @property
    def rows(self) -> int:
        return len(self.predictions[PREDICTION])


class LiveScores:
    """Per version, the latest `window_rows` labelled rows as summed statistics (they add, as a
    training epoch's do), and the metrics they give."""

    def __init__(self, features: FeaturePipeline, window_rows: int):
        self.features, self.window_rows = features, window_rows
        self.spec = MetricSpec.of(features)
        self.windows: dict[str, deque[tuple[int, torch.Tensor]]] = {}

    def add(self, version: str, predictions: Predicted, labels: Sequence[Any]) -> None:
        """Raises ValueError for a label that is not one of the model's classes (or not a number)."""
        targets = torch.as_tensor(self.features.encode_labels(list(labels)))
        window = self.windows.setdefault(version, deque())
        window.append((len(labels), self.spec.sums(self._outputs(predictions), targets)))
        rows = sum(n for n, _ in window)
        while rows - window[0][0] >= self.window_rows:
            rows -= window.popleft()[0]

    def metrics(self, version: str) -> dict[str, float]:
        """`live_<metric>` over the version's window, and `live_rows`."""
        window = self.windows.get(version)
        if not window:
            return {}
        total = torch.stack([s for _, s in window]).sum(0)
        scores = self.spec.summarize(total, "live", detailed=True)  # NaN where undefined (AUC of one class)
        return {k: v for k, v in scores.items() if math.isfinite(v)} | {"live_rows": float(sum(n for n, _ in window))}

    def _outputs(self, predictions: Predicted) -> torch.Tensor:
        """What the model output, rebuilt from the served predictions: log-probabilities (their
        softmax is the served probabilities), or standardized regression values."""
        f = self.features
        if f.task == "regression":
            values = predictions[PREDICTION].astype(np.float64)
            return torch.from_numpy((values - f.label_center) / f.label_scale)[:, None].float()
        return torch.from_numpy(np.log(np.maximum(probabilities(predictions)[1], 1e-12))).float()


def crossed(scores: dict[str, float], cfg: FeedbackConfig) -> list[str]:
    """The thresholds a version's live `scores` are past (metric names, as `thresholds` has them):
    none before `min_rows` labelled rows, so that a handful of labels never triggers a retrain."""
    if scores.get("live_rows", 0) < cfg.min_rows:
        return []
    past = []
    for name, bound in cfg.thresholds.items():
        value = scores.get(f"live_{name}")
        if value is not None and (value > bound if f"valid_{name}" in LOWER_IS_BETTER else value < bound):
            past.append(name)
    return past


class Feedback:
    """The app's store of recent answers and their live scores: one replica (a Serve deployment,
    made one in `serve.app`), which the gateways tell what they answered and ask to join labels."""

    def __init__(self, model_name: str, features_json: str, cfg: FeedbackConfig, export_metrics: bool):
        self.features = FeaturePipeline.from_json(features_json)
        self.cfg = cfg
        self.answered: OrderedDict[str, Answered] = OrderedDict()
        self.scores = LiveScores(self.features, cfg.window_rows)
        self.metrics = LiveMetrics(model_name) if export_metrics else None

    async def record(self, answered: list[Answered]) -> None:
        for a in answered:
            # Copied: arrays that arrive in a large call are views of Ray's object store, and kept
            # ones would hold the whole call's buffer there until their last request leaves.
            self.answered[a.request_id] = replace(a, predictions={k: v.copy() for k, v in a.predictions.items()})
            self.answered.move_to_end(a.request_id)
        while len(self.answered) > self.cfg.max_requests:
            self.answered.popitem(last=False)

    async def join(self, feedback: list[dict[str, Any]]) -> dict[str, Any]:
        """`feedback`: [{"request_id": ..., "labels": [one per row of that request]}]. Answers how
        many rows joined, which request ids are unknown (or gone: only the latest `max_requests`
        answers are kept, and each joins once), which had the wrong number of labels, and the
        live metrics."""
        joined, unknown, mismatched, versions = 0, [], [], set()
        for item in feedback:
            answered = self.answered.get(item["request_id"])
            if answered is None:
                unknown.append(item["request_id"])
            elif len(item["labels"]) != answered.rows:
                mismatched.append(item["request_id"])
            else:  # joined once: labels sent again for it find nothing, instead of counting twice
                del self.answered[item["request_id"]]
                self.scores.add(answered.version, answered.predictions, item["labels"])
                joined += len(item["labels"])
                versions.add(answered.version)
        live = {v: self.scores.metrics(v) for v in sorted(versions)}
        degraded = {v: crossed(scores, self.cfg) for v, scores in live.items()}
        if self.metrics:
            self.metrics.counted("joined", joined)
            self.metrics.counted("unmatched", sum(len(i["labels"]) for i in feedback) - joined)
            for version, scores in live.items():
                self.metrics.observe(version, scores, len(degraded[version]))
        return {"joined_rows": joined, "unknown_request_ids": unknown, "mismatched_request_ids": mismatched,
                "live": live, "degraded": {v: names for v, names in degraded.items() if names}}  # fmt: skip

    async def live(self) -> dict[str, Any]:
        """Every version's live metrics and the thresholds they are past (`GET /feedback`)."""
        versions = {}
        for version in self.scores.windows:
            scores = self.scores.metrics(version)
            versions[version] = {"metrics": scores, "degraded": crossed(scores, self.cfg)}
        return {"thresholds": self.cfg.thresholds, "min_rows": self.cfg.min_rows, "versions": versions}
