"""The HTTP ingress of an app: auth and limits, the request schema, the traffic split between
the served version and a canary, and shadow traffic. The models run in this replica
(`serve.topology: fused`) or in model deployments it calls through handles (`split`).

No `from __future__ import annotations` here: FastAPI reads the route's annotations at runtime, and
the request model is a local of `__serve_build_asgi_app__`.
"""

import asyncio
import json
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic_core import from_json, to_json
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from raymlp.data.features import FeaturePipeline
from raymlp.monitor.live import Answered
from raymlp.monitor.metrics import HttpMetrics, ShadowMetrics
from raymlp.serve.access import AccessLog
from raymlp.serve.model import (
    PREDICTION,
    Columns,
    ModelReplica,
    ModelSource,
    Predicted,
    ReplicaSettings,
    prediction_lists,
    prediction_rows,
)
from raymlp.serve.schemas import (
    PredictColumnsResponse,
    PredictResponse,
    make_columns_model,
    make_feedback_model,
    make_request_model,
)
from raymlp.serve.security import GuardSettings, RequestGuard

log = logging.getLogger("ray.serve")

REPLICA_LOST = (RayActorError, ActorUnavailableError)
MAX_ERRORS = 20
"""Validation errors listed in a 422; the rest are counted."""
FEEDBACK_FLUSH_S = 0.5
"""How often a gateway sends its answers to the feedback deployment, in one call."""


class ModelUnavailable(Exception):
    """No replica answered within the retries."""


@dataclass(frozen=True)
class GatewaySettings:
    model_name: str
    version: str
    """The served version; the request schema comes from its features."""
    max_rows: int
    guard: GuardSettings
    canary_version: str | None = None
    canary_percent: float = 0.0
    """Share of requests the canary answers; 0 with a canary version means shadow mode."""
    replica: ReplicaSettings | None = None
    """How this replica runs the models it holds (fused); None when it holds none (split)."""
    retries: int = 3
    export_metrics: bool = True


class RemoteModel:
    """A model deployment behind a handle (`serve.topology: split`). Predictions are idempotent,
    so a call whose replica dies is retried on another: Serve does not retry a request that was
    already running on a replica that died."""

    def __init__(self, handle: DeploymentHandle, retries: int):
        self.handle, self.retries = handle, retries

    async def predict(self, columns: Columns) -> dict[str, Any]:
        return await self._call(lambda: self.handle.predict.remote(columns))

    async def version(self) -> dict[str, Any]:
        return await self._call(lambda: self.handle.version.remote())

    async def _call(self, send: Callable[[], DeploymentResponse]) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                return await send()
            except REPLICA_LOST as e:
                log.warning("model replica lost (attempt %d): %s", attempt + 1, type(e).__name__)
                await asyncio.sleep(0.05 * 2**attempt)
        raise ModelUnavailable


Model = ModelReplica | RemoteModel


class _FastJSONRequest(Request):
    """A request whose JSON body pydantic-core parses, twice as fast as the stdlib's parser (half a
    millisecond of a 1,024-row request). A body it refuses goes to the stdlib's, so malformed JSON
    gets the same 422, and what only the stdlib accepts (a lone surrogate escape) the same field
    error."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = from_json(body)
            except ValueError:
                self._json = json.loads(body)
        return self._json


class _FastJSONRoute(APIRoute):
    """FastAPI's documented hook for a custom Request class."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_FastJSONRequest(request.scope, request.receive))

        return route


def _held(model: ModelSource | DeploymentHandle, settings: GatewaySettings) -> Model:
    """A model loaded into this replica (fused), or a handle's deployment (split)."""
    if isinstance(model, ModelSource):
        return ModelReplica(model, settings.replica)
    return RemoteModel(model, settings.retries)


class Gateway:
    """Made a Serve deployment in `serve.app`; see ModelReplica for why not by a decorator."""

    def __init__(
        self,
        primary: ModelSource | DeploymentHandle,
        features_json: str,
        settings: GatewaySettings,
        canary: ModelSource | DeploymentHandle | None = None,
        feedback: DeploymentHandle | None = None,
    ):
        self.settings = settings
        self.feedback = feedback
        self.answered: list[Answered] = []
        """Answers not yet sent to the feedback deployment (every `FEEDBACK_FLUSH_S`)."""
        self.flusher: asyncio.Task | None = None
        self.primary = _held(primary, settings)
        self.canary = _held(canary, settings) if canary is not None else None
        self.features = FeaturePipeline.from_json(features_json)
        self.random = random.Random()
        self.shadow_tasks: set[asyncio.Task] = set()
        shadowing = canary is not None and settings.canary_percent == 0
        self.shadow_metrics = (
            ShadowMetrics(settings.model_name, settings.version, settings.canary_version)
            if shadowing and settings.export_metrics
            else None
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        s = self.settings
        request_model = make_request_model(self.features, s.max_rows)
        columns_model = make_columns_model(self.features, s.max_rows)
        inputs = self.features.input_columns
        canary = f"; {s.canary_percent:g}% canary v{s.canary_version}" if s.canary_percent else ""
        api = FastAPI(
            title=f"raymlp: {s.model_name} v{s.version}{canary}",
            description="Raw feature rows in; the fitted feature transform runs next to the model.",
        )
        api.router.route_class = _FastJSONRoute
        api.add_exception_handler(RequestValidationError, _validation_error)
        api.add_exception_handler(ModelUnavailable, _unavailable)
        api.add_exception_handler(BackPressureError, _model_queue_full)
        api.add_exception_handler(Exception, _internal_error)

        # The answer is built here, so FastAPI's check of it against PredictResponse (which stays
        # for the OpenAPI schema) would only cost time: 2 ms of a 1,024-row request.
        @api.post("/predict", response_model=PredictResponse)
        async def predict(body: request_model, request: Request) -> Response:
            """One prediction per row, in order."""
            return await self.answer({name: [row[name] for row in body.rows] for name in inputs}, request, prediction_rows)

        @api.post("/predict/columns", response_model=PredictColumnsResponse)
        async def predict_columns(body: columns_model, request: Request) -> Response:
            """The same from one list of values per feature, answered as one list per field: the
            cheaper form for many rows."""
            return await self.answer(body.columns, request, prediction_lists)

        if self.feedback is not None:
            feedback_model = make_feedback_model(s.max_rows)

            @api.post("/feedback")
            async def take_feedback(body: feedback_model) -> dict[str, Any]:
                """True labels of answered requests (by the `X-Request-ID` they were answered with),
                one per row in order: joined to the predictions for live metrics."""
                f = self.features
                expected = "numbers" if f.task == "regression" else f"among the classes {f.classes}"
                for i, item in enumerate(body.feedback):
                    try:
                        f.encode_labels(item.labels)
                    except (TypeError, ValueError):  # their messages quote the input: say what is expected
                        error = {"loc": ("body", "feedback", i, "labels"), "msg": f"labels must be {expected}", "type": "value_error"}
                        raise RequestValidationError([error]) from None
                await self._flush_answers()  # this replica's latest answers, so that they join
                return await self.feedback.join.remote([item.model_dump() for item in body.feedback])

            @api.get("/feedback")
            async def live_metrics() -> dict[str, Any]:
                """Each version's live metrics and the `monitor.feedback.thresholds` they are past."""
                return await self.feedback.live.remote()

        @api.get("/healthz")
        def healthz() -> dict[str, str]:
            """Liveness: the gateway answers."""
            return {"status": "ok", "model": s.model_name, "version": s.version}

        @api.get("/readyz")
        async def readyz() -> JSONResponse:
            """Readiness: a replica of the served version answers."""
            try:
                await self.primary.version()
            except ModelUnavailable:
                return JSONResponse({"status": "unavailable"}, status_code=503, headers={"retry-after": "1"})
            return JSONResponse({"status": "ready", "model": s.model_name, "version": s.version})

        api.add_middleware(RequestGuard, settings=s.guard)
        # Added last, so outermost: it sees the guard's rejections too.
        metrics = HttpMetrics(s.model_name, s.version) if s.export_metrics else None
        api.add_middleware(AccessLog, metrics=metrics, routes=frozenset(r.path for r in api.routes))
        return api

    async def answer(self, columns: Columns, request: Request, shape: Callable[[Predicted], Any]) -> Response:
        """Predict `columns` and answer the prediction columns in the route's `shape`."""
        answer = await self.route(columns)
        if self.feedback is not None:
            self._remember(Answered(request.state.request_id, answer["version"], answer["predictions"]))
        body = {"model": self.settings.model_name, **answer, "predictions": shape(answer["predictions"])}
        return Response(to_json(body), media_type="application/json")

    def _remember(self, answered: Answered) -> None:
        self.answered.append(answered)
        if self.flusher is None:  # started from a request: Serve runs it on the replica's event loop
            self.flusher = asyncio.get_running_loop().create_task(self._flush_every())

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(FEEDBACK_FLUSH_S)
            try:
                await self._flush_answers()
            except Exception:  # noqa: BLE001 - the feedback store restarting must not touch predictions
                log.exception("feedback: sending answers failed; they cannot be joined to labels")

    async def _flush_answers(self) -> None:
        batch, self.answered = self.answered, []
        if batch:
            await self.feedback.record.remote(batch)

    async def route(self, columns: Columns) -> dict[str, Any]:
        """The answer of the served version or the canary: its version, precision and prediction columns."""
        use_canary = self.canary is not None and self.random.random() * 100 < self.settings.canary_percent
        answer = await (self.canary if use_canary else self.primary).predict(columns)
        if self.shadow_metrics is not None:
            task = asyncio.create_task(self._shadow(columns, answer["predictions"]))
            self.shadow_tasks.add(task)  # a task nobody references can be garbage-collected mid-flight
            task.add_done_callback(self.shadow_tasks.discard)
        return answer

    async def _shadow(self, columns: Columns, served: Predicted) -> None:
        """The canary answers a copy of the request; its answer is only measured, never returned."""
        try:
            answer = await self.canary.predict(columns)
        except ModelUnavailable:
            self.shadow_metrics.failed()
            return
        regression = self.features.task == "regression"
        self.shadow_metrics.compare(served[PREDICTION], answer["predictions"][PREDICTION], regression)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default handler echoes the input back, and fails with a 500 when that input
    # holds NaN or Infinity; name the field and the problem only. A field name is the caller's
    # key for an unknown field, so it is cut short, and so is the list: the answer stays small.
    found = exc.errors()
    errors = [{"field": _clip(".".join(str(p) for p in e["loc"])), "error": e["msg"]} for e in found[:MAX_ERRORS]]
    content: dict[str, Any] = {"detail": errors}
    if len(found) > MAX_ERRORS:
        content["more_errors"] = len(found) - MAX_ERRORS
    return JSONResponse(status_code=422, content=content)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


async def _unavailable(_: Request, __: Exception) -> JSONResponse:
    return JSONResponse({"detail": "no model replica answered; retry"}, status_code=503, headers={"retry-after": "1"})


async def _model_queue_full(_: Request, exc: BackPressureError) -> JSONResponse:
    # The model deployment's queue is full: the same answer Serve's proxy gives for the gateway's.
    retry = str(math.ceil(exc.retry_after_s or 1))
    return JSONResponse({"detail": "model replicas are at capacity; retry"}, status_code=503, headers={"retry-after": retry})


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("predict failed on %s", request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; the gateway's log has the details"}, status_code=500)
