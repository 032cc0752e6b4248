"""Requests lost when a fused replica dies under load, with raymlp's replica setting and with Serve's
default, side by side.

    python benchmarks/replica_kills.py --kills 24

Trains and registers the quickstart churn model, serves it with `serve.topology: fused` and two
replicas on a Ray started as raymlp starts an embedded one (HAProxy ingress, `raymlp-haproxy`'s
request buffering and replay), and drives it from 4 `requests` clients posting one row each, back
to back. Then, --kills times: SIGKILL one replica (`ray.kill`), wait until its successor runs, and
wait 1.5 s more. Every answer that is not a 200 is counted by kind. Two variants, one after the
other on the same model and machine:
  loop      raymlp's `app.REPLICA_ENV`: the replica runs raymlp's code on Serve's event loop;
  separate  Serve's default: raymlp's code on a thread of its own, each ASGI message handed over
            to Serve's loop (what raymlp ran before).
Prints and saves benchmarks/results/replica_kills_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import ray
import requests
from ray import serve

import raymlp.serve.app as serve_app
from machine import describe
from raymlp.config import load_config
from raymlp.lifecycle.tracking import configure_tracking
from serve_load import QUICKSTART, RESULTS, free_port, sample_rows, start_ray, train_model

VARIANTS = {"loop": "0", "separate": "1"}
"""Variant -> RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD in the replicas."""


class Clients:
    """`n` threads, each posting one row back to back until stopped; every outcome counted."""

    def __init__(self, url: str, n: int):
        self.url, self.outcomes, self.stop = f"{url}/predict", Counter(), threading.Event()
        self.body = {"rows": sample_rows(1, 3)}
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def client(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    outcome = str(session.post(self.url, json=self.body, timeout=30).status_code)
                except requests.RequestException as e:
                    # IncompleteRead: the headers came, the body was cut short.
                    outcome = f"{type(e).__name__}{' (IncompleteRead)' if 'IncompleteRead' in repr(e) else ''}"
                self.outcomes[outcome] += 1

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def replicas() -> list[dict[str, Any]]:
    return [a for a in ray.util.list_named_actors(all_namespaces=True) if "#Gateway#" in a["name"]]


def kill_and_wait(app: str, timeout_s: float = 120) -> float | None:
    """Kill one replica; seconds until two run again with the killed one gone (None: not in time)."""
    victim = replicas()[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    killed_at = time.monotonic()
    while time.monotonic() - killed_at < timeout_s:
        names = {a["name"] for a in replicas()}
        running = serve.status().applications[app].deployments["Gateway"].replica_states.get("RUNNING", 0)
        if len(names) == 2 and victim["name"] not in names and running == 2:
            return round(time.monotonic() - killed_at, 1)
        time.sleep(0.25)
    return None


def run_variant(cfg, variant: str, kills: int, clients: int) -> dict[str, Any]:
    serve_app.REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": VARIANTS[variant]}
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    url = serve_app.deploy(serve_app.build_model_app(cfg.serve, cfg.monitor, target, []), cfg.serve, name=cfg.name)
    load = Clients(url, clients)
    try:
        time.sleep(3)
        recovered = []
        for k in range(kills):
            recovered.append(kill_and_wait(cfg.name))
            time.sleep(1.5)
            lost = {o: n for o, n in load.outcomes.items() if o != "200"}
            print(f"  {variant} kill {k + 1}: back in {recovered[-1]} s; {sum(load.outcomes.values())} answers, lost {lost}", flush=True)
    finally:
        load.close()
        serve.delete(cfg.name)
    answers = sum(load.outcomes.values())
    lost = {o: n for o, n in load.outcomes.items() if o != "200"}
    return {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": VARIANTS[variant], "kills": kills, "requests": answers,
            "lost": lost, "lost_total": sum(lost.values()), "seconds_to_two_replicas": recovered}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24, help="kills per variant")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--variants", default="loop,separate")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of training data")
    parser.add_argument("--out", type=Path, default=RESULTS / "replica_kills_cpu.json")
    args = parser.parse_args()
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="kills-bench-"))
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    report: dict[str, Any] = {"benchmark": "replica_kills", "machine": describe("ray", "requests"), "args": {k: str(v) for k, v in vars(args).items()}}
    try:
        start_ray(temp_dir, 2, "haproxy")
        _, _, base = train_model(work, args.rows, free_port(), 256)
        overrides = ["serve.topology=fused", "serve.num_replicas=2", "serve.cpus_per_replica=0.25", "serve.auth.mode=none"]
        cfg = load_config(QUICKSTART / "pipeline.yaml", [*base, *overrides])
        report["serve_overrides"] = overrides
        for variant in args.variants.split(","):
            print(f"{variant}: {args.kills} kills", flush=True)
            report[variant] = run_variant(cfg, variant, args.kills, args.clients)
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)
    report["summary"] = {v: f"{report[v]['lost_total']} lost of {report[v]['requests']} requests in {report[v]['kills']} kills"
                         for v in args.variants.split(",")}  # fmt: skip
    report["wall_s"] = round(time.monotonic() - began)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
