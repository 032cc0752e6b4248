"""One structured access-log line per request, and HTTP metrics, in ASGI middleware outside every
other check, so rejected requests (401, 413, 429, 422) are logged and counted too.

Request ids come from Ray Serve's proxy: it keeps the caller's `X-Request-ID` or makes one, passes
it on in the request headers and returns it in the response; the log line carries it, so a caller
can quote it and an operator can find the request.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from raymlp.monitor.metrics import HttpMetrics
from raymlp.serve.security import ASGIApp, Message, Receive, Scope, Send, route_path

log = logging.getLogger("raymlp.access")

REQUEST_ID = b"x-request-id"


class AccessLog:
    """Logs and counts the outcome of each request, under its request id. Paths outside `routes` are logged as they
    are but counted as `other`: a scanner's paths must not become metric labels."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics | None, routes: frozenset[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # Outside Serve (a bare ASGI server) no proxy sets it: the line gets an id of its own.
        given = dict(scope["headers"]).get(REQUEST_ID, b"").decode("latin-1")
        request_id = given[:64] if given.isprintable() and given else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id  # `request.state.request_id` in a route
        start, status = time.perf_counter(), 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            seconds, route = time.perf_counter() - start, route_path(scope)
            if self.metrics:
                self.metrics.observe(route if route in self.routes else "other", status, seconds)
            log.info(json.dumps({"request_id": request_id, "method": scope["method"], "route": route[:200],
                                 "status": status, "ms": round(seconds * 1000, 2)}))  # fmt: skip
