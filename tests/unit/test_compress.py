"""Pruning, int8 quantization and the compiled int8 forward, on small models and without Ray."""

from pathlib import Path
from typing import get_args

import pytest
import torch

from raymlp.artifacts import ModelSpec, bundle_size_bytes, load_bundle, save_bundle
from raymlp.config import ConfigError, parse_config
from raymlp.config.schema import CompressConfig, ModelConfig
from raymlp.lifecycle.compress import PRUNABLE, prune_weights
from raymlp.lifecycle.quantize import SCHEMES, CompiledForward, _package_name, interleaved_latency_ms, lower, quantize
from raymlp.serve.model import faster_precision, planned_precision
from raymlp.train.models import build_model

from test_features import PIPELINE

MINIMAL = {"name": "p", "data": {"path": "data", "label": "y"}}


def small_model(name: str = "mlp", input_dim: int = 12, **model) -> tuple[ModelSpec, torch.nn.Module]:
    spec = ModelSpec(ModelConfig(name=name, hidden_sizes=[32, 32], **model), input_dim, 3)
    torch.manual_seed(0)
    return spec, build_model(spec.model, spec.input_dim, spec.output_dim).eval()


def test_every_configurable_scheme_is_implemented():
    assert set(get_args(CompressConfig.model_fields["scheme"].annotation)) == set(SCHEMES)
    assert CompressConfig().scheme == "int8_dynamic"  # the compiled CPU path is the default


def test_pruning_zeroes_the_smallest_weights_across_layers_and_is_permanent():
    _, module = small_model()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    sparsity = prune_weights(module, 0.6)
    weights = [m.weight for m in module.modules() if isinstance(m, PRUNABLE)]
    assert sparsity == pytest.approx(0.6, abs=1e-3)
    assert sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights) == sparsity
    # Global ranking: every surviving weight is at least as large as every zeroed one.
    kept = torch.cat([before[k][w != 0].abs() for k, w in module.state_dict().items() if k.endswith("weight")])
    dropped = torch.cat([before[k][w == 0].abs() for k, w in module.state_dict().items() if k.endswith("weight")])
    assert kept.min() >= dropped.max()
    # Permanent: plain parameters under the original names, no masks or hooks left behind.
    assert module.state_dict().keys() == before.keys()
    assert not any(m._forward_pre_hooks for m in module.modules())


def test_zero_amount_prunes_nothing():
    _, module = small_model()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert prune_weights(module, 0.0) == 0.0
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_pruned_int8_bundle_serves_the_same_predictions_after_a_round_trip(tmp_path: Path, scheme):
    spec, module = small_model()
    spec.quantization = scheme
    prune_weights(module, 0.5)
    int8 = quantize(module, scheme)
    served = lower(int8, scheme, spec.input_dim)
    assert isinstance(served, CompiledForward) == SCHEMES[scheme].compiled
    save_bundle(tmp_path, spec, int8, PIPELINE, {})
    loaded = load_bundle(tmp_path)
    assert loaded.spec.quantization == scheme
    for rows in (1, 7, 64, 1024):
        x = torch.randn(rows, spec.input_dim)
        with torch.inference_mode():
            torch.testing.assert_close(loaded.module(x), served(x), rtol=0, atol=0)


@pytest.mark.parametrize("name, extra", [("resmlp", {}), ("cnn", {"image_shape": (1, 4, 4), "channels": [4]})])
def test_compiled_forward_matches_eager_int8_for_any_batch_size_and_layout(name, extra):
    spec, module = small_model(name, input_dim=16, **extra)
    int8 = quantize(module, "int8_dynamic")
    compiled = CompiledForward(int8, spec.input_dim)
    # The activation scale is per row, so a row's output must not depend on its batch; the
    # compiled graph has one symbolic row count, so every size (0 included) runs the same code.
    rows = torch.randn(1024, spec.input_dim)
    with torch.inference_mode():
        alone = torch.cat([compiled(rows[i : i + 1]) for i in range(64)])
        for size in (0, 2, 64, 1024):
            out = compiled(rows[:size])
            assert out.shape == (size, spec.output_dim)
            torch.testing.assert_close(out[:64], alone[:size], rtol=0, atol=1e-5)
        torch.testing.assert_close(alone, int8(rows[:64]), rtol=0, atol=2e-2)  # quantization rounding
        transposed = rows[:64].t().contiguous().t()  # same values, column-major
        torch.testing.assert_close(compiled(transposed), compiled(rows[:64]), rtol=0, atol=0)


def test_int8_weights_of_a_wide_model_take_under_a_third_of_fp32(tmp_path: Path):
    spec = ModelSpec(ModelConfig(name="mlp", hidden_sizes=[256, 256]), 20, 2)
    module = build_model(spec.model, spec.input_dim, spec.output_dim)
    save_bundle(tmp_path / "fp32", spec, module, PIPELINE, {})
    spec.quantization = "int8_dynamic"
    save_bundle(tmp_path / "int8", spec, quantize(module, "int8_dynamic"), PIPELINE, {})
    assert bundle_size_bytes(tmp_path / "int8") <= 0.3 * bundle_size_bytes(tmp_path / "fp32")


def test_a_compiled_package_is_reused_for_the_same_weights_and_threads_only(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RAYMLP_COMPILE_CACHE", str(tmp_path))
    spec, module = small_model(input_dim=11)
    int8 = quantize(module, "int8_dynamic")
    x = torch.randn(5, spec.input_dim)
    first = lower(int8, "int8_dynamic", spec.input_dim, "weights-a")
    [package] = tmp_path.iterdir()  # the package alone: the compile folder beside it is gone
    second = lower(int8, "int8_dynamic", spec.input_dim, "weights-a")
    assert (first.from_cache, second.from_cache) == (False, True)
    with torch.inference_mode():
        torch.testing.assert_close(second(x), first(x), rtol=0, atol=0)
    # Other weights or another thread count name another package (each compile takes ~13 s here).
    name = _package_name("weights-a", "int8_dynamic", spec.input_dim)
    assert (tmp_path / name).is_file() and name != _package_name("weights-b", "int8_dynamic", spec.input_dim)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert _package_name("weights-a", "int8_dynamic", spec.input_dim) != name
    finally:
        torch.set_num_threads(threads)
    package.write_bytes(b"cut short")  # a damaged entry is dropped and compiled afresh
    again = lower(int8, "int8_dynamic", spec.input_dim, "weights-a")
    assert not again.from_cache and "dropping the unusable compiled package" in caplog.text
    assert lower(int8, "int8_dynamic", spec.input_dim, "weights-a").from_cache


def test_interleaved_latency_times_every_module_alike():
    _, module = small_model()
    times = interleaved_latency_ms({"a": module, "b": module}, torch.randn(4, 12), rounds=3, calls=2)
    assert {k: len(v) for k, v in times.items()} == {"a": 6, "b": 6}
    assert all(t > 0 for v in times.values() for t in v)


@pytest.mark.parametrize(
    "compress, key, hint",
    [
        ({"prune_amount": 1.0}, "compress.prune_amount", "less than 1"),
        ({"prune_amount": -0.1}, "compress.prune_amount", "greater than or equal to 0"),
        ({"scheme": "int4"}, "compress.scheme", "'int8_dynamic' or 'int8_weight_only'"),
        ({"max_metric_drop": -1}, "compress.max_metric_drop", "greater than or equal to 0"),
    ],
)
def test_bad_compress_settings_name_the_key(compress, key, hint):
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "compress": compress})
    [error] = info.value.errors
    assert error.startswith(f"{key}:") and hint in error


def test_without_a_cpp_compiler_the_eager_int8_model_serves(monkeypatch, caplog):
    spec, module = small_model(input_dim=13)  # a graph no earlier test compiled (no cache hit)
    int8 = quantize(module, "int8_dynamic")
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/c++",))
    assert lower(int8, "int8_dynamic", spec.input_dim) is int8
    assert "compiling for CPU failed" in caplog.text


@pytest.mark.parametrize(
    "requested, accepted, device, planned",
    [
        ("auto", True, "cpu", "auto"),  # timed on the replica's CPU
        ("auto", True, "cuda", "fp32"),  # the compiled int8 kernels are CPU kernels
        ("auto", False, "cpu", "fp32"),
        ("int8", True, "cuda", "int8"),  # asked for by name, served whenever accepted
        ("int8", False, "cpu", "fp32"),  # never weights the compress gate refused
        ("fp32", True, "cpu", "fp32"),
    ],
)
def test_serve_precision_plan(requested, accepted, device, planned):
    assert planned_precision(requested, accepted, device) == planned


def test_auto_keeps_int8_only_when_it_is_faster():
    assert faster_precision({"int8": 0.07, "fp32": 0.15}) == "int8"  # VNNI
    assert faster_precision({"int8": 3.6, "fp32": 0.18}) == "fp32"  # plain AVX2
    assert faster_precision({"int8": 0.1, "fp32": 0.1}) == "fp32"  # a tie keeps the exact weights
