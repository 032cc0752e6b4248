"""The model bundle: one folder format for checkpoints, registered models and served models.

A bundle holds the architecture, the weights, the fitted feature transform and the training
history (a training checkpoint adds the optimizer, scheduler and loop state), plus a SHA-256
manifest checked before anything is loaded: neither Ray nor `torch.load(weights_only=True)`
notices a flipped byte on their own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raymlp.config.schema import ModelConfig
from raymlp.data.features import FeaturePipeline
from raymlp.lifecycle.quantize import lower, quantize
from raymlp.train.models import build_model

MANIFEST = "manifest.json"
TRAIN_STATE = "train_state.pt"
FORMAT_VERSION = 2


class TamperedArtifactError(RuntimeError):
    """A bundle whose files do not match its manifest; it is refused, never loaded."""


@dataclass
class ModelSpec:
    """What is needed to rebuild the network before loading weights into it."""

    model: ModelConfig
    input_dim: int
    output_dim: int
    quantization: str | None = None
    """torchao scheme the weights were quantized with (see lifecycle.compress), or None for fp32."""


@dataclass
class LoadedModel:
    module: nn.Module
    spec: ModelSpec
    features: FeaturePipeline
    metrics: dict[str, Any] = field(default_factory=dict)


def save_bundle(
    path: Path,
    spec: ModelSpec,
    module: nn.Module,
    features: FeaturePipeline,
    metrics: dict[str, Any],
    train_state: dict[str, Any] | None = None,
) -> None:
    """Write a bundle into the folder `path` (created if needed) and seal it with a manifest.
    `train_state` (tensors, numbers, lists and dicts only) makes it a resumable checkpoint."""
    path.mkdir(parents=True, exist_ok=True)
    model_json = {
        "format_version": FORMAT_VERSION,
        "model": spec.model.model_dump(mode="json"),
        "input_dim": spec.input_dim,
        "output_dim": spec.output_dim,
        "quantization": spec.quantization,
    }
    (path / "model.json").write_text(json.dumps(model_json, indent=2))
    (path / "features.json").write_text(features.to_json())
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2))
    torch.save(module.state_dict(), path / "weights.pt")
    if train_state is not None:
        torch.save(train_state, path / TRAIN_STATE)
    files = sorted(p.name for p in path.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {"algorithm": "sha256", "files": {name: _sha256(path / name) for name in files}}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))


def verify_bundle(path: Path) -> dict[str, str]:
    """Raise TamperedArtifactError unless every file matches the manifest and none is missing;
    return the verified SHA-256 digests by file name."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise TamperedArtifactError(f"{path}: no {MANIFEST}; refusing an unsealed model bundle")
    expected = json.loads(manifest_path.read_text())["files"]
    present = {p.name for p in path.iterdir() if p.is_file() and p.name != MANIFEST}
    if present != set(expected):
        raise TamperedArtifactError(f"{path}: files {sorted(present)} differ from the manifest's {sorted(expected)}")
    for name, digest in expected.items():
        if _sha256(path / name) != digest:
            raise TamperedArtifactError(f"{path / name}: SHA-256 does not match the manifest; refusing to load it")
    return expected


def load_bundle(path: Path) -> LoadedModel:
    """Verify, then rebuild the network (quantized if the bundle is) and load its weights safely.
    A quantized network comes back ready to serve (`lifecycle.quantize.lower`: compiled for CPU
    when its scheme is, which takes seconds the first time on a machine)."""
    path = Path(path)
    digests = verify_bundle(path)
    meta = json.loads((path / "model.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: model bundle format {meta.get('format_version')} is not supported")
    spec = ModelSpec(
        model=ModelConfig.model_validate(meta["model"]),
        input_dim=meta["input_dim"],
        output_dim=meta["output_dim"],
        quantization=meta["quantization"],
    )
    module = build_model(spec.model, spec.input_dim, spec.output_dim).eval()
    if spec.quantization:
        module = quantize(module, spec.quantization)
    # assign=True keeps torchao's quantized tensor subclasses instead of copying into fp32 params.
    module.load_state_dict(torch.load(path / "weights.pt", weights_only=True), assign=True)
    if spec.quantization:  # compiled from the verified weights (or cached under their digest), never from the bundle
        module = lower(module, spec.quantization, spec.input_dim, digests["model.json"] + digests["weights.pt"])
    features = FeaturePipeline.from_json((path / "features.json").read_text())
    metrics = json.loads((path / "metrics.json").read_text())
    return LoadedModel(module=module.eval(), spec=spec, features=features, metrics=metrics)


def read_features(path: Path) -> FeaturePipeline:
    """Only the fitted feature transform of a bundle (verified first): what a request schema needs."""
    path = Path(path)
    verify_bundle(path)
    return FeaturePipeline.from_json((path / "features.json").read_text())


def load_train_state(path: Path) -> dict[str, Any]:
    """The loop state of a checkpoint written by the training loop (verified first)."""
    path = Path(path)
    verify_bundle(path)
    if not (path / TRAIN_STATE).is_file():
        raise ValueError(f"{path}: a model bundle without {TRAIN_STATE} cannot resume training")
    return torch.load(path / TRAIN_STATE, weights_only=True)


def bundle_size_bytes(path: Path) -> int:
    return (Path(path) / "weights.pt").stat().st_size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
