"""The Serve application: one builder for every launch path (`raymlp serve`, `raymlp run`,
`serve run raymlp.serve.app:build_app config=...`, a KubeRay RayService).

The replica loads the registered bundle itself (verifying its manifest) and only then builds its
FastAPI app, so the request schema and OpenAPI docs come from the model being served.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import requests
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import Application

from raymlp.artifacts import load_bundle
from raymlp.config import load_config
from raymlp.config.schema import MonitorConfig, ServeConfig
from raymlp.lifecycle.registry import download_bundle, resolve_version
from raymlp.lifecycle.tracking import TrackingTarget, configure_tracking
from raymlp.monitor.metrics import RequestMetrics
from raymlp.serve.schemas import PredictResponse, make_request_model
from raymlp.serve.security import GuardSettings, RequestGuard, key_digest, resolve_api_keys


@dataclass(frozen=True)
class ModelSource:
    """Which registered model a replica serves; the version is pinned when the app is built."""

    tracking_uri: str
    model_name: str
    version: str
    quantized: bool


@dataclass(frozen=True)
class ReplicaSettings:
    """What a replica needs from the serve config, resolved on the driver (keys become digests)."""

    max_rows: int
    threads: int
    max_batch_size: int
    batch_wait_timeout_s: float
    guard: GuardSettings
    export_metrics: bool


class ModelServer:
    """One model replica. Wrapped into a Serve deployment in `build_model_app`, not by decorators:
    a decorated class is shadowed by its Deployment, so cloudpickle would copy the class by value
    (and with it any module whose name matches an attribute it uses, e.g. `torch.classes`)."""

    def __init__(self, source: ModelSource, settings: ReplicaSettings):
        mlflow.set_tracking_uri(source.tracking_uri)
        version = mlflow.MlflowClient().get_model_version(source.model_name, source.version)
        bundle_dir, self.precision = download_bundle(version, source.quantized)
        self.model = load_bundle(bundle_dir)
        self.source, self.settings = source, settings
        self.labels = self.model.features.classes
        self.metrics = RequestMetrics(source.model_name, source.version) if settings.export_metrics else None
        # As many threads as reserved CPUs: more would fight the other replicas for the same cores.
        torch.set_num_threads(settings.threads)
        self.predict_batched.set_max_batch_size(settings.max_batch_size)
        self.predict_batched.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    def __serve_build_asgi_app__(self) -> FastAPI:
        request_model = make_request_model(self.model.features, self.settings.max_rows)
        api = FastAPI(
            title=f"raymlp: {self.source.model_name} v{self.source.version}",
            description="Raw feature rows in; the fitted feature transform runs inside the replica.",
        )
        api.add_exception_handler(RequestValidationError, _validation_error)
        api.add_middleware(RequestGuard, settings=self.settings.guard)

        @api.post("/predict", response_model=PredictResponse)
        async def predict(body: request_model) -> PredictResponse:
            start = time.perf_counter()
            response = await self.predict_batched([row.model_dump() for row in body.rows])
            if self.metrics:
                self.metrics.observe(len(body.rows), time.perf_counter() - start)
            return response

        @api.get("/healthz")
        def healthz() -> dict[str, str]:
            """Liveness: the replica's process answers."""
            return {"status": "ok", "model": self.source.model_name, "version": self.source.version}

        @api.get("/readyz")
        def readyz() -> dict[str, str]:
            """Readiness: the model is loaded and verified (the app exists only after that)."""
            return {"status": "ready", "model": self.source.model_name, "version": self.source.version}

        return api

    @serve.batch
    async def predict_batched(self, requests: list[list[dict[str, Any]]]) -> list[PredictResponse]:
        """Concurrent requests share one forward pass; each gets its own rows back."""
        batch = self.predict([row for rows in requests for row in rows])
        responses, at = [], 0
        for rows in requests:
            responses.append(batch.model_copy(update={"predictions": batch.predictions[at : at + len(rows)]}))
            at += len(rows)
        return responses

    def predict(self, rows: list[dict[str, Any]]) -> PredictResponse:
        columns = {name: [row[name] for row in rows] for name in self.model.features.input_columns}
        features = self.model.features
        x = torch.from_numpy(features.transform(columns))
        with torch.inference_mode():  # a decorator would be pickled with the deployment class
            outputs = self.model.module(x)
        if features.task == "regression":
            values = features.decode_values(outputs[:, 0].double().numpy())
            predictions = [{"value": float(v)} for v in values]
        else:
            probs = torch.softmax(outputs, dim=1).numpy()
            predictions = [
                {
                    "label": self.labels[int(np.argmax(p))],
                    "probabilities": {str(c): round(float(v), 6) for c, v in zip(self.labels, p)},
                }
                for p in probs
            ]
        return PredictResponse(
            model=self.source.model_name, version=self.source.version, precision=self.precision, predictions=predictions
        )


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default handler echoes the input back, and fails with a 500 when that input
    # holds NaN or Infinity; name the field and the problem only.
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "error": e["msg"]} for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": errors})


def build_model_app(
    serve_cfg: ServeConfig, monitor_cfg: MonitorConfig, target: TrackingTarget, api_keys: Sequence[str]
) -> Application:
    """Pin `serve.model_version` to a concrete version and bind the deployment to it. `api_keys`
    (see security.resolve_api_keys) reach the replicas as digests; empty turns auth off."""
    client = mlflow.MlflowClient(target.tracking_uri)
    version = resolve_version(client, target.model_name, serve_cfg.model_version)
    source = ModelSource(target.tracking_uri, target.model_name, str(version.version), serve_cfg.quantized)
    settings = ReplicaSettings(
        max_rows=serve_cfg.max_rows,
        threads=max(1, int(serve_cfg.cpus_per_replica)),
        max_batch_size=serve_cfg.batching.max_batch_size,
        batch_wait_timeout_s=serve_cfg.batching.wait_timeout_s,
        guard=GuardSettings(tuple(key_digest(k) for k in api_keys), serve_cfg.max_body_bytes, serve_cfg.rate_limit_per_s),
        export_metrics=monitor_cfg.metrics,
    )
    deployment = serve.deployment(serve.ingress()(ModelServer), name="ModelServer")
    return deployment.options(
        **_scaling(serve_cfg),
        ray_actor_options={"num_cpus": serve_cfg.cpus_per_replica},
        max_ongoing_requests=serve_cfg.max_ongoing_requests,
        max_queued_requests=serve_cfg.max_queued_requests,
    ).bind(source, settings)


def _scaling(cfg: ServeConfig) -> dict[str, Any]:
    if not isinstance(cfg.num_replicas, tuple):
        return {"num_replicas": cfg.num_replicas}
    low, high = cfg.num_replicas
    return {
        "autoscaling_config": {
            "min_replicas": low,
            "max_replicas": high,
            "initial_replicas": max(low, 1),  # deploy-time smoke requests should not wait for a cold start
            "target_ongoing_requests": cfg.autoscaling.target_ongoing_requests,
            "upscale_delay_s": cfg.autoscaling.upscale_delay_s,
            "downscale_delay_s": cfg.autoscaling.downscale_delay_s,
        }
    }


def build_app(args: dict[str, Any]) -> Application:
    """Entry point for `serve run raymlp.serve.app:build_app config=PIPELINE.yaml` and a RayService;
    `set="serve.model_version=3 serve.quantized=false"` applies overrides."""
    cfg = load_config(args["config"], args.get("set", "").split())
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    return build_model_app(cfg.serve, cfg.monitor, target, resolve_api_keys(cfg.serve.auth, Path(cfg.run_dir)))


def deploy(app: Application, cfg: ServeConfig, name: str, timeout_s: float = 30.0) -> str:
    """Start Serve's HTTP proxy where configured, run `app` under `name`, and return its URL once
    the proxy routes to it. Serve keeps the port its proxy first started with: when that is not
    `serve.port`, this fails clearly instead of handing back a URL nothing answers on."""
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(app, name=name, route_prefix=cfg.route_prefix, blocking=False)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    base = f"http://{host}:{cfg.port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{base}/-/routes", timeout=2).json().get(cfg.route_prefix) == name:
                return f"{base}{cfg.route_prefix.rstrip('/')}"
        except (requests.RequestException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"serve.port: app {name!r} is not routed at {base}{cfg.route_prefix}; Serve may already run "
                "on this cluster with another HTTP port (it keeps its first): use that port, or `serve shutdown`"
            )
        time.sleep(0.2)
