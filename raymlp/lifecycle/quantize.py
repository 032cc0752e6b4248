"""int8 quantization through torchao (`torch.ao.quantization.quantize_dynamic` is deprecated).

`quantize` swaps the weight of every Linear layer for a torchao int8 tensor subclass: that is what
a bundle stores, and what `torch.load(weights_only=True)` rebuilds. `lower` turns it into what is
served. Eager torchao is slower than fp32 on CPU (measured on 2 cores, 20-64-64-2 MLP, batch 64:
weight-only 2.4x and dynamic 17x slower): each Linear becomes a dozen small Python-dispatched ops.
Compiled ahead of time, `int8_dynamic` runs its matmuls on oneDNN's u8s8 (AVX512-VNNI) kernels
with the activation (de)quantization fused around them, and is the fast path there
(benchmarks/quantize.py). Without VNNI (plain AVX2) oneDNN has no fast int8 path and the same
model runs ~10x slower than fp32 (2.95 ms against 0.30 ms for a 256-256 MLP at 64 rows on a
2-core AVX2 EPYC), which is why serving times both before it chooses (`serve.precision: auto`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import random
import tempfile
import time
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


def lower(module: nn.Module, scheme: str, input_dim: int, cache_key: str | None = None) -> nn.Module:
    """What serves a module quantized with `scheme`: compiled (`CompiledForward`) when the scheme
    is, else the module itself. `cache_key` names the weights (a digest); with it, the compiled
    package is kept in `compile_cache_dir()` for the next load on this machine. Where compiling
    fails (no C++ compiler on the machine), the eager module serves the same predictions, slower,
    and a warning says why."""
    if not SCHEMES[scheme].compiled:
        return module
    try:
        return CompiledForward(module, input_dim, cache_key and _package_name(cache_key, scheme, input_dim))
    except Exception as e:  # noqa: BLE001 - inductor raises many kinds; any of them leaves eager working
        log.warning("int8: compiling for CPU failed, serving the eager (slower) model: %s", str(e)[:500])
        return module


class CompiledForward(nn.Module):
    """A quantized module's forward, compiled ahead of time for CPU batches of any row count.

    `torch.export` traces it once with a symbolic row count, so a single compiled graph serves
    every batch size (no recompiles per size). AOTInductor compiles that graph with freezing
    (weights become constants) into a shared library called without Python or dynamo-guard
    overhead per op, which is what makes int8 pay off on small models. Compiling costs 10-30 s on
    2 cores and needs a C++ compiler, as `torch.compile` does; given a `package_name`, the package
    is kept in `compile_cache_dir()`, so that the next replica of the same model on this machine
    (a restart, a scale-up, a canary) loads it in well under a second. The compiled kernels use
    the torch thread count at compile time, so it is part of the name. Inputs on another device
    (batch inference on a GPU) run the eager quantized module.
    """

    def __init__(self, module: nn.Module, input_dim: int, package_name: str | None = None):
        super().__init__()
        self.quantized = module.eval()
        cached = compile_cache_dir() / package_name if package_name else None
        self.from_cache = cached is not None and cached.is_file() and self._load(cached)
        if self.from_cache:
            return
        example = torch.zeros(2, input_dim)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("rows", min=0)},))
        # Freezing happens only with gradients off. The package is written beside its final place
        # and renamed there, so a replica compiling the same model at the same time never sees half
        # of it; without a cache, its folder goes once it is loaded.
        folder = cached.parent if cached else None
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp, torch.no_grad():
            package = torch._inductor.aoti_compile_and_package(
                program, package_path=str(Path(tmp) / "model.pt2"), inductor_configs={"freezing": True}
            )
            if cached:
                package = str(Path(package).replace(cached))
            self._compiled = torch._inductor.aoti_load_package(package)

    def _load(self, package: Path) -> bool:
        """Load a cached package; one that does not load (cut short, another torch) is dropped."""
        try:
            self._compiled = torch._inductor.aoti_load_package(str(package))
            return True
        except Exception as e:  # noqa: BLE001 - any failure means: compile afresh
            log.warning("int8: dropping the unusable compiled package %s: %s", package, str(e)[:200])
            package.unlink(missing_ok=True)
            return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return self.quantized(x)
        # The compiled kernels index rows as the traced row-major layout: a transposed view would
        # silently give wrong numbers.
        return self._compiled(x.contiguous())


def compile_cache_dir() -> Path:
    """Where compiled int8 packages are kept: `$RAYMLP_COMPILE_CACHE`, else
    `~/.cache/raymlp/compiled`. Like inductor's own cache, it holds native code that this
    machine's replicas load, so it must be writable by their user only."""
    return Path(os.environ.get("RAYMLP_COMPILE_CACHE") or Path.home() / ".cache" / "raymlp" / "compiled")


def _package_name(weights_key: str, scheme: str, input_dim: int) -> str:
    """A compiled package is valid for these weights, on this CPU, torch build and thread count."""
    import torchao

    build = [
        weights_key,
        scheme,
        str(input_dim),
        torch.__version__,
        torchao.__version__,
        platform.machine(),
        torch.backends.cpu.get_cpu_capability(),
        str(torch.get_num_threads()),
    ]
    return hashlib.sha256("\n".join(build).encode()).hexdigest()[:32] + ".pt2"


@torch.no_grad()
def interleaved_latency_ms(
    modules: dict[str, nn.Module], batch: torch.Tensor, rounds: int = 20, calls: int = 10
) -> dict[str, list[float]]:
    """Milliseconds of every forward pass of each module over `batch`: `rounds` rounds, each
    running every module `calls` times in a shuffled order, so load on the machine (and CPU
    frequency changes) hit all of them alike instead of whichever ran last."""
    times: dict[str, list[float]] = {name: [] for name in modules}
    for module in modules.values():
        module(batch)  # warm-up: first-call allocations and lazy initialization
    order, rng = list(modules), random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            for _ in range(calls):
                start = time.perf_counter()
                modules[name](batch)
                times[name].append((time.perf_counter() - start) * 1000)
    return times
