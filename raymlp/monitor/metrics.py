"""raymlp's metrics, all named `raymlp_*` and labelled by model and version.

They go through `ray.util.metrics`, which Ray's metrics agent exports for Prometheus; a
prometheus_client registry inside a Serve replica would live in that process only and never be
scraped.
"""

from __future__ import annotations

from ray.util import metrics

LATENCY_BUCKETS_S = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]


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
