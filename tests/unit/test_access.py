"""The access log in front of the request guard, as the gateway stacks them: real HTTP, no Ray."""

import json
import logging

import pytest
import requests
from fastapi import FastAPI

from raymlp.serve.access import AccessLog
from raymlp.serve.security import GuardSettings, RequestGuard, key_digest

from conftest import serve_asgi

KEY = "k-" + "y" * 30


@pytest.fixture(scope="module")
def logged():
    api = FastAPI()

    @api.post("/predict")
    async def predict() -> dict:
        return {"ok": True}

    guarded = RequestGuard(api, GuardSettings((key_digest(KEY),), max_body_bytes=1000, rate_per_s=None))
    server, url = serve_asgi(AccessLog(guarded, metrics=None, routes=frozenset({"/predict"})))
    yield url
    server.should_exit = True


def lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "raymlp.access"]


def test_every_request_is_logged_under_its_id_rejections_included(logged, caplog):
    caplog.set_level(logging.INFO, logger="raymlp.access")
    requests.post(f"{logged}/predict", headers={"X-Request-ID": "trace-7"}, timeout=5)
    requests.post(f"{logged}/predict", headers={"X-API-Key": KEY}, timeout=5)
    rejected, served = lines(caplog)
    assert rejected["request_id"] == "trace-7" and rejected["status"] == 401 and rejected["route"] == "/predict"
    assert served["status"] == 200 and len(served["request_id"]) == 32  # none given: one of its own
    assert served["ms"] >= 0


def test_a_scanners_long_path_is_clipped_in_the_log(logged, caplog):
    caplog.set_level(logging.INFO, logger="raymlp.access")
    requests.get(f"{logged}/{'x' * 1000}", headers={"X-API-Key": KEY}, timeout=5)
    [line] = lines(caplog)
    assert line["status"] == 404 and len(line["route"]) == 200
