"""Drift monitoring's cost: serving latency with drift scoring on and off, and the offline check's rows/s.

    python benchmarks/drift.py

Trains, registers and compresses the quickstart churn model (two hidden layers of 256) as
serve_load.py does, then:
  serving  the app on serve_load.py's tuned settings (`serve.topology: fused`, 2 replicas, auth
           on), once with `monitor.drift.enabled` and once without, alternating over --rounds
           rounds (the order flips each round, so drift of the machine falls on both): single-row
           requests at concurrency 8 and 32 and 1,024-row requests at 8, driven by serve_load.py's
           load generator (its own process, raw HTTP keep-alive), --duration seconds per level.
           Scoring runs with the config's defaults: a window of 10,000 rows per replica, scored
           every 10 s. Per mode and level: median over rounds of QPS, p50 and p99; and the ratio
           on/off of p99 (target: within 10%, <= 1.10).
  offline  `raymlp.monitor.drift_check.check_drift` (what `raymlp drift` runs) over --offline-rows
           rows of new quickstart data in 250k-row parquet shards, on the same Ray: read, input
           contract checks, counting per block, scoring; wall time from the call to the report, cold
           (first) and warm (again).
Prints and saves benchmarks/results/drift_cpu.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import serve

import serve_load as sl
from machine import describe
from raymlp.lifecycle.tracking import configure_tracking
from raymlp.monitor.drift_check import check_drift
from raymlp.serve.security import resolve_api_keys

TUNED = ["serve.topology=fused", "serve.num_replicas=2"]
LEVELS = [("single_row", 8), ("single_row", 32), (sl.ROWS, 8)]


def serving(bench: sl.Bench, port: int, base: list[str], key: str, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            print(f"  round {r + 1}, drift {mode}", flush=True)
            sl.start_raymlp(base, [*TUNED, f"monitor.drift.enabled={mode == 'on'}"], [key])
            bench.quiet()
            runs[mode].append({f"{w}_c{c}": bench.level(port, w, c, key) for w, c in LEVELS})
    out: dict[str, Any] = {"overrides": TUNED, "rounds": runs, "median": {}, "p99_on_over_off": {}}
    for mode, results in runs.items():
        out["median"][mode] = {
            level: {k: statistics.median(r[level][k] for r in results) for k in ("qps", "p50_ms", "p99_ms")}
            for level in results[0]
        }
    for level in out["median"]["on"]:
        out["p99_on_over_off"][level] = round(out["median"]["on"][level]["p99_ms"] / out["median"]["off"][level]["p99_ms"], 3)
    out["target"] = {"p99_on_over_off": "<= 1.10", "pass": all(v <= 1.10 for v in out["p99_on_over_off"].values())}
    return out


def offline(work: Path, cfg, rows: int) -> dict[str, Any]:
    data = work / "new_data"
    spec = importlib.util.spec_from_file_location("quickstart_generate", sl.QUICKSTART / "generate_data.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.generate(data, rows=rows, shards=max(1, rows // 250_000), seed=5)
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    out: dict[str, Any] = {"rows": rows, "shards": max(1, rows // 250_000)}
    for run in ("cold", "warm"):
        check = check_drift(target, str(data), work / f"quarantine_{run}", version=cfg.serve.model_version, cfg=cfg.monitor.drift)
        assert check.report.rows == rows, check.summary()
        out[run] = {"seconds": round(check.seconds, 2), "rows_per_s": round(check.rows_per_s),
                    "drifted": check.report.drifted, "max_psi": max(f.psi for f in check.report.features)}  # fmt: skip
        print(f"  offline {run}: {out[run]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rows", type=int, default=20_000, help="rows of training data")
    parser.add_argument("--offline-rows", type=int, default=5_000_000)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--quiet-load", type=float, default=0.7)
    parser.add_argument("--max-wait-s", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=sl.RESULTS / "drift_cpu.json")
    args = parser.parse_args()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    meter, load = sl.CpuMeter(), sl.LoadGenerator()
    meter.named[load.process.pid] = "load client"
    report: dict[str, Any] = {"benchmark": "drift", "machine": describe("ray", "torch", "pyarrow", "numpy"),
                              "args": {k: str(v) for k, v in vars(args).items()}}  # fmt: skip
    try:
        sl.start_ray(temp_dir, args.num_cpus, "haproxy")
        port = sl.free_port()
        cfg, _, base = sl.train_model(work, args.rows, port, 256)
        key = resolve_api_keys(cfg.serve.auth, Path(cfg.run_dir))[0]
        bench = sl.Bench(args, load, meter, key)
        print("serving, drift on and off", flush=True)
        report["serving"] = serving(bench, port, base, key, args.rounds)
        serve.shutdown()
        print(f"offline check, {args.offline_rows:,} rows", flush=True)
        report["offline"] = offline(work, cfg, args.offline_rows)
    finally:
        load.close()
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)
    report["wall_s"] = round(time.monotonic() - began)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({"p99_on_over_off": report["serving"]["p99_on_over_off"], "offline": report["offline"]}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
