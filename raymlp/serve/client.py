"""Send raw feature rows to a running raymlp app over HTTP."""

from __future__ import annotations

from typing import Any

import requests


class PredictError(RuntimeError):
    def __init__(self, status: int, body: str):
        self.status = status
        super().__init__(f"HTTP {status}: {body}")


def predict(url: str, rows: list[dict[str, Any]], api_key: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """POST `rows` to `{url}/predict` and return the decoded response; 4xx/5xx raise PredictError."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = requests.post(f"{url.rstrip('/')}/predict", json={"rows": rows}, headers=headers, timeout=timeout_s)
    if response.status_code >= 400:
        raise PredictError(response.status_code, response.text)
    return response.json()
