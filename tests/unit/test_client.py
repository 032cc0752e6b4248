"""raymlp's HTTP client against a real server on 127.0.0.1 that cuts answers short on purpose."""

import json
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from raymlp.serve.client import PredictError, predict

ANSWER = json.dumps({"predictions": [{"label": 1}], "version": "3"}).encode()


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """Answers each request as the next plan step says: `cut` sends the headers and closes (a replica
    killed between an answer's headers and body), `ok` answers whole, `bad` answers 422."""
    plan: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                step = plan.pop(0)
                status, body = ("422 Unprocessable Entity", b'{"detail": "bad"}') if step == "bad" else ("200 OK", ANSWER)
                conn.sendall(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                             "connection: close\r\n\r\n".encode())  # fmt: skip
                if step != "cut":
                    conn.sendall(body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", plan
    listener.close()


def test_an_answer_cut_short_is_replayed(server):
    url, plan = server
    plan += ["cut", "cut", "ok"]
    assert predict(url, [{"x": 1.0}], retries=2) == json.loads(ANSWER)
    assert plan == []


def test_it_gives_up_after_its_retries(server):
    url, plan = server
    plan += ["cut", "cut", "ok"]
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        predict(url, [{"x": 1.0}], retries=1)
    assert plan == ["ok"]


def test_an_http_error_is_not_replayed(server):
    url, plan = server
    plan += ["bad", "ok"]
    with pytest.raises(PredictError) as error:
        predict(url, [{"x": 1.0}])
    assert error.value.status == 422 and plan == ["ok"]
