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
) -> dict[str, Any]:
    """POST `rows` to `{url}/predict` and return the decoded response; 4xx/5xx raise PredictError.

    A prediction is idempotent, so a connection that breaks before its answer is whole is replayed,
    up to `retries` times. Behind `serve.topology: fused` that is the one loss HAProxy cannot undo:
    a replica killed after it sent an answer's headers and before its body."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
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
