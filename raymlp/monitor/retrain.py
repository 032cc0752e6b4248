"""Retraining: the pipeline on new data, its model registered as a challenger that replaces the
champion only through the promotion policy, and a running app rolled over to a new champion.

    raymlp retrain examples/quickstart/pipeline.yaml --data new_data/ --when drifted

Triggers, any of which retrains: `always`; `drifted` (the offline drift check of the new data
against the served version's training reference, `monitor.drift_check`, finds a drifted feature or
drifted predictions); `degraded` (the running app's live metrics of the served version, from labels
joined to its answers, are past `monitor.feedback.thresholds`); and a schedule (`--every`, a loop of
any of them). A retrain holds a cluster-wide guard while it runs: a named Ray actor owned by its
driver, so a second retrain of the same pipeline is refused, and a driver that dies releases the
guard with it. Runs as a Ray job like any command: `ray job submit -- raymlp retrain ...`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow
import ray
from ray import serve

from raymlp.config import PipelineConfig, with_values
from raymlp.lifecycle.registry import resolve_version
from raymlp.lifecycle.tracking import TrackingTarget, configure_tracking
from raymlp.monitor.drift_check import DriftCheck, drift_run
from raymlp.monitor.metrics import RetrainMetrics
from raymlp.pipeline import STAGES, PipelineResult, run_pipeline
from raymlp.runtime import init_ray
from raymlp.serve.app import FEEDBACK_DEPLOYMENT, build_model_app, deploy
from raymlp.serve.security import resolve_api_keys

log = logging.getLogger(__name__)

Trigger = Literal["always", "drifted", "degraded"]
TRIGGERS: tuple[Trigger, ...] = ("always", "drifted", "degraded")
RETRAIN_STAGES = tuple(s for s in STAGES if s != "serve")
"""Serving follows the promotion instead: a running app rolls over only to a new champion."""
GUARD_NAMESPACE = "raymlp"


class RetrainRunning(RuntimeError):
    """Another retrain of the same pipeline holds the guard."""


@dataclass
class RetrainOutcome:
    ran: bool
    reason: str
    drift: DriftCheck | None = None
    result: PipelineResult | None = None
    redeployed: str | None = None
    """The app's URL when a running app was rolled over to the new champion."""

    def summary(self) -> str:
        lines = [f"retrain: {self.reason}"]
        if self.result is not None and self.result.model_version is not None:
            p = self.result.promotion
            lines.append(f"  registered version {self.result.model_version}: "
                         f"{'promoted to champion' if p and p.promote else 'challenger'} ({p.reason if p else 'no decision'})")  # fmt: skip
        if self.redeployed:
            lines.append(f"  serving the new champion at {self.redeployed}")
        return "\n".join(lines)


@ray.remote(num_cpus=0)
class _Guard:
    """Holds the name `raymlp-retrain:<pipeline>` while a retrain runs; says who holds it."""

    def __init__(self, holder: str):
        self.holder = holder

    def who(self) -> str:
        return self.holder


@contextmanager
def retrain_guard(name: str) -> Iterator[None]:
    """At most one retrain of pipeline `name` on the cluster at a time (raises RetrainRunning)."""
    guard_name = f"raymlp-retrain:{name}"
    holder = f"{socket.gethostname()} pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
    try:
        guard = _Guard.options(name=guard_name, namespace=GUARD_NAMESPACE).remote(holder)
    except ValueError:  # the name is taken
        other = ray.get_actor(guard_name, namespace=GUARD_NAMESPACE)
        raise RetrainRunning(f"a retrain of {name} is already running ({ray.get(other.who.remote())}); not starting another") from None
    try:
        ray.get(guard.who.remote())  # the guard runs: the name is ours
        yield
    finally:
        ray.kill(guard)


def retrain(
    cfg: PipelineConfig,
    data: str | None = None,
    when: Sequence[Trigger] = ("always",),
    stages: Sequence[str] = RETRAIN_STAGES,
) -> RetrainOutcome:
    """Run the pipeline's `stages` on `data` (default: `data.path`) when any trigger in `when` fires,
    under the retrain guard; then, if its model became the champion and the pipeline's app is
    running on this cluster, roll the app over to it (new replicas start before old ones drain)."""
    if "degraded" in when and not (cfg.monitor.feedback.enabled and cfg.monitor.feedback.thresholds):
        raise ValueError("retrain when degraded: set monitor.feedback.enabled: true and monitor.feedback.thresholds "
                         "(e.g. {auc: 0.75}) in the config the app is served with")  # fmt: skip
    if data is not None:
        cfg = with_values(cfg, {"data.path": data})
    init_ray(cfg.runtime)
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    events = RetrainMetrics(target.model_name)
    try:
        outcome = _retrain(cfg, target, when, stages)
    except RetrainRunning:
        events.observe("refused")
        raise
    promotion = outcome.result.promotion if outcome.result else None
    events.observe("skipped" if not outcome.ran else "promoted" if promotion and promotion.promote else "challenger")
    return outcome


def _retrain(cfg: PipelineConfig, target: TrackingTarget, when: Sequence[Trigger], stages: Sequence[str]) -> RetrainOutcome:
    with retrain_guard(cfg.name):
        fired, quiet, check = [], [], None
        if "always" in when:
            fired.append("trigger: always")
        if "drifted" in when:
            check, _ = drift_run(target, cfg, cfg.data.path, cfg.serve.model_version, cfg.data.format)
            if check.report.alarms:
                fired.append(f"drift in {', '.join(check.report.alarms)} against version {check.version}")
            else:
                quiet.append(f"no drift in {cfg.data.path} against version {check.version}")
        if "degraded" in when:
            degraded, why = _live_degraded(cfg, target)
            (fired if degraded else quiet).append(why)
        if not fired:
            return RetrainOutcome(False, f"{'; '.join(quiet)}: not retrained", check)
        result = run_pipeline(cfg, stages)
        outcome = RetrainOutcome(True, f"{'; '.join(fired)}: retrained", check, result)
        if result.promotion and result.promotion.promote and cfg.name in serve.status().applications:
            app = build_model_app(cfg.serve, cfg.monitor, target, resolve_api_keys(cfg.serve.auth, Path(cfg.run_dir)))
            outcome.redeployed = deploy(app, cfg.serve, name=cfg.name)
        log.info(outcome.summary())
        return outcome


def _live_degraded(cfg: PipelineConfig, target: TrackingTarget) -> tuple[bool, str]:
    """Whether the running app's live metrics of the version it serves (`serve.model_version`) are
    past their thresholds, and why: asked of the app's feedback deployment, which judged them."""
    version = str(resolve_version(mlflow.MlflowClient(target.tracking_uri), target.model_name, cfg.serve.model_version).version)
    app = serve.status().applications.get(cfg.name)
    if app is None or FEEDBACK_DEPLOYMENT not in app.deployments:
        return False, f"no live metrics: app {cfg.name} is not running with monitor.feedback enabled"
    live = serve.get_deployment_handle(FEEDBACK_DEPLOYMENT, cfg.name).live.remote().result()
    state = live["versions"].get(version)
    if state is None:
        return False, f"no labels joined to version {version}'s answers yet"
    scores, rows = state["metrics"], int(state["metrics"]["live_rows"])
    if not state["degraded"]:
        return False, f"live metrics of version {version} within their thresholds ({rows} labelled rows)"
    past = ", ".join(f"{m} {scores[f'live_{m}']:.3f} (threshold {live['thresholds'][m]:g})" for m in state["degraded"])
    return True, f"live {past} over version {version}'s latest {rows} labelled rows"
