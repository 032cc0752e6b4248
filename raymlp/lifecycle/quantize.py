"""int8 quantization through torchao (`torch.ao.quantization.quantize_dynamic` is deprecated).

`quantize` swaps the weight of every Linear layer for a torchao int8 tensor subclass: that is what
a bundle stores, and what `torch.load(weights_only=True)` rebuilds. `lower` turns it into what is
served. Eager torchao is slower than fp32 on CPU (measured on 2 cores, 20-64-64-2 MLP, batch 64:
weight-only 2.4x and dynamic 17x slower): each Linear becomes a dozen small Python-dispatched ops.
Compiled ahead of time, `int8_dynamic` runs its matmuls on oneDNN's u8s8 (AVX512-VNNI) kernels
with the activation (de)quantization fused around them, and is the fast path
(benchmarks/quantize.py).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Scheme:
    config: Callable[[], object]
    """Builds the torchao config (imported lazily: torchao is heavy and only compress needs it)."""
    compiled: bool
    """Whether `lower` compiles it for CPU serving."""


def _int8_dynamic() -> object:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    # set_inductor_config=False: the default rewrites process-wide inductor settings (GPU autotuning)
    # that do nothing for CPU kernels and would change every other compile in the process.
    return Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)


def _int8_weight_only() -> object:
    from torchao.quantization import Int8WeightOnlyConfig

    return Int8WeightOnlyConfig(set_inductor_config=False)


# Names match `CompressConfig.scheme`; tests check that every one there is here.
SCHEMES: dict[str, _Scheme] = {
    "int8_dynamic": _Scheme(_int8_dynamic, compiled=True),
    # Compiled, it measured no faster than fp32: freezing folds its weights back to fp32 constants.
    "int8_weight_only": _Scheme(_int8_weight_only, compiled=False),
}


def quantize(module: nn.Module, scheme: str) -> nn.Module:
    """Quantize the Linear layers of `module` in place with the torchao int8 `scheme` (eager)."""
    # torchao logs failed loads of its optional CUDA kernels at import; they do not apply on CPU.
    logging.getLogger("torchao").setLevel(logging.ERROR)
    from torchao.quantization import quantize_

    quantize_(module, SCHEMES[scheme].config())
    return module


def lower(module: nn.Module, scheme: str, input_dim: int) -> nn.Module:
    """What serves a module quantized with `scheme`: compiled (`CompiledForward`) when the scheme
    is, else the module itself. Where compiling fails (no C++ compiler on the machine), the eager
    module serves the same predictions, slower, and a warning says why."""
    if not SCHEMES[scheme].compiled:
        return module
    try:
        return CompiledForward(module, input_dim)
    except Exception as e:  # noqa: BLE001 - inductor raises many kinds; any of them leaves eager working
        log.warning("int8: compiling for CPU failed, serving the eager (slower) model: %s", str(e)[:500])
        return module


class CompiledForward(nn.Module):
    """A quantized module's forward, compiled ahead of time for CPU batches of any row count.

    `torch.export` traces it once with a symbolic row count, so a single compiled graph serves
    every batch size (no recompiles per size). AOTInductor compiles that graph with freezing
    (weights become constants) into a shared library called without Python or dynamo-guard
    overhead per op, which is what makes int8 pay off on small models. Compiling costs 10-30 s on
    2 cores, once per load (every replica pays it at start-up), and needs a C++ compiler, as
    `torch.compile` does. The compiled kernels use the torch thread count at compile time. Inputs
    on another device (batch inference on a GPU) run the eager quantized module.
    """

    def __init__(self, module: nn.Module, input_dim: int):
        super().__init__()
        self.quantized = module.eval()
        example = torch.zeros(2, input_dim)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("rows", min=0)},))
        # Freezing happens only with gradients off; the package is loaded, then its folder goes.
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            package = torch._inductor.aoti_compile_and_package(
                program, package_path=str(Path(tmp) / "model.pt2"), inductor_configs={"freezing": True}
            )
            self._compiled = torch._inductor.aoti_load_package(package)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return self.quantized(x)
        # The compiled kernels index rows as the traced row-major layout: a transposed view would
        # silently give wrong numbers.
        return self._compiled(x.contiguous())
