"""The MLflow model registry: versions with lineage, the `champion` and `challenger` aliases, and
fetching a version's files.

Bundles are logged as plain artifacts (weights via `torch.save` of a state dict, sealed by a
SHA-256 manifest) rather than `mlflow.pytorch` models, so loading never unpickles code.

Champion history lives on the versions: each promoted version records the champion it replaced
(`champion.replaced`), so a rollback walks back one promotion at a time.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from raymlp.artifacts import read_features
from raymlp.data.features import FeaturePipeline

MODEL_ARTIFACT = "model"
INT8_ARTIFACT = "model_int8"
INT8_ACCEPTED_TAG = "int8.accepted"
CHAMPION, CHALLENGER = "champion", "challenger"
REPLACED_TAG = "champion.replaced"
"""On a version that became champion: the version it replaced ("none" for the first)."""
DECISION_TAG = "promotion.decision"


def register_bundle(
    client: mlflow.MlflowClient, model_name: str, run_id: str, bundle_dir: Path, tags: Mapping[str, Any]
) -> ModelVersion:
    """Log `bundle_dir` to the run as the `model` artifact and register it as a new version."""
    client.log_artifacts(run_id, str(bundle_dir), artifact_path=MODEL_ARTIFACT)
    try:
        client.create_registered_model(model_name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
    return client.create_model_version(
        model_name, source=source, run_id=run_id, tags={k: str(v) for k, v in tags.items()}
    )


def resolve_version(client: mlflow.MlflowClient, model_name: str, ref: str) -> ModelVersion:
    """A version by number, alias (`champion`, `challenger`, or any other), or "latest"."""
    if ref.isdigit():
        return client.get_model_version(model_name, ref)
    if ref == "latest":
        versions = list_versions(client, model_name)
        if not versions:
            raise LookupError(f"no versions of model {model_name!r} are registered; run the pipeline first")
        return versions[-1]
    version = alias_version(client, model_name, ref)
    if version is None:
        raise LookupError(
            f"model {model_name!r} has no version with alias {ref!r}; `raymlp models list CONFIG` shows the aliases"
        )
    return version


def alias_version(client: mlflow.MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def list_versions(client: mlflow.MlflowClient, model_name: str) -> list[ModelVersion]:
    """Every version, oldest first."""
    versions = client.search_model_versions(f"name = '{model_name}'")
    return sorted(versions, key=lambda v: int(v.version))


def crown(client: mlflow.MlflowClient, model_name: str, version: str, reason: str) -> str | None:
    """Make `version` the champion, recording the champion it replaces; returns that one's number."""
    previous = alias_version(client, model_name, CHAMPION)
    replaced = str(previous.version) if previous else None
    client.set_model_version_tag(model_name, version, REPLACED_TAG, str(replaced or "none"))
    client.set_model_version_tag(model_name, version, DECISION_TAG, reason)
    client.set_model_version_tag(model_name, version, "champion.since", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    client.set_registered_model_alias(model_name, CHAMPION, version)
    challenger = alias_version(client, model_name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(model_name, CHALLENGER)
    return replaced


def rollback(client: mlflow.MlflowClient, model_name: str) -> tuple[str, str]:
    """Give the champion alias back to the version the current champion replaced.
    Returns (demoted, restored) version numbers."""
    current = alias_version(client, model_name, CHAMPION)
    if current is None:
        raise LookupError(f"model {model_name!r} has no champion to roll back")
    previous = current.tags.get(REPLACED_TAG, "none")
    if previous == "none":
        raise LookupError(f"version {current.version} of {model_name!r} is the first champion; there is none before it")
    client.set_registered_model_alias(model_name, CHAMPION, previous)
    client.set_model_version_tag(model_name, current.version, DECISION_TAG, f"rolled back to version {previous}")
    return str(current.version), previous


def int8_accepted(version: ModelVersion) -> bool:
    """Whether the compress stage let this version's int8 weights be served."""
    return version.tags.get(INT8_ACCEPTED_TAG) == "true"


def download_bundle(version: ModelVersion, quantized: bool, dst: Path | None = None) -> tuple[Path, str]:
    """Fetch a version's bundle folder: int8 when asked for and accepted, else fp32."""
    # raymlp never unpickles models; make sure no MLflow loader in this process does either.
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    use_int8 = quantized and int8_accepted(version)
    artifact = INT8_ARTIFACT if use_int8 else MODEL_ARTIFACT
    path = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path=artifact, dst_path=str(dst) if dst else None
    )
    return Path(path), "int8" if use_int8 else "fp32"


def version_features(version: ModelVersion) -> FeaturePipeline:
    """A version's fitted feature transform, verified: what a request schema, batch inference's
    input checks and a drift check need before (or without) loading the model."""
    with tempfile.TemporaryDirectory() as tmp:
        return read_features(download_bundle(version, quantized=False, dst=Path(tmp))[0])
