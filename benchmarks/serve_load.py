"""Serving under load on 127.0.0.1: raymlp on Ray Serve against the in-process ceiling and a plain
FastAPI server, with the same model.

    python benchmarks/serve_load.py

Trains, registers and compresses the quickstart churn model (two hidden layers of --width), then
drives every server with a bounded load generator: its own process (so its CPU shows apart), raw
HTTP/1.1 keep-alive over asyncio, N connections each sending its next request when the last one answers, for --duration
seconds after --warmup seconds, at concurrency 1, 8, 32 and 64, with single-row and 1,024-row
requests (the 1,024 rows also as one list per column, POST /predict/columns, against raymlp).
Side by side:
  ceiling  `predict_rows` in this process on ready columns: no HTTP, no validation, perfect
           batching (1 and 2 torch threads; the better one is the ceiling);
  plain    one uvicorn process: FastAPI, the same request model (`make_request_model`), bundle and
           `predict_rows`, one torch thread, `async def` (a sub-millisecond model gains nothing
           from a thread-pool hop), no auth: what a user would write instead;
  raymlp   `build_model_app` + `deploy` on a Ray started as raymlp starts an embedded one
           (`runtime.serve_ingress: haproxy`: HAProxy forwards to the gateway replicas' own HTTP
           servers), auth on (the key is sent), default serve settings (`serve.topology: split`:
           gateway -> model deployment through a handle); then a few settings probed
           (`serve.topology: fused` among them: the model inside the gateway replica), and the
           best swept in full, labeled tuned.
Where time goes: CPU per request by process (HAProxy shows as `other`; replicas, client, Ray
itself), GET /healthz alone, the model deployment called through a DeploymentHandle from this
process, and metrics export off. int8 against fp32 with 1,024-row requests on the tuned settings
(`serve.precision` int8 and fp32; the default, auto, serves whichever runs faster on this CPU), for
this model and for a second one --wide-width wide, whose forward pass outweighs parsing and
validating the JSON rows, as the 256-wide one's does not. Autoscaling: [1, 3]
replicas with 1 s / 5 s delays under a load step, and back after it. Last, the default app on a
Ray started with `runtime.serve_ingress: proxy`: Serve's Python proxy on the port.

Before each phase it waits (up to --max-wait-s) until the 1-minute load average is below
--quiet-load, or, since this benchmark's own last phase keeps that average up for a minute, until
processes outside this benchmark's process tree use under 0.1 cores over 5 s. The load seen, and
the CPU those other processes used during each level (`foreign_cores`), are in the JSON. Prints
and saves benchmarks/results/serve_load_cpu.json.
"""

import argparse
import asyncio
import importlib.util
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import mlflow
import psutil
import ray
import requests
import torch
from mlflow.entities.model_registry import ModelVersion
from ray import serve

from machine import describe
from raymlp.artifacts import load_bundle
from raymlp.config import load_config
from raymlp.lifecycle.registry import INT8_ACCEPTED_TAG, download_bundle, resolve_version
from raymlp.lifecycle.tracking import configure_tracking
from raymlp.pipeline import run_pipeline
from raymlp.runtime import serve_ingress_env
from raymlp.serve.app import build_model_app, deploy
from raymlp.serve.model import load_served_model, predict_rows
from raymlp.serve.schemas import PredictResponse, make_request_model
from raymlp.serve.security import resolve_api_keys

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
QUICKSTART = REPO / "examples" / "quickstart"
BATCH_ROWS = 1024
ROWS, COLUMNS = f"rows_{BATCH_ROWS}", f"columns_{BATCH_ROWS}"
"""The batched workload, as a list of row objects (POST /predict) and as one list per column (/predict/columns)."""

# ---------------------------------------------------------------- load generator (own process)


def http_request(port: int, path: str, body: bytes | None, key: str | None) -> bytes:
    lines = [f"{'POST' if body is not None else 'GET'} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, whether the server closes the connection); the body is read and dropped."""
    head = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    status, length, chunked, close = int(head[0].split(b" ", 2)[1]), 0, False, False
    for line in head[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            close = value == b"close"
    if not chunked:
        await reader.readexactly(length)
        return status, close
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
        await reader.readexactly(size + 2)
    await reader.readuntil(b"\r\n")  # no trailers: the empty line after the last chunk
    return status, close


async def drive(port: int, request: bytes, concurrency: int, duration_s: float, warmup_s: float, stop=None,
                timeout_s: float = 30.0) -> dict[str, Any]:  # fmt: skip
    """`concurrency` connections, each sending `request` as soon as its last one answered. Counted:
    answers that arrive inside the window [warmup, warmup + duration] (cut short by `stop`)."""
    begin = time.perf_counter()
    window = [begin + warmup_s, begin + warmup_s + duration_s]
    latencies: list[float] = []
    statuses, errors = Counter(), Counter()
    cpu_before = time.process_time()

    def inside(t: float) -> bool:
        return window[0] <= t <= window[1]

    async def client() -> None:
        reader = writer = None
        while time.perf_counter() < window[1]:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                sent = time.perf_counter()
                writer.write(request)
                status, close = await asyncio.wait_for(read_response(reader), timeout_s)
                done = time.perf_counter()
                if inside(done):
                    statuses[status] += 1
                    if status == 200:
                        latencies.append(done - sent)
                if close:
                    writer.close()
                    writer = None
            except (OSError, ValueError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                if inside(time.perf_counter()):
                    errors[type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                writer = None
                await asyncio.sleep(0.05)
        if writer is not None:
            writer.close()

    async def watch_stop() -> None:
        while stop is not None and time.perf_counter() < window[1]:
            if stop.is_set():
                window[1] = max(window[0], time.perf_counter())
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(client()) for _ in range(concurrency)]
    watcher = asyncio.create_task(watch_stop())
    await asyncio.wait(tasks, timeout=warmup_s + duration_s + timeout_s + 5)
    for task in [*tasks, watcher]:
        task.cancel()  # requests still in flight at the end are not counted
    seconds = window[1] - window[0]
    ok = len(latencies)
    latencies.sort()
    bad = sum(n for s, n in statuses.items() if s != 200) + sum(errors.values())

    def pct(q: float) -> float | None:
        return round(1000 * latencies[min(ok - 1, int(q * ok))], 2) if ok else None

    return {
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "ok": ok,
        "qps": round(ok / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(1000 * latencies[-1], 2) if ok else None,
        "errors": bad,
        "error_rate": round(bad / max(1, ok + bad), 4),
        "statuses": {str(s): n for s, n in statuses.items()},
        "exceptions": dict(errors),
        "client_cpu_s": round(time.process_time() - cpu_before, 2),
    }


def load_worker(commands, results, stop) -> None:
    """The load generator's process: runs one `drive` per command until it gets None."""
    run = asyncio.run
    if importlib.util.find_spec("uvloop"):
        import uvloop

        run = uvloop.run
    while (job := commands.get()) is not None:
        results.put(run(drive(**job, stop=stop)))


class LoadGenerator:
    """The client side, in its own long-lived process."""

    def __init__(self):
        ctx = mp.get_context("spawn")
        self.commands, self.results, self.stop = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.process = ctx.Process(target=load_worker, args=(self.commands, self.results, self.stop), daemon=True)
        self.process.start()

    def start(self, **job: Any) -> None:
        self.stop.clear()
        self.commands.put(job)

    def result(self) -> dict[str, Any]:
        return self.results.get(timeout=600)

    def run(self, **job: Any) -> dict[str, Any]:
        self.start(**job)
        return self.result()

    def close(self) -> None:
        self.commands.put(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()


# ------------------------------------------------------------------- CPU accounting and quiet


class CpuMeter:
    """CPU used by role over a window: this benchmark's process tree by role (driver, load
    client, plain server, Serve proxy/controller/replicas, Ray itself), and `foreign`: everything
    else on the machine."""

    def __init__(self):
        self.named: dict[int, str] = {os.getpid(): "driver"}

    def role(self, p: psutil.Process) -> str:
        if p.pid in self.named:
            return self.named[p.pid]
        title = " ".join(p.cmdline())
        if "ServeReplica:" in title:
            return "replica " + title.split("ServeReplica:", 1)[1].split()[0].split(":")[-1]
        for key, role in (("ProxyActor", "serve proxy"), ("ServeController", "serve controller"),
                          ("raylet", "raylet"), ("gcs_server", "gcs"), ("log_monitor", "ray log monitor"),
                          ("dashboard", "ray dashboard"), ("DashboardAgent", "ray dashboard"), ("ray::", "other ray workers")):  # fmt: skip
            if key in title:
                return role
        return "other"

    def snapshot(self) -> tuple[float, float, dict[int, tuple[str, float]]]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq
        me = psutil.Process()
        ours = {}
        for p in [me, *me.children(recursive=True)]:
            try:
                c = p.cpu_times()
                ours[p.pid] = (self.role(p), c.user + c.system)
            except psutil.Error:
                continue
        return time.monotonic(), busy, ours

    @staticmethod
    def between(a, b) -> dict[str, Any]:
        """Cores used per role between two snapshots."""
        seconds = b[0] - a[0]
        roles: Counter = Counter()
        for pid, (role, cpu) in b[2].items():
            roles[role] += cpu - (a[2][pid][1] if pid in a[2] else 0.0)
        ours = sum(roles.values())
        return {
            "foreign_cores": round(max(0.0, (b[1] - a[1]) - ours) / seconds, 2),
            "ours_cores": {r: round(v / seconds, 2) for r, v in sorted(roles.items())},
        }


def wait_for_quiet(meter: CpuMeter, threshold: float, max_wait_s: float) -> dict[str, Any]:
    """Wait until the machine is quiet (see the module docstring); report what was seen."""
    started = time.monotonic()
    while True:
        load1 = os.getloadavg()[0]
        a = meter.snapshot()
        time.sleep(5)
        foreign = meter.between(a, meter.snapshot())["foreign_cores"]
        quiet = load1 < threshold or foreign < 0.1
        waited = time.monotonic() - started
        if quiet or waited > max_wait_s:
            seen = {"load1": round(load1, 2), "foreign_cores": foreign, "waited_s": round(waited), "quiet": quiet}
            print(f"  machine: {seen}", flush=True)
            return seen
        print(f"  waiting for a quiet machine: load {load1:.2f}, other processes {foreign:.2f} cores", flush=True)
        time.sleep(10)


def measure(load: LoadGenerator, meter: CpuMeter, **job: Any) -> dict[str, Any]:
    load1 = os.getloadavg()[0]
    a = meter.snapshot()
    result = load.run(**job)
    cpu = meter.between(a, meter.snapshot())
    # CPU milliseconds per answered request, by role: cores used over the level times the window's seconds per answer.
    per_request = {r: round(1000 * c * result["seconds"] / max(1, result["ok"]), 3) for r, c in cpu["ours_cores"].items()}
    return {**result, "load1_at_start": round(load1, 2), **cpu, "cpu_ms_per_request": per_request}


# ------------------------------------------------------------------------ model and ceiling


def train_model(work: Path, rows: int, port: int, width: int) -> tuple[Any, Any, list[str]]:
    spec = importlib.util.spec_from_file_location("quickstart_generate", QUICKSTART / "generate_data.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.generate(work / "data", rows=rows, shards=4, seed=0)
    overrides = [
        f"data.path={work / 'data'}",
        f"run_dir={work / 'runs'}",
        "train.num_workers=1",
        "train.cpus_per_worker=1",
        "train.epochs=4",
        f"model.hidden_sizes=[{width},{width}]",
        f"serve.port={port}",
    ]
    cfg = load_config(QUICKSTART / "pipeline.yaml", overrides)
    run_pipeline(cfg, ["data", "train", "register", "compress"])
    return cfg, configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name), overrides


def sample_rows(n: int, seed: int) -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location("quickstart_generate", QUICKSTART / "generate_data.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator.make_table(n, seed).drop(["churned"]).to_pylist()


def ceiling(model, request_model, rows: list[dict[str, Any]], sizes: list[int], seconds: float) -> dict[str, Any]:
    """`predict_rows` on columns built the way the replica builds them, from validated rows."""
    out: dict[str, Any] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for n in sizes:
            valid = request_model.model_validate({"rows": rows[:n]}).rows
            columns = {c: [r[c] for r in valid] for c in model.features.input_columns}
            for _ in range(20):
                predict_rows(model, columns)
            times, end = [], time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                predict_rows(model, columns)
                times.append(time.perf_counter() - t)
            median = statistics.median(times)
            out[f"{n}_rows_{threads}_threads"] = {"p50_ms": round(1000 * median, 3), "rows_per_s": round(n / median)}
    torch.set_num_threads(1)
    return out


# ----------------------------------------------------------------------------- plain server


def plain_app(bundle_dir: str, max_rows: int):
    """What a user would write: one FastAPI process around the same bundle and `predict_rows`."""
    from fastapi import FastAPI

    torch.set_num_threads(1)
    model = load_bundle(Path(bundle_dir))
    request_model = make_request_model(model.features, max_rows)
    precision = "int8" if model.spec.quantization else "fp32"
    api = FastAPI()

    @api.post("/predict", response_model=PredictResponse)
    async def predict(body: request_model) -> dict[str, Any]:
        columns = {name: [row[name] for row in body.rows] for name in model.features.input_columns}
        return {"model": "plain", "version": "1", "precision": precision, "predictions": predict_rows(model, columns)}

    return api


def serve_plain(bundle_dir: str, port: int, max_rows: int) -> None:
    import uvicorn

    uvicorn.run(plain_app(bundle_dir, max_rows), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def ray_worker_niceness() -> int:
    """The niceness Ray gives its workers (Serve's proxy and replicas among them; 15 by default):
    the highest among Ray's processes, whose agents run at 0."""
    seen = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.cmdline() and p.cmdline()[0].startswith("ray::"):
                seen.append(p.nice())
        except psutil.Error:
            continue
    return max(seen, default=15)


def start_plain(bundle_dir: Path, port: int, max_rows: int, meter: CpuMeter) -> tuple[mp.Process, int]:
    """The plain server runs at the niceness of Ray's workers, so that it and raymlp's replicas
    share the two cores with the load client on the same terms."""
    process = mp.get_context("spawn").Process(target=serve_plain, args=(str(bundle_dir), port, max_rows), daemon=True)
    process.start()
    nice = ray_worker_niceness()
    psutil.Process(process.pid).nice(nice)
    meter.named[process.pid] = "plain server"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, nice
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the plain server did not start")


# ---------------------------------------------------------------------------------- raymlp


def start_raymlp(base: list[str], overrides: list[str], keys: list[str], monitor_metrics: bool = True) -> str:
    """Deploy a fresh app from the quickstart config with `overrides`; its URL once every replica runs."""
    cfg = load_config(QUICKSTART / "pipeline.yaml", [*base, *overrides])
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    monitor = cfg.monitor.model_copy(update={"metrics": monitor_metrics})
    if cfg.name in serve.status().applications:
        serve.delete(cfg.name)
    url = deploy(build_model_app(cfg.serve, monitor, target, keys), cfg.serve, name=cfg.name, timeout_s=180)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        app = serve.status().applications[cfg.name]
        if app.status == "RUNNING" and all(set(d.replica_states) == {"RUNNING"} for d in app.deployments.values()):
            break
        time.sleep(0.5)
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    answer = requests.post(f"{url}/predict", json={"rows": sample_rows(2, 3)}, headers=headers, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2, answer.text
    if keys:
        assert requests.post(f"{url}/predict", json={"rows": sample_rows(1, 3)}, timeout=30).status_code == 401
    return url


def running_replicas(name: str) -> dict[str, int]:
    deployments = serve.status().applications[name].deployments
    return {d: s.replica_states.get("RUNNING", 0) for d, s in deployments.items()}


async def handle_drive(app_name: str, columns: dict[str, list[Any]], concurrency: int, duration_s: float,
                       warmup_s: float) -> dict[str, Any]:  # fmt: skip
    """The model deployment called through a DeploymentHandle from this process: no HTTP proxy, no
    gateway, no request validation; what is left is Serve's routing and the replica. Needs an
    app of the split topology: a fused one has no model deployment."""
    handle = serve.get_deployment_handle("model", app_name=app_name)
    begin = time.perf_counter()
    start, end = begin + warmup_s, begin + warmup_s + duration_s
    latencies: list[float] = []
    errors = Counter()

    async def caller() -> None:
        while time.perf_counter() < end:
            sent = time.perf_counter()
            try:
                await handle.predict.remote(columns)
            except Exception as e:  # a benchmark counts every failure, whatever its type
                errors[type(e).__name__] += 1
                continue
            if start <= (done := time.perf_counter()) <= end:
                latencies.append(done - sent)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    latencies.sort()
    n = len(latencies)
    return {
        "concurrency": concurrency,
        "qps": round(n / duration_s, 1),
        "p50_ms": round(1000 * latencies[n // 2], 2) if n else None,
        "p99_ms": round(1000 * latencies[min(n - 1, int(0.99 * n))], 2) if n else None,
        "errors": sum(errors.values()),
    }


class Bench:
    """What every phase shares: the load generator, the CPU meter and the request bodies."""

    def __init__(self, args, load: LoadGenerator, meter: CpuMeter, key: str | None):
        self.args, self.load, self.meter, self.key = args, load, meter, key
        single, batch = sample_rows(1, 1), sample_rows(BATCH_ROWS, 2)
        columns = {name: [row[name] for row in batch] for name in batch[0]}
        self.bodies = {  # workload -> (path, body)
            "single_row": ("/predict", json.dumps({"rows": single}).encode()),
            ROWS: ("/predict", json.dumps({"rows": batch}).encode()),
            COLUMNS: ("/predict/columns", json.dumps({"columns": columns}).encode()),
        }

    def quiet(self) -> dict[str, Any]:
        return wait_for_quiet(self.meter, self.args.quiet_load, self.args.max_wait_s)

    def level(self, port: int, workload: str, concurrency: int, key: str | None, duration: float | None = None,
              path: str | None = None) -> dict[str, Any]:  # fmt: skip
        """`path` (a GET) instead of the workload's request, when given."""
        path, body = (path, None) if path else self.bodies[workload]
        result = measure(
            self.load,
            self.meter,
            port=port,
            request=http_request(port, path, body, key),
            concurrency=concurrency,
            duration_s=duration or self.args.duration,
            warmup_s=self.args.warmup,
        )
        rows = 1 if workload == "single_row" else BATCH_ROWS
        result["rows_per_s"] = round(result["qps"] * rows)
        print(f"    {workload if body else path:>12} c={concurrency:<3} qps {result['qps']:8.1f}  rows/s {result['rows_per_s']:8d}  "
              f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  errors {result['errors']}  "
              f"other procs {result['foreign_cores']} cores", flush=True)  # fmt: skip
        return result

    def sweep(self, port: int, key: str | None, workloads: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"machine_before": self.quiet()}
        for workload in workloads or list(self.bodies):
            out[workload] = {str(c): self.level(port, workload, c, key) for c in self.args.levels}
        return out


def autoscaling(bench: Bench, base: list[str], keys: list[str], name: str, port: int, high: int) -> dict[str, Any]:
    """A load step against `num_replicas: [1, high]` (raymlp scales the gateway and the model
    deployment alike): per deployment, seconds from the step to `high` RUNNING replicas, and from
    the end of the step back to one."""
    overrides = [f"serve.num_replicas=[1,{high}]", "serve.autoscaling.upscale_delay_s=1",
                 "serve.autoscaling.downscale_delay_s=5"]  # fmt: skip
    start_raymlp(base, overrides, keys)
    seen = bench.quiet()
    workload, step = bench.args.autoscale_workload, bench.args.autoscale_concurrency
    timeline: list[tuple[float, dict[str, int]]] = []
    t0 = time.monotonic()

    def poll_until(done, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = running_replicas(name)
            if not timeline or timeline[-1][1] != counts:
                timeline.append((round(time.monotonic() - t0, 2), counts))
            if done(counts):
                return
            time.sleep(0.25)

    bench.load.start(port=port, request=http_request(port, *bench.bodies[workload], keys[0]),
                     concurrency=step, duration_s=600, warmup_s=0.0)  # fmt: skip
    poll_until(lambda c: min(c.values()) >= high, bench.args.autoscale_timeout)
    time.sleep(5)  # hold the load at the top a moment
    bench.load.stop.set()
    load_result = bench.load.result()
    stopped = round(time.monotonic() - t0, 2)
    poll_until(lambda c: max(c.values()) <= 1, 180)

    def first(deployment: str, after: float, want) -> float | None:
        return next((round(t - after, 1) for t, c in timeline if t >= after and want(c[deployment])), None)

    deployments = sorted(timeline[0][1])
    return {
        "overrides": overrides,
        "machine_before": seen,
        "load_step": {"workload": workload, **load_result},
        "seconds_to_max": {d: first(d, 0.0, lambda n: n >= high) for d in deployments},
        "seconds_back_to_1_after_load_stops": {d: first(d, stopped, lambda n: n <= 1) for d in deployments},
        "max_replicas_seen": {d: max(c[d] for _, c in timeline) for d in deployments},
        "load_stopped_at_s": stopped,
        "timeline_s_running": timeline,
    }


# ------------------------------------------------------------------------------------ main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(temp_dir: Path, num_cpus: int, ingress: str) -> None:
    """A local Ray whose Serve ingress is set as `init_ray` sets an embedded one's."""
    os.environ.update(serve_ingress_env(ingress))
    ray.init(address="local", num_cpus=num_cpus, object_store_memory=512 * 1024**2, _temp_dir=str(temp_dir),
             include_dashboard=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32, 64])
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each level")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of training data")
    parser.add_argument("--width", type=int, default=256,
                        help="hidden width (two hidden layers): wide enough for int8 to matter (benchmarks/quantize.py)")
    parser.add_argument("--wide-width", type=int, default=1024,
                        help="a second model of this width for int8 against fp32, where the forward pass outweighs JSON (0: none)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="Ray's logical CPUs")
    parser.add_argument("--autoscale-max", type=int, default=3)
    parser.add_argument("--autoscale-concurrency", type=int, default=32)
    parser.add_argument("--autoscale-workload", default=ROWS, choices=["single_row", ROWS, COLUMNS])
    parser.add_argument("--autoscale-timeout", type=float, default=90.0, help="longest load step, seconds")
    parser.add_argument("--quiet-load", type=float, default=0.7)
    parser.add_argument("--max-wait-s", type=float, default=600.0, help="longest wait for a quiet machine per phase")
    parser.add_argument("--skip-proxy", action="store_true", help="skip the run behind Serve's Python proxy")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve_load_cpu.json")
    args = parser.parse_args()
    if not {8, 32} <= set(args.levels):
        parser.error("--levels must include 8 and 32: the targets and the tuning probes are read there")
    began = time.monotonic()

    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    temp_dir = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths have a length limit
    meter = CpuMeter()
    load = LoadGenerator()
    meter.named[load.process.pid] = "load client"
    machine = describe("ray", "torch", "torchao", "fastapi", "uvicorn", "pydantic", "mlflow")
    machine["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()  # AVX2 has no fast int8 path
    report: dict[str, Any] = {"benchmark": "serve_load", "machine": machine, "args": {k: str(v) for k, v in vars(args).items()}}
    plain = None
    try:
        report["setup_machine"] = wait_for_quiet(meter, args.quiet_load, args.max_wait_s)
        start_ray(temp_dir, args.num_cpus, "haproxy")
        port = free_port()
        cfg, target, base = train_model(work, args.rows, port, args.width)
        client = mlflow.MlflowClient(target.tracking_uri)
        version = resolve_version(client, target.model_name, cfg.serve.model_version)
        accepted = version.tags.get(INT8_ACCEPTED_TAG) == "true"
        keys = resolve_api_keys(cfg.serve.auth, Path(cfg.run_dir))
        bench = Bench(args, load, meter, keys[0])
        bundles = {p: download_bundle(version, quantized=p == "int8", dst=work / f"bundle_{p}")[0] for p in ("int8", "fp32")}
        report["model"] = {"name": target.model_name, "version": str(version.version), "int8_accepted": accepted,
                           "hidden_sizes": cfg.model.hidden_sizes, "training_rows": args.rows,
                           "compress": {k: v for k, v in client.get_run(version.run_id).data.metrics.items() if k.startswith("compress.")}}  # fmt: skip
        # What the default `serve.precision` comes to on this machine, timed as a replica times it.
        served = load_served_model(version, cfg.serve.precision)[1]
        report["model"]["served_precision"] = served
        print(f"model v{version.version}: int8 accepted {accepted}; raymlp's default serves {served}", flush=True)

        print("ceiling (in-process predict_rows)", flush=True)
        report["ceiling"] = {"machine_before": bench.quiet()}
        rows = sample_rows(BATCH_ROWS, 2)
        for precision, bundle in bundles.items():
            model = load_bundle(bundle)
            request_model = make_request_model(model.features, cfg.serve.max_rows)
            report["ceiling"][precision] = ceiling(model, request_model, rows, [1, 8, 32, 64, BATCH_ROWS], 3.0)
            print(f"  {precision}: {report['ceiling'][precision]}", flush=True)

        print(f"plain FastAPI + uvicorn ({served})", flush=True)
        plain_port = free_port()
        plain, nice = start_plain(bundles[served], plain_port, cfg.serve.max_rows, meter)
        report["plain"] = {"precision": served, "niceness": nice, **bench.sweep(plain_port, None, ["single_row", ROWS])}
        plain.terminate()
        plain.join(10)
        plain = None

        print("raymlp, default serve settings", flush=True)
        start_raymlp(base, [], keys)
        report["raymlp_default"] = {"overrides": [], "precision": served, **bench.sweep(port, keys[0])}

        print("where time goes", flush=True)
        where: dict[str, Any] = {"machine_before": bench.quiet()}
        where["gateway_only_GET_healthz_c32"] = bench.level(port, "single_row", 32, None, path="/healthz")
        batch_rows = make_request_model(load_bundle(bundles[served]).features, BATCH_ROWS).model_validate({"rows": rows}).rows
        probes = {"single_row": 32, ROWS: 8}
        for label, body_rows in (("single_row", batch_rows[:1]), (ROWS, batch_rows)):
            a = meter.snapshot()
            columns = {name: [row[name] for row in body_rows] for name in body_rows[0]}
            r = asyncio.run(handle_drive(cfg.name, columns, probes[label], args.duration, args.warmup))
            where[f"handle_direct_{label}_c{probes[label]}"] = r = {**r, "rows_per_s": round(r["qps"] * len(body_rows)),
                                                                    **meter.between(a, meter.snapshot())}  # fmt: skip
            print(f"    handle {label} c={probes[label]}: {r}", flush=True)
        start_raymlp(base, [], keys, monitor_metrics=False)
        where["metrics_off"] = {w: {str(c): bench.level(port, w, c, keys[0])} for w, c in probes.items()}
        report["where_time_goes"] = where

        print("raymlp, tuning", flush=True)
        candidates = {
            "batch64_wait1ms": ["serve.batching.max_batch_size=64", "serve.batching.wait_timeout_s=0.001"],
            "wait0": ["serve.batching.wait_timeout_s=0"],
            "ongoing128_batch64": ["serve.max_ongoing_requests=128", "serve.batching.max_batch_size=64"],
            "replicas2": ["serve.num_replicas=2"],
            "replicas2_wait0": ["serve.num_replicas=2", "serve.batching.wait_timeout_s=0"],
            "fused": ["serve.topology=fused"],
            "fused_replicas2": ["serve.topology=fused", "serve.num_replicas=2"],
        }
        d = report["raymlp_default"]
        scores = {"default": {w: d[w][str(c)]["rows_per_s"] for w, c in probes.items()}}
        tuning: dict[str, Any] = {"machine_before": bench.quiet()}
        for label, overrides in candidates.items():
            print(f"  {label}: {overrides}", flush=True)
            start_raymlp(base, overrides, keys)
            tuning[label] = {"overrides": overrides, **{w: bench.level(port, w, c, keys[0], args.duration / 2) for w, c in probes.items()}}
            scores[label] = {w: tuning[label][w]["rows_per_s"] for w in probes}
        # One score for both workloads: the geometric mean of each one's gain over the default.
        gain = {k: (v["single_row"] / scores["default"]["single_row"] * v[ROWS] / scores["default"][ROWS]) ** 0.5
                for k, v in scores.items()}  # fmt: skip
        best = max(gain, key=gain.get)
        tuning["gain_over_default"] = {k: round(v, 3) for k, v in gain.items()}
        tuning["best"] = best
        report["tuning_probes"] = tuning
        if best != "default":
            print(f"raymlp tuned: {best}", flush=True)
            start_raymlp(base, candidates[best], keys)
            report["raymlp_tuned"] = {"label": best, "overrides": candidates[best], "precision": served,
                                      **bench.sweep(port, keys[0])}  # fmt: skip
        else:
            report["raymlp_tuned"] = {"label": "default", "note": "no candidate beat the default settings"}

        tuned = candidates.get(best, [])
        report["int8_vs_fp32"] = precisions(bench, port, base, tuned, keys[0], version, work / "precision", args.width)
        if args.wide_width:
            print(f"a second model, two hidden layers of {args.wide_width}, for int8 against fp32", flush=True)
            wide_cfg, wide_target, wide_base = train_model(work / "wide", args.rows, port, args.wide_width)
            wide_version = resolve_version(mlflow.MlflowClient(wide_target.tracking_uri), wide_target.model_name,
                                           wide_cfg.serve.model_version)  # fmt: skip
            wide_key = resolve_api_keys(wide_cfg.serve.auth, Path(wide_cfg.run_dir))[0]
            report["int8_vs_fp32_wide"] = precisions(bench, port, wide_base, tuned, wide_key, wide_version,
                                                     work / "wide_precision", args.wide_width)  # fmt: skip

        print("autoscaling", flush=True)
        report["autoscaling"] = autoscaling(bench, base, keys, cfg.name, port, args.autoscale_max)
        print(f"  {({k: v for k, v in report['autoscaling'].items() if k != 'timeline_s_running'})}", flush=True)

        if not args.skip_proxy:
            print("the default app on a Ray started with runtime.serve_ingress: proxy", flush=True)
            serve.shutdown()
            ray.shutdown()
            start_ray(Path(tempfile.mkdtemp(prefix="rt", dir="/tmp")), args.num_cpus, "proxy")
            start_raymlp(base, [], keys)
            proxy: dict[str, Any] = {"runtime.serve_ingress": "proxy", "machine_before": bench.quiet()}
            proxy |= {w: {str(c): bench.level(port, w, c, keys[0]) for c in (1, 8, 32)} for w in bench.bodies}
            report["python_proxy"] = proxy
    finally:
        if plain is not None:
            plain.terminate()
        load.close()
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(temp_dir, ignore_errors=True)

    report["targets"] = targets(report)
    report["wall_s"] = round(time.monotonic() - began)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["targets"], indent=2))
    print(f"saved {args.out}")


def precisions(bench: Bench, port: int, base: list[str], tuned: list[str], key: str, version: ModelVersion,
               dst: Path, width: int) -> dict[str, Any]:  # fmt: skip
    """int8 against fp32 with 1,024-row requests, on the tuned settings: through raymlp
    (`serve.precision` forced) and in process (the ceiling, one thread), for one model width."""
    out: dict[str, Any] = {"hidden_width": width, "overrides": tuned,
                           "int8_accepted": version.tags.get(INT8_ACCEPTED_TAG) == "true"}  # fmt: skip
    if not out["int8_accepted"]:
        return out | {"note": "the compress stage did not accept int8; nothing to compare"}
    rows = sample_rows(BATCH_ROWS, 2)
    for precision in ("int8", "fp32"):
        model = load_bundle(download_bundle(version, quantized=precision == "int8", dst=dst / precision)[0])
        request_model = make_request_model(model.features, BATCH_ROWS)
        out[f"ceiling_{precision}"] = ceiling(model, request_model, rows, [BATCH_ROWS], 1.0)[f"{BATCH_ROWS}_rows_1_threads"]
        print(f"raymlp serve.precision={precision}, width {width}, 1,024-row requests", flush=True)
        start_raymlp(base, [*tuned, f"serve.precision={precision}"], [key])
        sweep = bench.sweep(port, key, [ROWS, COLUMNS])
        out[precision] = {workload: sweep[workload] for workload in (ROWS, COLUMNS)}
    return out


def int8_gain(c: dict[str, Any]) -> dict[str, Any]:
    """The int8 target for one model width, per form of the batched workload: best rows/s over the
    levels, int8 against fp32."""
    if not c["int8_accepted"]:
        return {"hidden_width": c["hidden_width"], "pass": False, "note": c["note"]}
    out: dict[str, Any] = {"hidden_width": c["hidden_width"],
                           "ceiling_ratio_1024_rows_1_thread": round(c["ceiling_int8"]["rows_per_s"] / c["ceiling_fp32"]["rows_per_s"], 3)}  # fmt: skip
    for workload in (ROWS, COLUMNS):
        int8, fp32 = c["int8"][workload], c["fp32"][workload]
        best_int8, best_fp32 = max(v["rows_per_s"] for v in int8.values()), max(v["rows_per_s"] for v in fp32.values())
        out[workload] = {
            "rows_per_s_by_level": {n: {"int8": int8[n]["rows_per_s"], "fp32": fp32[n]["rows_per_s"]} for n in int8},
            "best_int8": best_int8, "best_fp32": best_fp32, "ratio": round(best_int8 / best_fp32, 3),
            "target": ">= 1.5", "pass": best_int8 >= 1.5 * best_fp32,
        }  # fmt: skip
    return out


def targets(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, for the default settings and the tuned ones; the 1,024-row one for
    both forms of the request."""
    ceiling_rows = max(v["rows_per_s"] for k, v in r["ceiling"][r["raymlp_default"]["precision"]].items() if k.startswith(f"{BATCH_ROWS}_"))
    plain_qps = r["plain"]["single_row"]["32"]["qps"]
    out: dict[str, Any] = {}
    for side in ("raymlp_default", "raymlp_tuned"):
        s = r[side] if "single_row" in r[side] else r["raymlp_default"]
        out[side] = {
            "single_row_qps_c32_vs_plain": {"raymlp": s["single_row"]["32"]["qps"], "plain": plain_qps,
                                            "ratio": round(s["single_row"]["32"]["qps"] / plain_qps, 3),
                                            "target": ">= 1.0", "pass": s["single_row"]["32"]["qps"] >= plain_qps},
            "single_row_p99_ms_c8": {"raymlp": s["single_row"]["8"]["p99_ms"], "target": "<= 50",
                                     "pass": (s["single_row"]["8"]["p99_ms"] or 1e9) <= 50},
        }  # fmt: skip
        for workload in (ROWS, COLUMNS):
            best = max(v["rows_per_s"] for v in s[workload].values())
            out[side][f"{workload}_rows_per_s_vs_ceiling"] = {"raymlp_best_level": best, "ceiling": ceiling_rows,
                                                              "ratio": round(best / ceiling_rows, 3), "target": ">= 0.5",
                                                              "pass": best >= 0.5 * ceiling_rows}  # fmt: skip
    for side in ("int8_vs_fp32", "int8_vs_fp32_wide"):
        if side in r:
            out[side] = int8_gain(r[side])
    proxy = r.get("python_proxy", {})
    if "single_row" in proxy:
        out["python_proxy"] = {
            "single_row_qps_c32": proxy["single_row"]["32"]["qps"],
            "vs_plain": round(proxy["single_row"]["32"]["qps"] / plain_qps, 3),
            "raymlp_default_over_it": round(r["raymlp_default"]["single_row"]["32"]["qps"] / proxy["single_row"]["32"]["qps"], 3),
            "single_row_p99_ms_c8": proxy["single_row"]["8"]["p99_ms"],
            "rows_1024_rows_per_s_c8_vs_ceiling": round(proxy[ROWS]["8"]["rows_per_s"] / ceiling_rows, 3),
        }  # fmt: skip
    a = r["autoscaling"]
    out["autoscaling"] = {"seconds_to_max": a["seconds_to_max"], "seconds_back_to_1": a["seconds_back_to_1_after_load_stops"],
                          "max_replicas_seen": a["max_replicas_seen"], "target": "measured and reported"}  # fmt: skip
    return out


if __name__ == "__main__":
    main()
