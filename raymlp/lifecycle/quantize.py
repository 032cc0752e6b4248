"""int8 quantization through torchao (`torch.ao.quantization.quantize_dynamic` is deprecated)."""

from __future__ import annotations

import logging

from torch import nn


def quantize(module: nn.Module, scheme: str) -> nn.Module:
    """Quantize the Linear layers of `module` in place with a torchao int8 scheme.

    Both schemes cut the weights to about a third. Measured once on 2 CPU cores with a
    20-128-128-2 MLP and 64-row batches, torchao 0.18 ran slower than fp32 (weight-only 2.4x,
    dynamic 17x), so the compress stage records latency before and after rather than assuming a
    speed-up.
    """
    # torchao logs failed loads of its optional CUDA kernels at import; they do not apply on CPU.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    configs = {"int8_weight_only": Int8WeightOnlyConfig, "int8_dynamic": Int8DynamicActivationInt8WeightConfig}
    quantize_(module, configs[scheme]())
    return module
