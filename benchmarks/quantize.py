"""int8 against fp32 on CPU, through raymlp's compress stage: size, latency at batch 1 and 64, and
the validation metric.

    python benchmarks/quantize.py --rows 50000 --widths 64,256,1024

Prepares the quickstart churn data once with raymlp's data stage, trains one MLP per hidden width
(two hidden layers of that width) with `raymlp.train.fit` (one worker), then runs
`raymlp.lifecycle.compress.compress_bundle` on the trained bundle once per variant:
`int8_dynamic` (the default: compiled for CPU), `int8_weight_only` (eager), and `int8_dynamic`
after pruning 30% of the weights. Each report is what the compress stage logs: the validation
metric before and after, bundle sizes on disk (weights, features, manifest), the seconds spent
compiling, and the median latency of fp32 and int8 forward passes at 1 and 64 rows, timed
interleaved (20 rounds of 10 calls each, shuffled order) with `--threads` torch threads (1: what a
Serve replica of one CPU uses). To tell int8's gain from the compiler's, fp32 compiled the same way
(AOTInductor, frozen weights) is timed at 64 rows beside eager fp32 and compiled int8. Targets (issue: model lifecycle): at batch 64, int8 >= 1.5x faster;
metric drop <= 0.5 points; size <= 0.35x. Prints and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
import torch

from machine import describe
from raymlp.artifacts import load_bundle
from raymlp.config import load_config, with_values
from raymlp.data import prepare_data
from raymlp.lifecycle.compress import compress_bundle
from raymlp.lifecycle.quantize import CompiledForward, interleaved_latency_ms
from raymlp.train.trainer import fit

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "int8_dynamic": {"scheme": "int8_dynamic"},
    "int8_weight_only": {"scheme": "int8_weight_only"},
    "int8_dynamic_pruned_0.3": {"scheme": "int8_dynamic", "prune_amount": 0.3},
}
TARGETS = {"speedup_64": 1.5, "metric_drop": 0.005, "size_ratio": 0.35}


def generate(out: Path, rows: int) -> None:
    spec = importlib.util.spec_from_file_location("quickstart_data", REPO / "examples" / "quickstart" / "generate_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(out, rows=rows, shards=4, seed=0)


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    speedup = {rows: report[f"latency_{rows}_fp32_ms"] / report[f"latency_{rows}_int8_ms"] for rows in (1, 64)}
    size_ratio = report["size_int8_bytes"] / report["size_fp32_bytes"]
    return {
        "speedup_1": round(speedup[1], 3),
        "speedup_64": round(speedup[64], 3),
        "size_ratio": round(size_ratio, 3),
        "metric_drop_points": round(report["metric_drop"] * 100, 3),
        "meets": {
            "speedup_64": speedup[64] >= TARGETS["speedup_64"],
            "metric_drop": report["metric_drop"] <= TARGETS["metric_drop"],
            "size_ratio": size_ratio <= TARGETS["size_ratio"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--widths", default="64,256,1024", help="hidden widths; each model has two hidden layers")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads while timing (1 = a one-CPU replica)")
    # int8 speed depends on the CPU's int8 instructions (VNNI or not): one result per capability.
    capability = torch.backends.cpu.get_cpu_capability().lower()
    parser.add_argument("--out", type=Path, default=RESULTS / f"quantize_cpu_{capability}.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="quantize-bench-"))
    generate(work / "data", args.rows)
    cfg = load_config(
        REPO / "examples" / "quickstart" / "pipeline.yaml",
        [f"data.path={work / 'data'}", f"run_dir={work / 'runs'}", "train.num_workers=1", f"train.epochs={args.epochs}"],
    )
    ray.init(num_cpus=2, object_store_memory=512 * 1024**2, include_dashboard=False)
    data = prepare_data(cfg.data, cfg.features, cfg.seed, work / "quarantine")
    metric, mode = cfg.tune.metric, cfg.tune.mode
    torch.set_num_threads(args.threads)

    models = []
    for width in (int(w) for w in args.widths.split(",")):
        model_cfg = with_values(cfg, {"model.hidden_sizes": [width, width]}).model
        started = time.perf_counter()
        outcome = fit(
            model_cfg, cfg.train, {"train": data.train, "valid": data.valid}, data.features,
            seed=cfg.seed, metric=metric, mode=mode, name=f"width{width}", storage_path=str(work / "ray_results"),
        )  # fmt: skip
        trained_s = time.perf_counter() - started
        variants = {}
        with outcome.checkpoint.as_directory() as bundle:
            fp32 = load_bundle(Path(bundle)).module
            for name, compress in VARIANTS.items():
                compress_cfg = with_values(cfg, {f"compress.{k}": v for k, v in compress.items()}).compress
                report = asdict(compress_bundle(compress_cfg, Path(bundle), data.valid, work / f"{width}-{name}", metric, mode))
                variants[name] = {"report": report, **verdict(report)}
                print(f"width {width} {name}: {json.dumps(variants[name], default=str)}", flush=True)
        # Is the gain int8's or the compiler's? fp32 compiled the same way, timed beside both.
        int8 = load_bundle(work / f"{width}-int8_dynamic").module
        compiled = {
            "fp32_eager": fp32,
            "fp32_compiled": CompiledForward(fp32, data.features.output_dim),
            "int8_dynamic_compiled": int8,
        }
        times = interleaved_latency_ms(compiled, torch.randn(64, data.features.output_dim))
        compiled_64 = {k: round(statistics.median(v), 4) for k, v in times.items()}
        print(f"width {width} at 64 rows, median ms: {compiled_64}", flush=True)
        params = sum(p.numel() for p in fp32.parameters())
        models.append({
            "hidden_sizes": [width, width], "parameters": params, "train_s": round(trained_s, 1), "variants": variants,
            "latency_64_ms_with_fp32_compiled": compiled_64,
            "int8_over_fp32_compiled_64": round(compiled_64["fp32_compiled"] / compiled_64["int8_dynamic_compiled"], 3),
        })  # fmt: skip

    default = [m["variants"]["int8_dynamic"] for m in models]
    report = {
        "benchmark": "quantize",
        "command": f"python benchmarks/quantize.py --rows {args.rows} --widths {args.widths} --epochs {args.epochs} "
        f"--threads {args.threads}",
        "machine": describe("ray", "torch", "torchao") | {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "task": {"data": "quickstart churn", "rows": data.num_rows, "metric": metric, "inputs": data.features.output_dim},
        "threads": args.threads,
        "targets": TARGETS,
        "models": models,
        "summary": "; ".join(
            f"{m['hidden_sizes']}: int8_dynamic {v['speedup_64']}x at 64 rows, {v['speedup_1']}x at 1 row, "
            f"size {v['size_ratio']}x, drop {v['metric_drop_points']} pt"
            for m, v in zip(models, default)
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(report["summary"])
    print(f"saved {args.out}")
    ray.shutdown()


if __name__ == "__main__":
    main()
