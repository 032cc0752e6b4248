"""The Serve application: one builder for every launch path (`raymlp serve`, `raymlp run`,
`serve run raymlp.serve.app:build_app config=...`, a KubeRay RayService).

An app is a gateway deployment (HTTP, auth, request schema, traffic split; see gateway.py) that
holds the served versions' models itself (`serve.topology: fused`) or calls one model deployment
per version (`split`; model.py). The deployments keep fixed names (`Gateway`, `model`, `canary`),
so pointing an alias at another version rolls their replicas over in place: new replicas start
before old ones drain.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import requests
from mlflow.entities.model_registry import ModelVersion
from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from raymlp.config import load_config
from raymlp.config.schema import MonitorConfig, ServeConfig
from raymlp.lifecycle.registry import resolve_version, version_features
from raymlp.lifecycle.tracking import TrackingTarget, configure_tracking
from raymlp.monitor.live import Feedback
from raymlp.serve.gateway import Gateway, GatewaySettings
from raymlp.serve.model import ModelReplica, ModelSource, ReplicaSettings
from raymlp.serve.security import GuardSettings, key_digest, resolve_api_keys

BACKPRESSURE = BackpressureConfig(status_code=503, retry_after_s=1)
"""A request over `serve.max_queued_requests` gets 503 with `Retry-After: 1` (Serve sends none by default)."""

FEEDBACK_DEPLOYMENT = "feedback"
"""The app's store of answers and live metrics (`monitor.feedback`), asked by `raymlp retrain`."""

REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
"""Every replica runs raymlp's code on Serve's own event loop, not on a thread of its own (Serve's
default). The GIL let the two threads overlap little, while every ASGI message crossed between
them: two fused replicas on 2 cores answered 1,470 single-row QPS at concurrency 32 against 1,120,
and 164k against 148k rows/s in 1,024-row requests. On one loop an answer's headers and body also
leave back to back, where the hop could hold the body while the replica died, cutting the answer
short past any retry (benchmarks/replica_kills.py). Serve merges these variables into whatever
runtime_env the app sets."""


def build_model_app(
    serve_cfg: ServeConfig, monitor_cfg: MonitorConfig, target: TrackingTarget, api_keys: Sequence[str]
) -> Application:
    """Pin `serve.model_version` (and `serve.canary.version`) to concrete versions and bind the
    deployments to them. `api_keys` (see security.resolve_api_keys) reach the gateway as digests;
    empty turns auth off."""
    fused = serve_cfg.topology == "fused"

    def model(name: str, v: ModelVersion) -> ModelSource | Application:
        """A version the gateway loads itself (fused), or a deployment of its own (split)."""
        source = ModelSource(target.tracking_uri, target.model_name, str(v.version), serve_cfg.precision)
        return source if fused else _model_deployment(name, source, serve_cfg, monitor_cfg)

    client = mlflow.MlflowClient(target.tracking_uri)
    version = resolve_version(client, target.model_name, serve_cfg.model_version)
    features = version_features(version)
    canary, canary_version = None, None
    if serve_cfg.canary is not None:
        canary_version = resolve_version(client, target.model_name, serve_cfg.canary.version)
        if str(canary_version.version) == str(version.version):
            raise ValueError(
                f"serve.canary.version: {serve_cfg.canary.version!r} is version {version.version}, the one already served"
            )
        missing = set(version_features(canary_version).input_columns) - set(features.input_columns)
        if missing:
            raise ValueError(f"serve.canary.version: it needs columns {sorted(missing)} the served version's requests lack")
        canary = model("canary", canary_version)
    settings = GatewaySettings(
        model_name=target.model_name,
        version=str(version.version),
        max_rows=serve_cfg.max_rows,
        guard=GuardSettings(tuple(key_digest(k) for k in api_keys), serve_cfg.max_body_bytes, serve_cfg.rate_limit_per_s),
        canary_version=str(canary_version.version) if canary_version else None,
        canary_percent=serve_cfg.canary.percent if serve_cfg.canary else 0.0,
        replica=_replica_settings(serve_cfg, monitor_cfg) if fused else None,
        export_metrics=monitor_cfg.metrics,
    )
    gateway = serve.deployment(serve.ingress()(Gateway), name="Gateway").options(
        ray_actor_options=_actor_options(serve_cfg.cpus_per_replica if fused else serve_cfg.gateway_cpus),
        **_replica_options(serve_cfg),
    )
    feedback = None
    if monitor_cfg.feedback.enabled:
        feedback = serve.deployment(Feedback, name=FEEDBACK_DEPLOYMENT).options(
            num_replicas=1, ray_actor_options={"num_cpus": 0}, logging_config={"enable_access_log": False}
        ).bind(target.model_name, features.to_json(), monitor_cfg.feedback, monitor_cfg.metrics)
    return gateway.bind(model("model", version), features.to_json(), settings, canary, feedback)


def _replica_settings(cfg: ServeConfig, monitor: MonitorConfig) -> ReplicaSettings:
    return ReplicaSettings(
        threads=max(1, int(cfg.cpus_per_replica)),
        max_batch_size=cfg.batching.max_batch_size,
        batch_wait_timeout_s=cfg.batching.wait_timeout_s,
        export_metrics=monitor.metrics,
        drift=monitor.drift if monitor.drift.enabled else None,
    )


def _model_deployment(name: str, source: ModelSource, cfg: ServeConfig, monitor: MonitorConfig) -> Application:
    return (
        serve.deployment(ModelReplica, name=name)
        .options(ray_actor_options=_actor_options(cfg.cpus_per_replica), **_replica_options(cfg))
        .bind(source, _replica_settings(cfg, monitor))
    )


def _actor_options(num_cpus: float) -> dict[str, Any]:
    return {"num_cpus": num_cpus, "runtime_env": {"env_vars": REPLICA_ENV}}


def _replica_options(cfg: ServeConfig) -> dict[str, Any]:
    """The Serve options every deployment of the app shares. Serve's own access log is off: the
    gateway writes one structured line per request (serve/access.py), rejections included, and
    Serve's would double the lines a replica formats and Ray's log monitor ships for each request
    (fused replicas answered 1,417 single-row QPS at concurrency 32 with it, 1,565 without, on 2 cores)."""
    return {
        **_scaling(cfg),
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "backpressure_config": BACKPRESSURE,
        "health_check_period_s": cfg.health_check_period_s,
        "logging_config": {"enable_access_log": False},
    }


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
    `set="serve.model_version=3 serve.precision=fp32"` applies overrides."""
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
