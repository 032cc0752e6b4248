"""Fuzzing the served quickstart app over HTTP: schemathesis against the app's own OpenAPI schema,
then 1,000 malformed payloads. Every answer must be a 4xx whose JSON `detail` names the problem
without echoing the input, and no replica may die or restart.

    pytest tests/integration/test_serve_fuzz.py -q

Only the app's public surface is used (the pipeline result's `endpoint` and `api_key`), so the
tests hold whatever deployments sit behind it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from raymlp.config import load_config
from raymlp.config.schema import ServeConfig
from raymlp.pipeline import run_pipeline

from conftest import QUICKSTART, free_port, tiny_overrides

pytestmark = pytest.mark.integration

ROW = {"tenure_months": 3.0, "monthly_charges": 80.0, "support_calls": 4, "age": 30, "plan": "basic", "region": "south"}
NUMBERS = ("tenure_months", "monthly_charges", "support_calls", "age")
TEXTS = ("plan", "region")
MARKER = "zqx-fuzz-7f3a"
"""Planted in every malformed value: an answer that contains it echoes the input back."""
PAYLOADS = 1000


@pytest.fixture(scope="module")
def served(ray_session, quickstart_data, tmp_path_factory):
    """The quickstart model trained (one worker, no search), registered and served with auth on."""
    from ray import serve

    serve.shutdown()  # an earlier module's Serve keeps its own HTTP port and app on /
    overrides = [*tiny_overrides(quickstart_data, tmp_path_factory.mktemp("fuzz"), free_port()), "train.num_workers=1"]
    cfg = load_config(QUICKSTART / "pipeline.yaml", overrides)
    yield cfg, run_pipeline(cfg, ["data", "train", "register", "serve"])
    serve.shutdown()


def auth(result) -> dict[str, str]:
    return {"Authorization": f"Bearer {result.api_key}"}


def replica_processes(ray, gcs_address: str) -> dict[str, tuple[str, int, int]]:
    """Serve replica actor name -> (actor id, pid, restarts). A replica that died is replaced under a
    new name; one restarted in place keeps its name but not its pid or restart count."""
    from ray.util.state import list_actors

    named = ray.util.list_named_actors(all_namespaces=True)
    names = {a["name"] for a in named if a["name"].startswith("SERVE_REPLICA::")}
    actors = list_actors(address=gcs_address, filters=[("state", "=", "ALIVE")], detail=True, limit=10_000)
    found = {a.name: (a.actor_id, a.pid, a.num_restarts) for a in actors if a.name in names}
    # The state API finds the cluster through its dashboard: make sure it answered for ours.
    assert names and set(found) == names, (names, set(found))
    return found


# --- schemathesis: cases generated from the app's own OpenAPI schema ------------------------------


def test_schema_generated_requests_never_get_a_server_error(served):
    """Bodies generated from the live app's /openapi.json for POST /predict and /predict/columns,
    valid and invalid (schemathesis' positive and negative modes). Its `from_fixture` pytest loader
    fails under pytest 9.2 (it sets `Function._nodeid`), so the operations' Hypothesis strategies
    are used directly."""
    _, result = served
    schema = schemathesis.openapi.from_url(f"{result.endpoint}/openapi.json", headers=auth(result), timeout=30)
    operations = [schema[path]["POST"] for path in ("/predict", "/predict/columns")]
    cases = st.one_of(*(op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode))
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=200,
        deadline=timedelta(seconds=10),  # per request: catches a hang, tolerates a busy 2-core machine
        derandomize=True,
        database=None,  # no example database: every run draws the same cases
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def call(case):
        response = case.call_and_validate(
            base_url=result.endpoint, session=session, headers=auth(result), checks=[not_a_server_error], timeout=30
        )
        statuses[response.status_code] += 1

    with requests.Session() as session:
        call()
    assert statuses[200] and statuses[422], statuses  # both valid and invalid bodies were sent


# --- 1,000 malformed payloads -----------------------------------------------------------------------


@dataclass
class Payload:
    kind: str
    body: bytes | Callable[[], Iterator[bytes]]
    """Bytes, or a generator factory for a chunked upload of undeclared length."""
    content_type: str | None = "application/json"
    field: str | None = None
    """The field path the 422 must name, when one does."""
    status: int | None = None
    """The exact status expected, when only one is right."""

    def describe(self) -> str:
        body = self.body if isinstance(self.body, bytes) else b"<chunked>"
        head = body[:400] + (b"..." if len(body) > 400 else b"")
        return f"{self.kind} ({len(body)} bytes, {self.content_type}): {head!r}"


def _rows(rng: random.Random) -> list[dict]:
    return [dict(ROW, age=rng.randint(18, 90), plan=rng.choice(["basic", "premium"])) for _ in range(rng.randint(1, 4))]


def _json(value) -> bytes:
    return json.dumps(value).encode()


def _spliced(rows: list[dict], i: int, field: str, raw: str) -> bytes:
    """`{"rows": rows}` with rows[i][field] replaced by `raw`, a literal json.dumps would refuse."""
    rows = [dict(r) for r in rows]
    rows[i][field] = MARKER
    return _json({"rows": rows}).replace(f'"{MARKER}"'.encode(), raw.encode(), 1)


def _wrong_type(rng: random.Random) -> Payload:
    rows = _rows(rng)
    i = rng.randrange(len(rows))
    field = rng.choice(NUMBERS + TEXTS)
    if field in NUMBERS:
        value = rng.choice([MARKER, f"12{MARKER}", [MARKER], {"v": MARKER}, [1.5]])
    else:
        value = rng.choice([rng.randint(-9, 9), rng.random(), True, [MARKER], {"v": MARKER}])
    rows[i][field] = value
    return Payload("wrong type", _json({"rows": rows}), field=f"body.rows.{i}.{field}", status=422)


def _wrong_rows_type(rng: random.Random) -> Payload:
    value = rng.choice([MARKER, 7, {"r": MARKER}, [MARKER], [[MARKER]], [7], True])
    return Payload("rows of the wrong type", _json({"rows": value}), field="body.rows", status=422)


def _missing(rng: random.Random) -> Payload:
    rows = _rows(rng)
    if rng.random() < 0.2:
        misnamed = {rng.choice(["row", "data", "Rows"]): rows}
        return Payload("missing rows", _json(misnamed), field="body.rows", status=422)
    i = rng.randrange(len(rows))
    field = rng.choice(NUMBERS + TEXTS)
    del rows[i][field]
    return Payload("missing field", _json({"rows": rows}), field=f"body.rows.{i}.{field}", status=422)


def _extra(rng: random.Random) -> Payload:
    rows = _rows(rng)
    name = f"extra_{rng.randrange(1000)}"
    value = rng.choice([MARKER, 1, None, [MARKER], {"v": MARKER}])
    if rng.random() < 0.3:
        return Payload("extra top-level field", _json({"rows": rows, name: value}), field=f"body.{name}", status=422)
    i = rng.randrange(len(rows))
    rows[i][name] = value
    return Payload("extra field", _json({"rows": rows}), field=f"body.rows.{i}.{name}", status=422)


def _not_finite(rng: random.Random) -> Payload:
    rows = _rows(rng)
    i, field = rng.randrange(len(rows)), rng.choice(NUMBERS)
    raw = rng.choice(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", '"NaN"', '"inf"', '"-Infinity"'])
    return Payload("NaN or Infinity", _spliced(rows, i, field, raw), field=f"body.rows.{i}.{field}", status=422)


def _broken_json(rng: random.Random) -> Payload:
    body = _json({"rows": _rows(rng)})
    while True:
        how = rng.randrange(4)
        if how == 0:  # truncated: every proper prefix of an object is invalid
            broken = body[: rng.randrange(1, len(body))]
        elif how == 1:
            at = rng.randrange(len(body))
            broken = body[:at] + rng.choice([b"{", b"]", b'"', b",", b":", MARKER.encode(), b"\\"]) + body[at:]
        elif how == 2:
            broken = body.replace(b'"', b"'")
        else:
            broken = body + rng.choice([b",", b"}", MARKER.encode(), b"[]"])
        try:
            json.loads(broken)
        except ValueError:
            return Payload("broken JSON", broken)


def _deep(rng: random.Random) -> Payload:
    depth = rng.choice([64, 1_000, 10_000, 200_000])
    nested = "[" * depth + f'"{MARKER}"' + "]" * depth
    rows = _rows(rng)
    where = rng.randrange(3)
    if where == 0:
        return Payload("deeply nested body", nested.encode())
    if where == 1:
        return Payload("deeply nested rows", f'{{"rows": {nested}}}'.encode())
    i, field = rng.randrange(len(rows)), rng.choice(NUMBERS)
    return Payload("deeply nested value", _spliced(rows, i, field, nested))


def _huge_string(rng: random.Random) -> Payload:
    rows = _rows(rng)
    i, field = rng.randrange(len(rows)), rng.choice(NUMBERS)
    rows[i][field] = MARKER * rng.choice([10, 10_000, 200_000])  # up to ~2.6 MB, under the body limit
    return Payload("huge string", _json({"rows": rows}), field=f"body.rows.{i}.{field}", status=422)


def _too_many_rows(rng: random.Random, max_rows: int) -> Payload:
    rows = [dict(ROW) for _ in range(max_rows + rng.choice([1, 2, 100, 3000]))]
    return Payload("over max_rows", _json({"rows": rows}), field="body.rows", status=422)


def _oversized(rng: random.Random, max_body: int) -> Payload:
    size = max_body + rng.choice([1, 1024, 100_000])
    if rng.random() < 0.5:
        return Payload("over the body limit", b'{"rows": "' + b"x" * (size - 12) + b'"}', status=413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the guard must count what arrives
        yield b'{"rows": ['
        for _ in range(size // 65536 + 1):
            yield b" " * 65536

    return Payload("chunked over the body limit", chunks, status=413)


def _wrong_content_type(rng: random.Random) -> Payload:
    rows = _rows(rng)
    kind = rng.randrange(4)
    if kind == 0:
        return Payload("text/plain", _json({"rows": rows}), "text/plain", field="body", status=422)
    if kind == 1:
        form = "&".join(f"{k}={v}" for k, v in rows[0].items()).encode()
        return Payload("form", form, "application/x-www-form-urlencoded", field="body", status=422)
    if kind == 2:
        boundary = f"b{rng.randrange(10**6)}"
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="rows"\r\n\r\n{MARKER}\r\n--{boundary}--\r\n'
        content_type = f"multipart/form-data; boundary={boundary}"
        return Payload("multipart", part.encode(), content_type, field="body", status=422)
    return Payload("xml", f"<rows><row>{MARKER}</row></rows>".encode(), "application/xml", field="body", status=422)


def _empty(rng: random.Random) -> Payload:
    content_type = rng.choice(["application/json", None, "text/plain"])
    return Payload("empty body", b"", content_type, field="body", status=422)


def _not_utf8(rng: random.Random) -> Payload:
    text = _json({"rows": _rows(rng)})
    at = text.index(b'"basic"' if b'"basic"' in text else b'"premium"') + 1
    while True:
        junk = bytes(rng.choice([0xFF, 0xFE, 0xC0, 0x80, 0xED, 0xA0]) for _ in range(rng.randint(1, 8)))
        try:
            junk.decode("utf-8")  # ED A0 80 and the like decode (to a surrogate or a letter): draw again
        except UnicodeDecodeError:
            return Payload("not UTF-8", text[:at] + junk + text[at:])


def _not_an_object(rng: random.Random) -> Payload:
    value = rng.choice([[ROW], [], MARKER, 42, 3.5, None, True, [[MARKER]]])
    return Payload("JSON not an object", _json(value), field="body", status=422)


def _lone_surrogate(rng: random.Random) -> Payload:
    rows = _rows(rng)
    i, field = rng.randrange(len(rows)), rng.choice(TEXTS)
    raw = '"' + rng.choice(["\\ud800", "\\udfff", "x\\udc00y", "\\ud83d"]) + '"'
    return Payload("lone surrogate", _spliced(rows, i, field, raw), field=f"body.rows.{i}.{field}", status=422)


def _huge_integer(rng: random.Random) -> Payload:
    rows = _rows(rng)
    i, field = rng.randrange(len(rows)), rng.choice(NUMBERS)
    return Payload("huge integer literal", _spliced(rows, i, field, "9" * rng.choice([5000, 100_000])))


def malformed_payloads(n: int, limits: ServeConfig, seed: int = 0) -> list[Payload]:
    """`n` payloads drawn from every kind above; the same `n`, limits and seed give the same ones."""
    # Weights: cheap kinds often, the multi-megabyte ones (over the body limit) a few dozen times.
    kinds: list[tuple[Callable[[random.Random], Payload], int]] = [
        (_broken_json, 10), (_wrong_type, 12), (_wrong_rows_type, 4), (_missing, 8), (_extra, 8),
        (_not_finite, 10), (_deep, 5), (_huge_string, 4), (partial(_too_many_rows, max_rows=limits.max_rows), 3),
        (partial(_oversized, max_body=limits.max_body_bytes), 2), (_wrong_content_type, 8), (_empty, 3),
        (_not_utf8, 6), (_not_an_object, 5), (_lone_surrogate, 4), (_huge_integer, 3),
    ]  # fmt: skip
    rng = random.Random(seed)
    makers, weights = zip(*kinds)
    return [rng.choices(makers, weights)[0](rng) for _ in range(n)]


def problems(payload: Payload, response: requests.Response) -> list[str]:
    """What is wrong with the app's answer to `payload`; empty when it is right."""
    found = []
    if not 400 <= response.status_code < 500:
        found.append(f"status {response.status_code}")
    elif payload.status is not None and response.status_code != payload.status:
        found.append(f"status {response.status_code}, expected {payload.status}")
    text = response.text
    for echo in (MARKER, "NaN", "Infinity"):
        if echo in text:
            found.append(f"echoes {echo!r}")
    if len(response.content) > 4096:
        found.append(f"answer of {len(response.content)} bytes")
    try:
        detail = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        return [*found, "no JSON detail"]
    if isinstance(detail, str):
        if not detail.strip():
            found.append("empty detail")
    elif isinstance(detail, list) and detail and all(e.get("field") and e.get("error") for e in detail):
        fields = [e["field"] for e in detail]
        if payload.field is not None and not any(f.startswith(payload.field) for f in fields):
            found.append(f"detail names {fields}, not {payload.field}")
    else:
        found.append("detail names no field and problem")
    return found


def test_seeded_malformed_payloads_are_deterministic():
    first, again = malformed_payloads(50, ServeConfig()), malformed_payloads(50, ServeConfig())
    assert [p.describe() for p in first] == [p.describe() for p in again]


def test_malformed_payloads_get_a_4xx_naming_the_problem_and_no_replica_restarts(ray_session, served):
    cfg, result = served
    gcs = ray_session.get_runtime_context().gcs_address
    before = replica_processes(ray_session, gcs)
    payloads = malformed_payloads(PAYLOADS, cfg.serve)
    failures = []
    with requests.Session() as session:
        for payload in payloads:
            headers = auth(result) | ({"content-type": payload.content_type} if payload.content_type else {})
            body = payload.body if isinstance(payload.body, bytes) else payload.body()
            try:
                response = session.post(f"{result.endpoint}/predict", data=body, headers=headers, timeout=30)
            except requests.RequestException as e:
                failures.append(f"{payload.describe()} -> {type(e).__name__}: {e}")
                session.close()  # a broken connection would spoil the next request too
                continue
            if wrong := problems(payload, response):
                failures.append(f"{payload.describe()} -> {response.status_code} {response.text[:300]!r}: {wrong}")
    assert not failures, f"{len(failures)} of {PAYLOADS} answers wrong:\n" + "\n".join(failures[:20])

    assert replica_processes(ray_session, gcs) == before
    ok = requests.post(f"{result.endpoint}/predict", json={"rows": [ROW]}, headers=auth(result), timeout=30)
    assert ok.status_code == 200, ok.text


def test_an_unknown_field_is_named_without_echoing_a_huge_key(served):
    _, result = served
    key = MARKER * 5_000
    response = requests.post(
        f"{result.endpoint}/predict", json={"rows": [{**ROW, key: 1}]}, headers=auth(result), timeout=30
    )
    assert response.status_code == 422
    assert len(response.content) < 4096 and key not in response.text
