"""The Serve application: one builder for every launch path (`raymlp serve`, `raymlp run`,
`serve run raymlp.serve.app:build_app config=...`, a KubeRay RayService).

The replica loads the registered bundle itself (verifying its manifest) and only then builds its
FastAPI app, so the request schema and OpenAPI docs come from the model being served.
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
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


@dataclass(frozen=True)
class ModelSource:
    """Which registered model a replica serves; the version is pinned when the app is built."""

    tracking_uri: str
    model_name: str
    version: str
    quantized: bool


class ModelServer:
    """One model replica. Wrapped into a Serve deployment in `build_model_app`, not by decorators:
    a decorated class is shadowed by its Deployment, so cloudpickle would copy the class by value
    (and with it any module whose name matches an attribute it uses, e.g. `torch.classes`)."""

    def __init__(self, source: ModelSource, max_rows: int, export_metrics: bool):
        mlflow.set_tracking_uri(source.tracking_uri)
        version = mlflow.MlflowClient().get_model_version(source.model_name, source.version)
        bundle_dir, self.precision = download_bundle(version, source.quantized)
        self.model = load_bundle(bundle_dir)
        self.source = source
        self.max_rows = max_rows
        self.labels = self.model.features.classes
        self.metrics = RequestMetrics(source.model_name, source.version) if export_metrics else None
        torch.set_num_threads(1)  # a replica reserves a fraction of a CPU; batching, not threads, scales it

    def __serve_build_asgi_app__(self) -> FastAPI:
        request_model = make_request_model(self.model.features, self.max_rows)
        api = FastAPI(
            title=f"raymlp: {self.source.model_name} v{self.source.version}",
            description="Raw feature rows in; the fitted feature transform runs inside the replica.",
        )
        api.add_exception_handler(RequestValidationError, _validation_error)

        @api.post("/predict", response_model=PredictResponse)
        def predict(body: request_model) -> PredictResponse:
            start = time.perf_counter()
            response = self.predict([row.model_dump() for row in body.rows])
            if self.metrics:
                self.metrics.observe(len(body.rows), time.perf_counter() - start)
            return response

        @api.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok", "model": self.source.model_name, "version": self.source.version}

        return api

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


def build_model_app(serve_cfg: ServeConfig, monitor_cfg: MonitorConfig, target: TrackingTarget) -> Application:
    """Pin `serve.model_version` to a concrete version and bind the deployment to it."""
    client = mlflow.MlflowClient(target.tracking_uri)
    version = resolve_version(client, target.model_name, serve_cfg.model_version)
    source = ModelSource(target.tracking_uri, target.model_name, str(version.version), serve_cfg.quantized)
    deployment = serve.deployment(serve.ingress()(ModelServer), name="ModelServer")
    return deployment.options(
        num_replicas=serve_cfg.num_replicas,
        ray_actor_options={"num_cpus": serve_cfg.cpus_per_replica},
    ).bind(source, serve_cfg.max_rows, monitor_cfg.metrics)


def build_app(args: dict[str, Any]) -> Application:
    """Entry point for `serve run raymlp.serve.app:build_app config=PIPELINE.yaml` and a RayService;
    `set="serve.model_version=3 serve.quantized=false"` applies overrides."""
    cfg = load_config(args["config"], args.get("set", "").split())
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    return build_model_app(cfg.serve, cfg.monitor, target)


def deploy(app: Application, cfg: ServeConfig, name: str) -> str:
    """Start Serve's HTTP proxy where configured, run `app` under `name`, and return its URL."""
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(app, name=name, route_prefix=cfg.route_prefix, blocking=False)
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
