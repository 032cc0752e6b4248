"""The MLflow model registry: register a model bundle as a version, find one, fetch its files.

Bundles are logged as plain artifacts (weights via `torch.save` of a state dict, sealed by a
SHA-256 manifest) rather than `mlflow.pytorch` models, so loading never unpickles code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

MODEL_ARTIFACT = "model"
INT8_ARTIFACT = "model_int8"
INT8_ACCEPTED_TAG = "int8.accepted"


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
    """A version by number, alias, or "latest" (the highest number)."""
    if ref.isdigit():
        return client.get_model_version(model_name, ref)
    if ref == "latest":
        versions = client.search_model_versions(f"name = '{model_name}'")
        if not versions:
            raise LookupError(f"no versions of model {model_name!r} are registered; run the pipeline first")
        return max(versions, key=lambda v: int(v.version))
    return client.get_model_version_by_alias(model_name, ref)


def download_bundle(version: ModelVersion, quantized: bool, dst: Path | None = None) -> tuple[Path, str]:
    """Fetch a version's bundle folder: int8 when asked for and accepted, else fp32."""
    use_int8 = quantized and version.tags.get(INT8_ACCEPTED_TAG) == "true"
    artifact = INT8_ARTIFACT if use_int8 else MODEL_ARTIFACT
    path = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path=artifact, dst_path=str(dst) if dst else None
    )
    return Path(path), "int8" if use_int8 else "fp32"
