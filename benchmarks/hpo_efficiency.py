"""HPO efficiency: TPE + ASHA against random search without early stopping, through raymlp's tune stage.

    python benchmarks/hpo_efficiency.py --task clusters --trials 24 --epochs 6 --seeds 1,2,3

Task (`--task clusters`, the default): scikit-learn's `make_classification`, generated here (no
download): 100,000 rows of 32 features (16 informative, 8 redundant), 8 classes of 3 Gaussian
clusters each, 2% of labels flipped; an 80/20 train/validation split; metric valid_accuracy. The
MLP's search space is wide on purpose, so that a bad value really hurts and a good one costs:
`train.lr` log-uniform over 1e-5..0.3, `model.hidden_sizes` in {[32], [256, 256], [512, 512, 512]}
(an epoch of the largest takes 5-10x the smallest's), `train.batch_size` in {64, 256, 1024},
`model.dropout` in 0..0.5. The LR schedule and early stopping are off (constant LR, every epoch
run), so that only ASHA stops trials. Epochs, not Ray Train's start-up (~25-35 s a trial here),
should dominate a trial, as they do where search is worth running; the tasks of the earlier runs
did not: `--task digits` (the digits example's CNN on 1797 images, whose 6 epochs take ~3 s) and
`--task churn` (the quickstart data, whose metric is flat: 17 of 24 pilot trials within 0.003 AUC).

Every trial is a full Ray Train V2 run (1 worker of 1 CPU, shard cached in the worker) launched by
raymlp's tune stage, 2 trials at a time, on one embedded Ray. Arms, same trial budget (`--trials`)
and the same seed for each pair: (tpe_asha) `tune.searcher: optuna` (TPE) with `tune.scheduler:
asha` (grace 1 epoch, reduction factor 4: rungs at epochs 1 and 4); (random) `tune.searcher:
random`, `tune.scheduler: none`. Seeds run one pair at a time, the arm that goes first
alternating, so that load from other work on the machine falls on both. The data stage runs once;
each search calls the pipeline's tune path (`raymlp.pipeline._tune`) under an MLflow parent run.
Wall time covers that call: Tune's whole search (trial start-ups, training, teardown, collecting
results) and raymlp's logging of each trial to MLflow; not data preparation or Ray start-up.

Per search, from Tune's stored results (rows carry `timestamp`, whole seconds, and `time_total_s`;
a trial's start is placed at max(timestamp - time_total_s) over its rows, so a row's time is
within 1 s): time-to-target (seconds from the search start to the first reported epoch of any
trial at or above the target), trials started by then, epochs trained in total, and the best
metric reached. A search that never reaches the target counts its whole wall time as its
time-to-target (and is flagged). Pass: median time-to-target of tpe_asha <= 0.5 x that of random.

Target: the 90th percentile of the best epoch of every trial of two pilot random searches (seeds
100 and 101 of 10 trials, not used in the comparison; `--pilot 100,101` reruns them and prints the
quantiles), written into TARGETS before the comparison ran. One random trial reaches it with
probability ~0.1, so a 24-trial random search does with probability ~1 - 0.9^24 = 0.92. The budget
was 12 trials (0.72) until the run of 2026-12-03: random search then missed the target in 2 of 3
seeds in every full run, and a missed search's time-to-target, counted as its whole wall time, is
only a lower bound, which flattered random; with 24 trials both arms are timed to the target.

Ray gets the environment raymlp gives its embedded Ray: the state API pointed at this cluster
(`RAY_API_SERVER_ADDRESS`), so that the placement groups of trials that Tune stops are freed even
when another Ray runs on the machine, and Ray Train's preemption watcher off.

Also measured, with Ray Tune alone (no training): Tune's per-trial overhead with Ray's OptunaSearch
and with raymlp's TPESearch (which rebuilds an in-memory study at every suggestion) against
BasicVariantGenerator, 100 trials of a trivial function (one report, then return) at the same
concurrency over the same tiny space; the time the searchers' own calls take is timed apart.
Prints and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray import tune
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from machine import describe
from sklearn.datasets import make_classification

from raymlp.config import PipelineConfig, load_config, parse_config, with_values
from raymlp.data import prepare_data
from raymlp.data.sources import write_shards
from raymlp.lifecycle.tracking import configure_tracking, pipeline_run
from raymlp.pipeline import _tune
from raymlp.runtime import EMBEDDED_TRAIN_ENV, free_ports, state_api_env
from raymlp.tune.space import decode_params
from raymlp.tune.tpe import TPESearch

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"

TASKS = {
    "clusters": {
        "config": {
            "name": "hpo-clusters",
            "seed": 0,
            "data": {"path": "data", "label": "label", "task": "classification", "valid_fraction": 0.2},
            "features": {"scaler": "standard"},
            "model": {"name": "mlp", "hidden_sizes": [64, 64], "dropout": 0.1},
            "train": {"batch_size": 256, "lr": 0.003, "optimizer": "adamw"},
        },
        "metric": "valid_accuracy",
        "space": {
            "train.lr": {"type": "loguniform", "low": 1e-5, "high": 0.3},
            "model.hidden_sizes": {"type": "choice", "values": [[32], [256, 256], [512, 512, 512]]},
            "train.batch_size": {"type": "choice", "values": [64, 256, 1024]},
            "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        },
    },
    "digits": {
        "example": "digits",
        "metric": "valid_accuracy",
        "space": {
            "train.lr": {"type": "loguniform", "low": 1e-5, "high": 0.3},
            "model.channels": {"type": "choice", "values": [[4, 8], [16, 32], [32, 64]]},
            "train.batch_size": {"type": "choice", "values": [16, 64, 256]},
            "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        },
    },
    "churn": {
        "example": "quickstart",
        "metric": "valid_auc",
        "space": {
            "train.lr": {"type": "loguniform", "low": 1e-5, "high": 0.3},
            "model.hidden_sizes": {"type": "choice", "values": [[16], [64, 64], [256, 256]]},
            "train.batch_size": {"type": "choice", "values": [32, 128, 512]},
            "model.dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
        },
    },
}
TARGETS = {"clusters": 0.87311, "churn": 0.82448, "digits": 0.98275}
"""Per task: q90 of the per-trial best metric over the pilot random searches (seeds 100, 101, each
of 6-epoch trials). clusters (10 trials each): 0.87311, pilot trial bests 0.126-0.892, median 0.571;
digits (12 trials each): 0.98276 = 342 of 348 validation images; churn: 0.82448."""
PILOT = {"seeds": "100,101", "quantile": 0.9}
ARMS = {
    "tpe_asha": {"tune.searcher": "optuna", "tune.scheduler": "asha"},
    "random": {"tune.searcher": "random", "tune.scheduler": "none"},
}


def build_config(task: str, work: Path, args: argparse.Namespace) -> PipelineConfig:
    spec = TASKS[task]
    if "example" in spec:
        base = load_config(REPO / "examples" / spec["example"] / "pipeline.yaml")
    else:
        base = parse_config(spec["config"])
    return with_values(
        base,
        {
            "data.path": str(work / "data"),
            "run_dir": str(work / "runs"),
            "train.num_workers": 1,
            "train.cpus_per_worker": 1,
            "train.epochs": args.epochs,
            "train.schedule": "constant",
            "train.early_stopping_patience": None,
            "train.cache_data": "always",
            "train.keep_checkpoints": 1,
            "tune.num_samples": args.trials,
            "tune.max_concurrent_trials": args.concurrency,
            "tune.grace_period": 1,
            "tune.metric": spec["metric"],
            "tune.space": spec["space"],
        },
    )


def generate_data(task: str, out: Path, rows: int) -> None:
    if task == "clusters":
        x, y = make_classification(
            n_samples=rows, n_features=32, n_informative=16, n_redundant=8, n_classes=8,
            n_clusters_per_class=3, class_sep=1.0, flip_y=0.02, random_state=0,
        )  # fmt: skip
        columns = {f"x{i:02d}": x[:, i].astype(np.float32) for i in range(x.shape[1])}
        write_shards(pa.table(columns | {"label": y.astype(np.int64)}), out, 4)
        return
    example = TASKS[task]["example"]
    spec = importlib.util.spec_from_file_location(f"{example}_data", REPO / "examples" / example / "generate_data.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    if task == "digits":
        generator.generate(out, shards=3, seed=0)
    else:
        generator.generate(out, rows=rows, shards=4, seed=0)


def search(cfg: PipelineConfig, data, arm: str, seed: int, storage: str) -> dict[str, Any]:
    """One search through the pipeline's tune path; its timeline, read back from Tune's results."""
    cfg = with_values(cfg, {"seed": seed, **ARMS[arm]})
    name = f"{arm}-seed{seed}"
    tracking = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    with pipeline_run(tracking, run_name=name):
        started = time.time()
        outcome = _tune(cfg, data, name, storage, resume=False)
        wall = time.time() - started
    return {
        "arm": arm,
        "seed": seed,
        "wall_s": wall,
        "max_epochs": cfg.train.epochs,
        "raymlp_best": outcome.best.metrics[cfg.tune.metric],
        "trials": read_trials(Path(storage) / name, started, cfg),
    }


def read_trials(path: Path, started: float, cfg: PipelineConfig) -> list[dict[str, Any]]:
    metric, analysis = cfg.tune.metric, tune.ExperimentAnalysis(str(path))
    frames, trials = analysis.trial_dataframes, []
    for trial in analysis.trials:
        df = frames.get(trial.trial_id)
        rows = [] if df is None or metric not in df else df.dropna(subset=[metric]).to_dict("records")
        params = decode_params(cfg.tune.space, {k: trial.config[k] for k in cfg.tune.space})
        record = {"trial_id": trial.trial_id, "status": trial.status, "params": params, "epochs": len(rows)}
        if rows:
            # `timestamp` is whole seconds; `time_total_s` is exact but counts from the trial's start.
            start = max(r["timestamp"] - r["time_total_s"] for r in rows)
            record |= {
                "start_s": round(start - started, 2),
                "epoch_s": [round(start + r["time_total_s"] - started, 2) for r in rows],
                "metric": [float(r[metric]) for r in rows],
            }
        trials.append(record)
    return trials


def summarize_search(run: dict[str, Any], target: float) -> dict[str, Any]:
    reported = [t for t in run["trials"] if t["epochs"]]
    hits = [s for t in reported for s, m in zip(t["epoch_s"], t["metric"]) if m >= target]
    at = min(hits) if hits else None
    best = max((max(t["metric"]) for t in reported), default=None)
    return {
        "arm": run["arm"],
        "seed": run["seed"],
        "wall_s": round(run["wall_s"], 1),
        "reached_target": at is not None,
        "time_to_target_s": at,
        "time_to_target_or_wall_s": round(run["wall_s"], 1) if at is None else at,
        "trials_started_at_target": None if at is None else sum(t["start_s"] <= at for t in reported),
        "trials_started": len(run["trials"]),
        "trials_without_report": len(run["trials"]) - len(reported),
        "trials_stopped_early": sum(t["epochs"] < run["max_epochs"] for t in reported),
        "epochs_trained": sum(t["epochs"] for t in reported),
        # A trial's start-up plus its first epoch: what each trial costs before ASHA can judge it.
        "median_first_report_s": median_of([{"s": t["epoch_s"][0] - t["start_s"]} for t in reported], "s"),
        "best_metric": best,
        "raymlp_best_metric": run["raymlp_best"],
        "raymlp_best_matches": best is not None and abs(best - run["raymlp_best"]) < 1e-9,
    }


def compare(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], float, dict[int, float]]:
    """Per arm, medians over seeds; the ratio of median times to target; and that ratio per seed."""
    arms = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        keys = ("wall_s", "time_to_target_or_wall_s", "trials_started_at_target", "epochs_trained",
                "median_first_report_s", "best_metric")  # fmt: skip
        arms[arm] = {k: median_of(mine, k) for k in keys} | {
            "seeds_reaching_target": sum(r["reached_target"] for r in mine),
            "seeds": len(mine),
        }
    ratio = arms["tpe_asha"]["time_to_target_or_wall_s"] / arms["random"]["time_to_target_or_wall_s"]
    by_seed = {(r["arm"], r["seed"]): r for r in rows}
    paired = {
        seed: round(by_seed["tpe_asha", seed]["time_to_target_or_wall_s"] / by_seed["random", seed]["time_to_target_or_wall_s"], 3)
        for _, seed in by_seed
    }
    return arms, ratio, paired


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return round(statistics.median(values), 4) if values else None


def overhead(trials: int, concurrency: int, repeats: int, storage: str) -> dict[str, Any]:
    """Tune alone: a trivial trainable under OptunaSearch, raymlp's TPESearch and
    BasicVariantGenerator."""

    def trivial(config: dict[str, Any]) -> None:
        tune.report({"score": config["x"] + config["y"]})

    spent = {"s": 0.0}

    def timed(searcher: type[Searcher]) -> type[Searcher]:
        """Adds up the time the searcher's own calls take (TPE's ask, report, tell), to tell them
        from Tune's."""

        class Timed(searcher):
            def suggest(self, trial_id):
                t = time.perf_counter()
                try:
                    return super().suggest(trial_id)
                finally:
                    spent["s"] += time.perf_counter() - t

            def on_trial_result(self, trial_id, result):
                t = time.perf_counter()
                super().on_trial_result(trial_id, result)
                spent["s"] += time.perf_counter() - t

            def on_trial_complete(self, trial_id, result=None, error=False):
                t = time.perf_counter()
                super().on_trial_complete(trial_id, result, error)
                spent["s"] += time.perf_counter() - t

        return Timed

    # Both limited to `concurrency` trials in flight (a Searcher through Tune's ConcurrencyLimiter,
    # the generator by its own max_concurrent). `random_unlimited` is Tune's default: every trial
    # created up front, only CPUs (1 per trial) bounding how many run, so Tune can start the next
    # trial while others still run, which a concurrency limit does not allow.
    searchers = {
        "random": lambda: BasicVariantGenerator(random_state=0, max_concurrent=concurrency),
        "optuna": lambda: timed(OptunaSearch)(metric="score", mode="max", seed=0),
        "raymlp_tpe": lambda: timed(TPESearch)(["score"], ["max"], seed=0, startup_trials=10),
        "random_unlimited": lambda: BasicVariantGenerator(random_state=0),
    }

    def run_once(name: str, n: int, label: str) -> dict[str, float]:
        spent["s"] = 0.0
        limit = None if name == "random_unlimited" else concurrency
        tuner_ = tune.Tuner(
            trivial,
            param_space={"x": tune.uniform(0, 1), "y": tune.choice([0, 1, 2])},
            tune_config=tune.TuneConfig(num_samples=n, max_concurrent_trials=limit, search_alg=searchers[name]()),
            run_config=tune.RunConfig(name=f"overhead-{name}-{label}", storage_path=storage, verbose=0),
        )
        t = time.perf_counter()
        grid = tuner_.fit()
        wall = time.perf_counter() - t
        run = {"wall_s": round(wall, 2), "s_per_trial": round(wall / n, 3), "errors": len(grid.errors)}
        if name in ("optuna", "raymlp_tpe"):
            run["searcher_calls_s"] = round(spent["s"], 3)
        return run

    for name in searchers:  # warm Ray's worker pool and imports; not recorded
        run_once(name, 2 * concurrency, "warmup")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in searchers}
    for rep in range(repeats):
        for name in searchers if rep % 2 == 0 else reversed(searchers):
            runs[name].append(run_once(name, trials, str(rep)))
            print(f"overhead {name} rep {rep}: {runs[name][-1]}", flush=True)
    median = {name: statistics.median(r["s_per_trial"] for r in rs) for name, rs in runs.items()}
    return {
        "trials": trials,
        "concurrency": concurrency,
        "runs": runs,
        "median_s_per_trial": median,
        "optuna_extra_s_per_trial": round(median["optuna"] - median["random"], 3),
        "optuna_over_random": round(median["optuna"] / median["random"], 2),
        "raymlp_tpe_over_random": round(median["raymlp_tpe"] / median["random"], 2),
    }


def start_ray(num_cpus: int) -> None:
    """One embedded Ray for everything, in its own temp dir, with the environment raymlp gives its
    own embedded Ray (the state API pointed at this Ray's dashboard, see `state_api_env`)."""
    [port] = free_ports(1)
    os.environ.update(state_api_env(port) | EMBEDDED_TRAIN_ENV)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=512 * 1024**2,
        include_dashboard=True,
        dashboard_port=port,
        _temp_dir=tempfile.mkdtemp(prefix="rh", dir="/tmp"),
    )


def pilot(cfg: PipelineConfig, data, seeds: str, storage: str) -> None:
    best = []
    for seed in (int(s) for s in seeds.split(",")):
        run = search(cfg, data, "random", seed, storage)
        mine = sorted(max(t["metric"]) for t in run["trials"] if t["epochs"])
        best += mine
        print(f"pilot seed {seed}: wall {run['wall_s']:.0f}s, trial bests {[round(b, 4) for b in mine]}")
    print(json.dumps({f"q{q}": float(np.quantile(best, q / 100)) for q in (50, 75, 80, 90, 95)}, indent=2))


def overhead_only(args: argparse.Namespace) -> None:
    """The overhead part on its own (minutes, where the searches take an hour), written into the
    existing result file's `overhead` with its own command, machine and time."""
    start_ray(args.concurrency)
    report = overhead(args.overhead_trials, args.concurrency, args.overhead_repeats, tempfile.mkdtemp(prefix="hpo-overhead-"))
    report |= {
        "command": f"python benchmarks/hpo_efficiency.py --overhead-only --overhead-trials {args.overhead_trials} "
        f"--overhead-repeats {args.overhead_repeats} --concurrency {args.concurrency}",
        "machine": describe("ray", "optuna", "torch"),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "hpo_efficiency"}
    results["overhead"] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(report, indent=2))
    print(f"saved {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="clusters")
    parser.add_argument("--rows", type=int, default=None, help="rows generated (clusters 100,000, churn 20,000)")
    parser.add_argument("--trials", type=int, default=24, help="trial budget of every search")
    parser.add_argument("--epochs", type=int, default=6, help="most epochs per trial (ASHA's max_t)")
    parser.add_argument("--seeds", default="1,2,3", help="search seeds; each runs both arms")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (and Ray's logical CPUs)")
    parser.add_argument("--overhead-trials", type=int, default=100, help="0 skips the overhead part")
    parser.add_argument("--overhead-repeats", type=int, default=1)
    parser.add_argument("--overhead-only", action="store_true",
                        help="measure only the overhead part and record it in --out beside the searches there")
    parser.add_argument("--target", type=float, default=None, help="override the task's target from TARGETS")
    parser.add_argument("--pilot", default=None, help=f"seeds of random searches to fix a target from ({PILOT['seeds']})")
    parser.add_argument("--out", type=Path, default=RESULTS / "hpo_efficiency_cpu.json")
    args = parser.parse_args()
    if args.overhead_only:
        return overhead_only(args)
    target = args.target if args.target is not None else TARGETS[args.task]
    if target is None and not args.pilot:
        parser.error(f"no target for --task {args.task}: run --pilot {PILOT['seeds']} and put its q90 in TARGETS")

    args.rows = args.rows or {"clusters": 100_000, "churn": 20_000}.get(args.task)
    work = Path(tempfile.mkdtemp(prefix="hpo-bench-"))
    generate_data(args.task, work / "data", args.rows)
    cfg = build_config(args.task, work, args)
    start_ray(args.concurrency)
    data = prepare_data(cfg.data, cfg.features, cfg.seed, work / "quarantine")
    storage = str(work / "ray_results")
    if args.pilot:
        return pilot(cfg, data, args.pilot, storage)

    earlier_overhead = json.loads(args.out.read_text()).get("overhead") if args.out.is_file() else None
    load_before, runs, rows = os.getloadavg(), [], []
    for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
        for arm in ARMS if i % 2 == 0 else reversed(ARMS):
            runs.append(search(cfg, data, arm, seed, storage))
            rows.append(summarize_search(runs[-1], target))
            print(json.dumps(rows[-1]), flush=True)
            # Saved as it goes: a run cut short keeps the searches it finished.
            args.out.parent.mkdir(parents=True, exist_ok=True)
            partial = {"benchmark": "hpo_efficiency", "partial": True, "searches": rows, "trials": runs}
            args.out.write_text(json.dumps(partial, indent=2, default=str))
    load_after_searches = os.getloadavg()

    arms, ratio, paired = compare(rows)
    if args.overhead_trials:
        overhead_report = overhead(args.overhead_trials, args.concurrency, args.overhead_repeats, storage)
    else:  # keep what an earlier --overhead-only run recorded there (Tune alone: its own command and time)
        overhead_report = earlier_overhead

    report = {
        "benchmark": "hpo_efficiency",
        "command": "python benchmarks/hpo_efficiency.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "pilot", "target")
        ),
        "machine": describe("ray", "optuna", "torch"),
        "load_average_1_5_15": {
            "before": [round(x, 2) for x in load_before],
            "after_searches": [round(x, 2) for x in load_after_searches],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
        "task": {
            "name": args.task,
            "example": TASKS[args.task].get("example"),
            "split_rows": data.num_rows,
            "metric": cfg.tune.metric,
            "target": target,
            "target_rule": f"q{PILOT['quantile'] * 100:.0f} of the per-trial best {cfg.tune.metric} over pilot "
            f"random searches (seeds {PILOT['seeds']}), fixed before the comparison",
        },
        "config": {
            "trials": args.trials,
            "epochs": args.epochs,
            "concurrency": args.concurrency,
            "ray_num_cpus": args.concurrency,
            "space": TASKS[args.task]["space"],
            "arms": ARMS,
            "asha": {"grace_period": cfg.tune.grace_period, "reduction_factor": 4, "max_t": args.epochs},
            "seeds": args.seeds,
            "model": cfg.model.model_dump(mode="json"),
            "train": cfg.train.model_dump(mode="json"),
            "wall_time_covers": "raymlp.pipeline._tune: Tune's search (trial start-up, training, teardown, "
            "results) and MLflow logging of the trials; not data preparation or Ray start-up",
            "workarounds": [
                "RAY_API_SERVER_ADDRESS set to this cluster's dashboard, so Ray Train's PlacementGroupCleaner "
                "frees the CPUs of trials Tune stops while other Ray clusters run on the machine",
            ],
        },
        "searches": rows,
        "median_over_seeds": arms,
        "time_to_target_ratio_tpe_asha_over_random": round(ratio, 3),
        "paired_ratio_by_seed": paired,
        "target_ratio": 0.5,
        "passed": ratio <= 0.5,
        "overhead": overhead_report,
        "trials": [{"arm": r["arm"], "seed": r["seed"], "trials": r["trials"]} for r in runs],
    }
    unreached = [f"{r['arm']} seed {r['seed']}" for r in rows if not r["reached_target"]]
    report["summary"] = (
        f"median time-to-target {cfg.tune.metric} >= {target}: tpe_asha {arms['tpe_asha']['time_to_target_or_wall_s']:.0f}s, "
        f"random {arms['random']['time_to_target_or_wall_s']:.0f}s, ratio {ratio:.2f}: "
        f"{'meets' if ratio <= 0.5 else 'does not meet'} the <= 0.5 target. "
        + (f"Never reached (counted as the whole wall time): {', '.join(unreached)}." if unreached else "Every search reached it.")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({"median_over_seeds": arms, "summary": report["summary"], "overhead": overhead_report}, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
