"""HTTP guards in front of the model: API keys, a request body limit and a per-key rate limit.

One pure ASGI middleware on the replica's FastAPI app, so every check runs before the body is
parsed (a FastAPI `Depends()` runs after the body was read, and may reject it first) and a chunked
upload is cut off at the limit. Ray's token auth does not cover Serve's HTTP
routes; this does, for the app's routes only.

The replica holds SHA-256 digests of the keys, never the keys: a deployment's arguments are visible
to anyone who can read the cluster's state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raymlp.config.schema import AuthConfig

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Probes answer without a key: a load balancer or Kubernetes has none."""


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class GuardSettings:
    key_digests: tuple[str, ...]
    """Empty: no authentication."""
    max_body_bytes: int
    rate_per_s: float | None
    """Requests per second per key (a burst of one second's worth), per replica; None: unlimited."""


class RequestGuard:
    """ASGI middleware: 401 without a valid key, 429 over the key's rate, 413 over the body limit."""

    def __init__(self, app: ASGIApp, settings: GuardSettings):
        self.app, self.settings = app, settings
        self.buckets: dict[str, tuple[float, float]] = {}  # key digest -> (tokens, last refill time)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) in OPEN_PATHS:
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        caller = "anonymous"
        if self.settings.key_digests:
            caller = self._authenticate(headers)
            if caller is None:
                return await _reject(send, 401, "missing or invalid API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                                     {"www-authenticate": 'Bearer realm="raymlp"'})  # fmt: skip
        if self.settings.rate_per_s is not None and (wait := self._take_token(caller)) > 0:
            return await _reject(send, 429, "rate limit exceeded for this key", {"retry-after": str(math.ceil(wait))})
        limit = self.settings.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit():
            if int(declared) > limit:
                return await _reject(send, 413, f"request body over {limit} bytes")
        elif (receive := await self._buffer_chunked(receive, limit)) is None:
            return await _reject(send, 413, f"request body over {limit} bytes")
        await self.app(scope, receive, send)

    def _authenticate(self, headers: dict[str, str]) -> str | None:
        """The digest of the presented key when it is one of ours, compared in constant time."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else headers.get("x-api-key", "")
        if not presented:
            return None
        digest = key_digest(presented)
        # Compare against every key, without stopping at a match: timing says nothing about which.
        matches = [hmac.compare_digest(digest, known) for known in self.settings.key_digests]
        return digest if any(matches) else None

    def _take_token(self, caller: str) -> float:
        """0 when the caller may proceed, else the seconds until its next token."""
        rate = self.settings.rate_per_s
        now = time.monotonic()
        tokens, last = self.buckets.get(caller, (rate, now))
        tokens = min(rate, tokens + (now - last) * rate)
        if tokens < 1:
            self.buckets[caller] = (tokens, now)
            return (1 - tokens) / rate
        self.buckets[caller] = (tokens - 1, now)
        return 0.0

    async def _buffer_chunked(self, receive: Receive, limit: int) -> Receive | None:
        """Read a body of undeclared length up to `limit` (None past it), and replay it to the
        app: FastAPI reads whole bodies anyway, and an error raised from inside the app would
        reach the client as a 500, not a 413."""
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > limit:
                return None
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return replay


def resolve_api_keys(cfg: AuthConfig, run_dir: Path) -> list[str]:
    """The keys the app accepts (empty when auth is off). With no key configured anywhere, one is
    generated into `<run_dir>/api_keys` (mode 600), so a laptop run is protected from the start."""
    if cfg.mode == "none":
        return []
    path = Path(cfg.keys_file) if cfg.keys_file else run_dir / "api_keys"
    if cfg.keys_file and not path.is_file():
        raise FileNotFoundError(f"serve.auth.keys_file: no such file: {path}")
    keys = load_keys(os.environ.get(cfg.keys_env), path.read_text() if path.is_file() else None)
    if not keys and not cfg.keys_file:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        keys = [secrets.token_urlsafe(32)]
        path.write_text(keys[0] + "\n")
        log.info("serve: generated an API key in %s", path)
    if not keys:
        raise ValueError(f"serve.auth: no API keys in ${cfg.keys_env} or {path}; add one, or set serve.auth.mode: none")
    return keys


def load_keys(env_value: str | None, file_text: str | None) -> list[str]:
    """Keys from a comma-separated environment variable and a file of one key per line (# comments)."""
    keys: Iterable[str] = (env_value or "").split(",")
    if file_text:
        keys = [*keys, *(line.split("#")[0] for line in file_text.splitlines())]
    return [k.strip() for k in keys if k.strip()]


def route_path(scope: Scope) -> str:
    root = scope.get("root_path", "")
    path = scope["path"]
    return path[len(root) :] if root and path.startswith(root) else path


async def _reject(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
