"""Promotion: whether a newly registered version replaces the champion.

Both models are scored on the same rows, the current run's validation split read raw and passed
through each model's own feature transform, so a champion trained on older data or with other
features is judged on today's data rather than on the number it logged when it was trained.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlflow
import ray.data

from raymlp.artifacts import LoadedModel, load_bundle
from raymlp.config.schema import RegistryConfig
from raymlp.lifecycle.registry import CHALLENGER, CHAMPION, DECISION_TAG, alias_version, crown, download_bundle
from raymlp.train.loop import score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    challenger_metric: float
    champion_version: str | None = None
    champion_metric: float | None = None


def decide(
    cfg: RegistryConfig,
    metric: str,
    mode: Literal["min", "max"],
    challenger_metric: float,
    champion_version: str | None,
    champion_metric: float | None,
) -> PromotionDecision:
    """The promotion policy, as a pure function of the two scores. `champion_metric` is None when
    the champion could not be scored on this run's validation data."""
    facts = {"metric": metric, "challenger_metric": challenger_metric, "champion_version": champion_version,
             "champion_metric": champion_metric}  # fmt: skip
    if champion_version is None:
        return PromotionDecision(True, "first version: there is no champion yet", **facts)
    if cfg.promotion == "always":
        return PromotionDecision(True, "registry.promotion is `always`", **facts)
    if cfg.promotion == "manual":
        return PromotionDecision(False, "registry.promotion is `manual`: `raymlp models promote` decides", **facts)
    if champion_metric is None:
        return PromotionDecision(
            False, f"champion v{champion_version} cannot be scored on this run's validation data", **facts
        )
    gain = challenger_metric - champion_metric if mode == "max" else champion_metric - challenger_metric
    verdict = f"{metric} {challenger_metric:.4f} vs champion v{champion_version}'s {champion_metric:.4f}"
    if gain > cfg.promotion_margin:
        return PromotionDecision(True, f"beats the champion by more than {cfg.promotion_margin}: {verdict}", **facts)
    return PromotionDecision(False, f"does not beat the champion by more than {cfg.promotion_margin}: {verdict}", **facts)


def challenge(
    client: mlflow.MlflowClient,
    cfg: RegistryConfig,
    model_name: str,
    version: str,
    bundle_dir: Path,
    valid_rows: ray.data.Dataset,
    metric: str,
    mode: Literal["min", "max"],
) -> PromotionDecision:
    """Score the new `version` and the champion on `valid_rows`, apply the policy, and move the
    aliases: the winner is `champion`; a version that does not win stays `challenger`."""
    challenger_metric = score_rows(load_bundle(bundle_dir), valid_rows)[metric]
    champion = alias_version(client, model_name, CHAMPION)
    champion_metric = None
    if champion is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path, _ = download_bundle(champion, quantized=False, dst=Path(tmp))
            try:
                champion_metric = score_rows(load_bundle(path), valid_rows)[metric]
            except Exception as e:  # noqa: BLE001 - any failure to transform today's rows means "not comparable"
                log.warning("promotion: champion v%s cannot score this run's validation rows: %s", champion.version, e)
    decision = decide(cfg, metric, mode, challenger_metric, str(champion.version) if champion else None, champion_metric)
    log.info("promotion of v%s: %s", version, decision.reason)
    for key, value in {"challenger_metric": challenger_metric, "champion_metric": champion_metric}.items():
        if value is not None:
            client.set_model_version_tag(model_name, version, f"promotion.{key}", f"{value:.6g}")
    if decision.promote:
        crown(client, model_name, version, decision.reason)
    else:
        client.set_model_version_tag(model_name, version, DECISION_TAG, decision.reason)
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    return decision


def score_rows(model: LoadedModel, rows: ray.data.Dataset) -> dict[str, float]:
    """Every validation metric of `model` on raw rows (label included), through its own transform."""
    ready = rows.map_batches(model.features.transform_xy, batch_format="pyarrow", batch_size=None)
    return score(model.module, ready, model.features, "valid")
