"""The compress stage: optional magnitude pruning, then int8 quantization through torchao,
evaluated against the fp32 model.

The int8 bundle is served only when its validation metric drops by at most
`compress.max_metric_drop`; its size, sparsity and latency are recorded either way. The int8
model is scored and timed as replicas run it (`lower`: compiled when its scheme is), not eagerly.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import ray.data
import torch
from torch import nn
from torch.nn.utils import prune

from raymlp.artifacts import ModelSpec, bundle_size_bytes, load_bundle, save_bundle
from raymlp.config.schema import CompressConfig
from raymlp.lifecycle.quantize import interleaved_latency_ms, lower, quantize
from raymlp.train.loop import score

log = logging.getLogger(__name__)

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class CompressReport:
    scheme: str
    metric: str
    metric_fp32: float
    metric_int8: float
    metric_drop: float
    sparsity: float
    """Fraction of Linear and Conv weights that are zero after pruning (0 without it)."""
    size_fp32_bytes: int
    size_int8_bytes: int
    compile_s: float
    """Seconds to make the int8 model servable (`lower`); every replica pays it when loading."""
    latency_1_fp32_ms: float
    latency_1_int8_ms: float
    latency_64_fp32_ms: float
    latency_64_int8_ms: float
    accepted: bool

    def as_metrics(self) -> dict[str, float]:
        return {f"compress.{k}": float(v) for k, v in asdict(self).items() if k not in ("scheme", "metric")}


def compress_bundle(
    cfg: CompressConfig,
    bundle_dir: Path,
    valid: ray.data.Dataset,
    out_dir: Path,
    metric: str,
    mode: Literal["min", "max"],
) -> CompressReport:
    """Prune and quantize the fp32 bundle at `bundle_dir` into `out_dir`; compare both on `valid`."""
    fp32 = load_bundle(bundle_dir)
    int8 = copy.deepcopy(fp32.module)
    sparsity = prune_weights(int8, cfg.prune_amount)
    int8 = quantize(int8, cfg.scheme)
    started = time.perf_counter()
    served = lower(int8, cfg.scheme, fp32.spec.input_dim)
    compile_s = time.perf_counter() - started
    before = score(fp32.module, valid, fp32.features, "valid")[metric]
    after = score(served, valid, fp32.features, "valid")[metric]
    drop = before - after if mode == "max" else after - before
    spec = ModelSpec(fp32.spec.model, fp32.spec.input_dim, fp32.spec.output_dim, quantization=cfg.scheme)
    save_bundle(out_dir, spec, int8, fp32.features, {**fp32.metrics, metric: after})
    latency = {
        rows: interleaved_latency_ms({"fp32": fp32.module, "int8": served}, torch.randn(rows, spec.input_dim))
        for rows in (1, 64)
    }
    report = CompressReport(
        scheme=cfg.scheme,
        metric=metric,
        metric_fp32=before,
        metric_int8=after,
        metric_drop=drop,
        sparsity=sparsity,
        size_fp32_bytes=bundle_size_bytes(bundle_dir),
        size_int8_bytes=bundle_size_bytes(out_dir),
        compile_s=compile_s,
        latency_1_fp32_ms=statistics.median(latency[1]["fp32"]),
        latency_1_int8_ms=statistics.median(latency[1]["int8"]),
        latency_64_fp32_ms=statistics.median(latency[64]["fp32"]),
        latency_64_int8_ms=statistics.median(latency[64]["int8"]),
        accepted=drop <= cfg.max_metric_drop,
    )
    log.info("compress: %s", report)
    return report


def prune_weights(module: nn.Module, amount: float) -> float:
    """Zero the `amount` fraction of all Linear and Conv weights of `module` with the smallest
    magnitude, ranked across the whole model at once (global L1 unstructured pruning), and make it
    permanent so the state dict holds plain tensors. Returns the fraction of those weights that
    are zero."""
    params = [(m, "weight") for m in module.modules() if isinstance(m, PRUNABLE)]
    if amount > 0 and params:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        for m, name in params:
            prune.remove(m, name)
    total = sum(m.weight.numel() for m, _ in params)
    return sum(int((m.weight == 0).sum()) for m, _ in params) / total if total else 0.0
