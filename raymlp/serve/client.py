"""Send raw feature rows to a running raymlp app over HTTP."""

from __future__ import annotations

import time
from typing import Any

import requests

# Failures after which the answer may be missing or cut short, never a wrong one: worth a replay.
RETRIED = (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)


class PredictError(RuntimeError):
    def __init__(self, status: int, body: str):
        self.status = status
        super().__init__(f"HTTP {status}: {body}")


def predict(
    url: str,
    rows: list[dict[str, Any]],
    api_key: str | None = None,
    timeout_s: float = 30.0,
    retries: int = 2,
    session: requests.Session | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """POST `rows` to `{url}/predict` and return the decoded response; 4xx/5xx raise PredictError.
    `request_id` (sent as `X-Request-ID`) is what labels sent later join the answer by.

    A prediction is idempotent, so a connection that breaks before its answer is whole is replayed,
    up to `retries` times. Behind `serve.topology: fused` that is the one loss HAProxy cannot undo:
    a replica killed after it sent an answer's headers and before its body."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    post = (session or requests).post
    for attempt in range(retries + 1):
        try:
            response = post(f"{url.rstrip('/')}/predict", json={"rows": rows}, headers=headers, timeout=timeout_s)
            break
        except RETRIED:
            if attempt == retries:
                raise
            time.sleep(0.05 * 2**attempt)
    if response.status_code >= 400:
        raise PredictError(response.status_code, response.text)
    return response.json()


def send_feedback(
    url: str, feedback: list[dict[str, Any]], api_key: str | None = None, per_call: int = 1024, timeout_s: float = 60.0
) -> dict[str, Any]:
    """POST true labels, `[{"request_id": ..., "labels": [...]}]`, to `{url}/feedback`, `per_call`
    requests' worth at a time; the summed counts, the latest live metrics and the versions whose
    latest are past their thresholds. Not replayed on a broken connection: labels counted twice
    would skew the live metrics."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    total: dict[str, Any] = {"joined_rows": 0, "unknown_request_ids": [], "mismatched_request_ids": [], "live": {}}
    degraded: dict[str, list[str]] = {}
    for start in range(0, len(feedback), per_call):
        response = requests.post(f"{url.rstrip('/')}/feedback", json={"feedback": feedback[start : start + per_call]},
                                 headers=headers, timeout=timeout_s)  # fmt: skip
        if response.status_code >= 400:
            raise PredictError(response.status_code, response.text)
        answer = response.json()
        total["joined_rows"] += answer["joined_rows"]
        total["unknown_request_ids"] += answer["unknown_request_ids"]
        total["mismatched_request_ids"] += answer["mismatched_request_ids"]
        total["live"] |= answer["live"]
        degraded |= {version: answer["degraded"].get(version, []) for version in answer["live"]}
    return total | {"degraded": {version: names for version, names in degraded.items() if names}}
