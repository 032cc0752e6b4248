"""raymlp's metrics, all named `raymlp_*` and labelled by model and version.

They go through `ray.util.metrics`, which Ray's metrics agent exports for Prometheus; a
prometheus_client registry inside a Serve replica would live in that process only and never be
scraped.
"""

from __future__ import annotations

from typing import Any

from ray.util import metrics

LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]
DIFFERENCE_BUCKETS = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]


class RequestMetrics:
    """Rows predicted and model latency per request, for one served model version."""

    def __init__(self, model: str, version: str):
        keys = ("model", "version")
        self.tags = {"model": model, "version": version}
        self.rows = metrics.Counter("raymlp_predicted_rows_total", "Rows predicted.", tag_keys=keys)
        self.latency = metrics.Histogram(
            "raymlp_predict_latency_seconds", "Model time per request.", boundaries=LATENCY_BUCKETS_S, tag_keys=keys
        )

    def observe(self, rows: int, seconds: float) -> None:
        self.rows.inc(rows, tags=self.tags)
        self.latency.observe(seconds, tags=self.tags)


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

    def compare(self, served: list[dict[str, Any]], shadow: list[dict[str, Any]]) -> None:
        self.rows.inc(len(served), tags=self.tags)
        if served and "label" in served[0]:
            self.agreed.inc(sum(a["label"] == b["label"] for a, b in zip(served, shadow)), tags=self.tags)
        else:
            for a, b in zip(served, shadow):
                self.difference.observe(abs(a["value"] - b["value"]), tags=self.tags)

    def failed(self) -> None:
        self.failures.inc(tags=self.tags)
