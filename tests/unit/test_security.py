"""The request guard in front of a tiny FastAPI app served by uvicorn on 127.0.0.1: real HTTP, no Ray."""


import pytest
import requests
from fastapi import FastAPI, Request

from raymlp.serve.security import GuardSettings, RequestGuard, key_digest, load_keys

from conftest import serve_asgi

KEY = "k-" + "x" * 30


def serve_guarded(settings: GuardSettings):
    api = FastAPI()

    @api.post("/predict")
    async def predict(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    @api.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return serve_asgi(RequestGuard(api, settings))


@pytest.fixture(scope="module")
def guarded():
    server, url = serve_guarded(GuardSettings((key_digest(KEY),), max_body_bytes=1000, rate_per_s=None))
    yield url
    server.should_exit = True


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"X-API-Key": KEY[:-1]}],
)
def test_requests_without_a_valid_key_get_401_before_the_body_is_read(guarded, headers):
    response = requests.post(f"{guarded}/predict", data="{not json", headers=headers, timeout=5)
    assert response.status_code == 401
    assert "API key" in response.json()["detail"] and response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("headers", [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}])
def test_either_header_carries_the_key(guarded, headers):
    assert requests.post(f"{guarded}/predict", data=b"abc", headers=headers, timeout=5).json() == {"bytes": 3}


def test_probes_need_no_key(guarded):
    assert requests.get(f"{guarded}/healthz", timeout=5).status_code == 200


def test_bodies_over_the_limit_get_413_declared_or_chunked(guarded):
    auth = {"X-API-Key": KEY}
    assert requests.post(f"{guarded}/predict", data=b"x" * 1001, headers=auth, timeout=5).status_code == 413
    chunks = (b"x" * 300 for _ in range(5))  # a generator: sent chunked, no Content-Length
    response = requests.post(f"{guarded}/predict", data=chunks, headers=auth, timeout=5)
    assert response.status_code == 413 and "1000 bytes" in response.json()["detail"]
    assert requests.post(f"{guarded}/predict", data=b"x" * 1000, headers=auth, timeout=5).status_code == 200


def test_rate_limit_is_per_key_and_says_when_to_retry():
    other = "another-key-" + "y" * 20
    server, url = serve_guarded(GuardSettings((key_digest(KEY), key_digest(other)), max_body_bytes=100, rate_per_s=2))
    try:
        statuses = [requests.post(f"{url}/predict", headers={"X-API-Key": KEY}, timeout=5) for _ in range(4)]
        assert [r.status_code for r in statuses][:2] == [200, 200] and statuses[-1].status_code == 429
        assert int(statuses[-1].headers["retry-after"]) >= 1
        assert requests.post(f"{url}/predict", headers={"X-API-Key": other}, timeout=5).status_code == 200
    finally:
        server.should_exit = True


def test_keys_load_from_a_variable_and_a_file():
    assert load_keys(" a, b ,", "c\n# comment\n d # trailing\n\n") == ["a", "b", "c", "d"]
