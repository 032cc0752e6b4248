"""Drift detected, a retrain triggered, a better challenger promoted and a worse one refused.

    python examples/drift/demo.py [--rows 20000] [--work /tmp/raymlp-drift-demo]

The quickstart's churn customers change between two months: monthly charges rise by 25 on average,
and customers become price-sensitive (the churn rule itself moves). On an embedded Ray:

1. Month 1: the pipeline trains version 1 on month-1 data, registers it as champion and serves
   it, drift monitoring on.
2. Month-1 traffic: the served window matches the training reference; no feature drifts.
3. Month-2 traffic: the replica's drift gauges (read from Ray's metrics export, as Prometheus would
   scrape them) show `monthly_charges` drifting; the true labels, sent later by request id, put
   version 1's live AUC under its 0.75 threshold.
4. `raymlp retrain --when drifted,degraded` on month-2 data: the offline check confirms the drift
   and the app reports the live AUC; the pipeline trains version 2, which beats version 1 on month-2
   validation rows: promoted, and the running app rolls over to it.
5. A retrain with a poor configuration (learning rate 1e-6, one epoch): registered, refused by the
   promotion policy, left as challenger; the app keeps serving version 2.

Where Prometheus is installed, `promtool` also checks the shipped config and alert rules.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import requests

from raymlp.config import load_config, with_values
from raymlp.data.sources import write_shards
from raymlp.monitor.retrain import retrain
from raymlp.pipeline import run_pipeline
from raymlp.serve.client import predict, send_feedback

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"
MONITORING = REPO / "clusters" / "monitoring"
STAGES = ["data", "train", "register"]


def month(rows: int, seed: int, shifted: bool) -> pa.Table:
    """Quickstart customers; in month 2 charges are higher and churn follows them."""
    spec = importlib.util.spec_from_file_location("quickstart_generate", QUICKSTART / "generate_data.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    table = generator.make_table(rows, seed)
    if not shifted:
        return table
    rng = np.random.default_rng(seed + 1)
    charges = table["monthly_charges"].to_numpy() + rng.normal(25.0, 5.0, rows)
    calls = table["support_calls"].to_numpy()
    logit = -2.0 + 0.09 * (charges - 85.0) + 0.2 * calls - 0.02 * table["tenure_months"].to_numpy()
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    table = table.set_column(table.schema.get_field_index("monthly_charges"), "monthly_charges", pa.array(charges.round(2)))
    return table.set_column(table.schema.get_field_index("churned"), "churned", pa.array(churned))


def served_drift() -> dict[str, float]:
    """raymlp's drift gauges as Ray exports them for Prometheus: every node's metrics agent, found
    through the service discovery file Ray keeps (what clusters/monitoring/prometheus.yml reads)."""
    discovery = Path(ray._private.worker._global_node.get_temp_dir_path()) / "prom_metrics_service_discovery.json"
    found: dict[str, float] = {}
    for group in json.loads(discovery.read_text()):
        for target in group["targets"]:
            text = requests.get(f"http://{target}/metrics", timeout=5).text
            for name, labels, value in re.findall(r"^ray_(raymlp_drift\w*|raymlp_drifted_features)\{([^}]*)\} (\S+)$", text, re.M):
                feature = re.search(r'feature="([^"]+)"', labels)
                key = f"{name}[{feature.group(1)}]" if feature else name
                found[key] = max(found.get(key, float("-inf")), float(value))
    return found


def wait_for_drift(want_drifted: bool, min_rows: int, timeout_s: float = 120.0) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = served_drift()
        if seen.get("raymlp_drift_window_rows", 0) >= min_rows and (seen.get("raymlp_drifted_features", 0) >= 1) == want_drifted:
            return seen
        if time.monotonic() > deadline:
            raise TimeoutError(f"the served drift gauges did not show drifted={want_drifted}: {seen}")
        time.sleep(2)


def send(url: str, key: str | None, table: pa.Table, name: str, per_request: int = 50) -> list[dict[str, object]]:
    """Predict `table`'s rows, each request with an id of its own; the labels to send for them later."""
    rows, labels, feedback = table.drop(["churned"]).to_pylist(), table["churned"].to_pylist(), []
    for start in range(0, len(rows), per_request):
        request_id = f"{name}-{start}"
        predict(url, rows[start : start + per_request], api_key=key, request_id=request_id)
        feedback.append({"request_id": request_id, "labels": labels[start : start + per_request]})
    return feedback


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows per month")
    parser.add_argument("--work", type=Path, default=None, help="folder for data and runs (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="raymlp-drift-demo-"))
    for name, seed, shifted in (("month1", 0, False), ("month2", 1, True)):
        write_shards(month(args.rows, seed, shifted), work / name, 4)
    window = min(2_000, args.rows // 4)
    overrides = [f"data.path={work / 'month1'}", f"run_dir={work / 'runs'}", "train.num_workers=1",
                 "tune.metric=valid_auc", "monitor.drift.interval_s=2", f"monitor.drift.window_rows={window}",
                 f"monitor.drift.min_rows={window // 2}", "monitor.feedback.enabled=true",
                 "monitor.feedback.thresholds={auc: 0.75}", f"monitor.feedback.min_rows={window // 2}"]  # fmt: skip
    cfg = load_config(QUICKSTART / "pipeline.yaml", overrides)

    print("1. month 1: train, register and serve version 1", flush=True)
    first = run_pipeline(cfg, [*STAGES, "serve"])
    url, key = first.endpoint, first.api_key
    print(f"   serving version {first.model_version} at {url}")

    print("2. month-1 traffic", flush=True)
    send(url, key, month(window, 10, shifted=False), "month1")
    calm = wait_for_drift(False, window)
    print(f"   drifted features: {calm['raymlp_drifted_features']:.0f}; monthly_charges PSI {calm['raymlp_drift_psi[monthly_charges]']:.3f}")

    print("3. month-2 traffic", flush=True)
    labels = send(url, key, month(window, 11, shifted=True), "month2")
    drifted = wait_for_drift(True, window)
    print(f"   drifted features: {drifted['raymlp_drifted_features']:.0f}; monthly_charges PSI "
          f"{drifted['raymlp_drift_psi[monthly_charges]']:.3f}, KS {drifted['raymlp_drift_ks[monthly_charges]']:.3f}")  # fmt: skip
    live = send_feedback(url, labels, api_key=key)
    version = first.model_version
    print(f"   labels sent later: live AUC {live['live'][version]['live_auc']:.3f} over {live['joined_rows']} rows; "
          f"past thresholds: {live['degraded'].get(version, 'none')}")  # fmt: skip

    print("4. retrain on month 2, when drifted or degraded", flush=True)
    better = retrain(cfg, str(work / "month2"), ("drifted", "degraded"), STAGES)
    print("   " + better.summary().replace("\n", "\n   "))
    print(f"   the app now answers with version {predict(url, month(1, 12, True).drop(['churned']).to_pylist(), api_key=key)['version']}")

    print("5. retrain with a poor configuration", flush=True)
    worse = retrain(with_values(cfg, {"train.lr": 1e-6, "train.epochs": 1}), str(work / "month2"), ("always",), STAGES)
    print("   " + worse.summary().replace("\n", "\n   "))
    print(f"   the app still answers with version {predict(url, month(1, 13, True).drop(['churned']).to_pylist(), api_key=key)['version']}")

    if shutil.which("promtool"):
        checked = subprocess.run(["promtool", "test", "rules", "alerts_test.yml", "alerts_stale_test.yml"], cwd=MONITORING,
                                 capture_output=True, text=True)  # fmt: skip
        print(f"promtool rule tests of clusters/monitoring: {'pass' if checked.returncode == 0 else checked.stdout}")
    return {"first": first, "calm": calm, "drifted": drifted, "live": live, "better": better, "worse": worse}


if __name__ == "__main__":
    main()
