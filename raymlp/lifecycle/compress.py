"""The compress stage: int8 quantization through torchao, evaluated against the fp32 model.

The int8 bundle is served only when its validation metric drops by at most
`compress.max_metric_drop`; its size and latency are recorded either way.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import ray.data
import torch
from torch import nn

from raymlp.artifacts import ModelSpec, bundle_size_bytes, load_bundle, save_bundle
from raymlp.config.schema import CompressConfig
from raymlp.lifecycle.quantize import quantize
from raymlp.train.loop import score

log = logging.getLogger(__name__)


@dataclass
class CompressReport:
    scheme: str
    metric: str
    metric_fp32: float
    metric_int8: float
    metric_drop: float
    size_fp32_bytes: int
    size_int8_bytes: int
    latency_fp32_ms: float
    latency_int8_ms: float
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
    """Quantize the fp32 bundle at `bundle_dir` into `out_dir` and compare both on `valid`."""
    fp32 = load_bundle(bundle_dir)
    int8 = quantize(copy.deepcopy(fp32.module), cfg.scheme)
    spec = ModelSpec(fp32.spec.model, fp32.spec.input_dim, fp32.spec.output_dim, quantization=cfg.scheme)
    before = score(fp32.module, valid, fp32.features, "valid")[metric]
    after = score(int8, valid, fp32.features, "valid")[metric]
    drop = before - after if mode == "max" else after - before
    save_bundle(out_dir, spec, int8, fp32.features, {**fp32.metrics, metric: after})
    sample = torch.randn(256, fp32.spec.input_dim)
    report = CompressReport(
        scheme=cfg.scheme,
        metric=metric,
        metric_fp32=before,
        metric_int8=after,
        metric_drop=drop,
        size_fp32_bytes=bundle_size_bytes(bundle_dir),
        size_int8_bytes=bundle_size_bytes(out_dir),
        latency_fp32_ms=_median_latency_ms(fp32.module, sample),
        latency_int8_ms=_median_latency_ms(int8, sample),
        accepted=drop <= cfg.max_metric_drop,
    )
    log.info("compress: %s", report)
    return report


@torch.no_grad()
def _median_latency_ms(module: nn.Module, batch: torch.Tensor, repeats: int = 30) -> float:
    module(batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        module(batch)
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]
