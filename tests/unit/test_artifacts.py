from pathlib import Path

import pytest
import torch

from raymlp.artifacts import ModelSpec, TamperedArtifactError, load_bundle, save_bundle
from raymlp.config.schema import ModelConfig
from raymlp.lifecycle.quantize import quantize
from raymlp.train.models import build_model

from test_features import PIPELINE


def write_bundle(path: Path, quantization: str | None = None) -> torch.nn.Module:
    spec = ModelSpec(ModelConfig(hidden_sizes=[16]), PIPELINE.output_dim, len(PIPELINE.classes), quantization)
    torch.manual_seed(0)
    module = build_model(spec.model, spec.input_dim, spec.output_dim).eval()
    if quantization:
        module = quantize(module, quantization)
    save_bundle(path, spec, module, PIPELINE, {"valid_accuracy": 0.9})
    return module


@pytest.mark.parametrize("quantization", [None, "int8_weight_only", "int8_dynamic"])
def test_bundle_round_trip_gives_the_same_outputs(tmp_path: Path, quantization):
    module = write_bundle(tmp_path, quantization)
    loaded = load_bundle(tmp_path)
    x = torch.randn(5, PIPELINE.output_dim)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), module(x))
    assert loaded.features == PIPELINE and loaded.metrics == {"valid_accuracy": 0.9}
    assert loaded.spec.quantization == quantization


def test_a_flipped_byte_is_refused(tmp_path: Path):
    write_bundle(tmp_path)
    weights = tmp_path / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(TamperedArtifactError, match="weights.pt: SHA-256 does not match"):
        load_bundle(tmp_path)


def test_added_or_missing_files_and_missing_manifest_are_refused(tmp_path: Path):
    write_bundle(tmp_path)
    (tmp_path / "extra.pt").write_bytes(b"x")
    with pytest.raises(TamperedArtifactError, match="differ from the manifest"):
        load_bundle(tmp_path)
    (tmp_path / "extra.pt").unlink()
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(TamperedArtifactError, match="unsealed"):
        load_bundle(tmp_path)
