"""Training throughput: raymlp on Ray Train against a plain torch loop over in-memory tensors.

    python benchmarks/train_throughput.py --rows 500000 --epochs 5

Prepares the quickstart churn data (N rows) once with raymlp's data stage, then trains the same
model (MLP, AdamW, same batch size and epochs) side by side: (ceiling) a single-process torch loop
over tensors already in memory, one torch thread; (raymlp) `raymlp.train.fit` with 1 and 2
workers of 1 CPU each, with the shard cached in the worker (`train.cache_data`) and streamed from
Ray Data every epoch; and Horovod instead of DDP when it is installed. Steady-state samples/s is
the median over epochs 2..E of the training phase (what the loop reports as
`train_samples_per_s`); everything else in the wall time (start-up, caching the shard,
validation, checkpoints, teardown) is reported as `other_s`. The ceiling runs before and after the
others, and ratios are to the faster of the two. Prints and saves JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from machine import describe
from raymlp.config import load_config
from raymlp.data import prepare_data
from raymlp.data.prepare import PreparedData
from raymlp.train.models import build_model
from raymlp.train.schedules import build_optimizer
from raymlp.train.trainer import fit

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def ceiling(cfg, data: PreparedData, epochs: int) -> dict:
    """The same model and optimizer, trained by hand on tensors already in memory."""
    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    batches = list(data.train.iter_torch_batches(batch_size=65_536, dtypes={"x": torch.float32, "y": torch.int64}))
    x, y = torch.cat([b["x"] for b in batches]), torch.cat([b["y"] for b in batches])
    model = build_model(cfg.model, x.shape[1], data.features.num_outputs)
    optimizer = build_optimizer(model, cfg.train)
    rates = []
    for epoch in range(epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(x), cfg.train.batch_size):
            index = order[start : start + cfg.train.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(x) / (time.perf_counter() - started))
    return {"epoch_samples_per_s": rates, "steady_samples_per_s": statistics.median(rates[1:])}


def raymlp_run(cfg, data: PreparedData, storage: str, name: str, **train: object) -> dict:
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})
    started = time.perf_counter()
    outcome = fit(
        cfg.model,
        cfg.train,
        {"train": data.train, "valid": data.valid},
        data.features,
        seed=cfg.seed,
        metric="epoch",  # "best" = the last epoch, whose checkpoint holds the whole history
        mode="max",
        name=name,
        storage_path=storage,
    )
    wall = time.perf_counter() - started
    with outcome.checkpoint.as_directory() as bundle:
        history = json.loads((Path(bundle) / "metrics.json").read_text())["history"]
    rates = [row["train_samples_per_s"] for row in history]
    return {
        "settings": train,
        "epoch_samples_per_s": rates,
        "steady_samples_per_s": statistics.median(rates[1:]),
        "wall_s": wall,
        "train_s": sum(row["train_seconds"] for row in history),
        "other_s": wall - sum(row["train_seconds"] for row in history),
        "final_valid_accuracy": history[-1]["valid_accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden", default="64,64", help="MLP hidden sizes")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    spec = importlib.util.spec_from_file_location("generate", REPO / "examples" / "quickstart" / "generate_data.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.generate(work / "data", rows=args.rows, shards=max(4, args.rows // 100_000), seed=0)
    cfg = load_config(
        REPO / "examples" / "quickstart" / "pipeline.yaml",
        [
            f"data.path={work / 'data'}",
            f"run_dir={work / 'runs'}",
            f"train.epochs={args.epochs}",
            f"train.batch_size={args.batch_size}",
            f"model.hidden_sizes=[{args.hidden}]",
            "model.dropout=0.0",
            "train.cpus_per_worker=1",
            "train.keep_checkpoints=1",
        ],
    )
    # One more logical CPU than workers: Ray Data needs one to feed a streaming run.
    ray.init(num_cpus=max(3, args.num_cpus + 1), object_store_memory=2 * 1024**3, include_dashboard=True)
    data = prepare_data(cfg.data, cfg.features, cfg.seed, work / "quarantine")
    storage = str(work / "ray_results")

    results: dict[str, dict] = {"ceiling": ceiling(cfg, data, args.epochs)}
    print("ceiling", results["ceiling"]["steady_samples_per_s"])
    runs = {
        "raymlp_1_worker": {"num_workers": 1, "cache_data": "always"},
        "raymlp_2_workers": {"num_workers": 2, "cache_data": "always"},
        "raymlp_1_worker_streaming": {"num_workers": 1, "cache_data": "never"},
    }
    if importlib.util.find_spec("horovod"):
        runs |= {
            "raymlp_horovod_1_worker": {"num_workers": 1, "cache_data": "always", "backend": "horovod"},
            "raymlp_horovod_2_workers": {"num_workers": 2, "cache_data": "always", "backend": "horovod"},
        }
    for name, train in runs.items():
        results[name] = raymlp_run(cfg, data, storage, name, **train)
        print(name, results[name]["steady_samples_per_s"], f"other {results[name]['other_s']:.1f}s")
    # Measured again after the runs, which take minutes: a shared machine's speed drifts (a run
    # here beat a ceiling measured only before it by 13%). Ratios are to the faster of the two.
    results["ceiling_after"] = ceiling(cfg, data, args.epochs)
    print("ceiling after", results["ceiling_after"]["steady_samples_per_s"])

    top = max(results[c]["steady_samples_per_s"] for c in ("ceiling", "ceiling_after"))
    report = {
        "benchmark": "train_throughput",
        "machine": describe("ray", "torch") | {"gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "rows": args.rows,
        "train_rows": data.num_rows["train"],
        "features": data.features.output_dim,
        "model": {"name": "mlp", "hidden_sizes": cfg.model.hidden_sizes},
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "results": results,
        "ratio_to_ceiling": {
            name: round(r["steady_samples_per_s"] / top, 3) for name, r in results.items() if not name.startswith("ceiling")
        },
        "target": "raymlp_1_worker >= 0.8 x ceiling",
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"train_throughput_cpu_{math.floor(args.rows / 1000)}k_batch{args.batch_size}.json"
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["ratio_to_ceiling"], indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
