"""raymlp's command line: thin wrappers over run_pipeline, the Serve app and the config loader."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from raymlp.config import ConfigError, load_config
from raymlp.config.load import config_help

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from ray.job_submission import JobSubmissionClient

    from raymlp.config import PipelineConfig
    from raymlp.pipeline import PipelineResult

USER_ERRORS = (ConfigError, ConnectionError, FileNotFoundError, LookupError, PermissionError, ValueError)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        return args.command(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_validate(args: argparse.Namespace) -> int:
    if args.explain:
        print("\n".join(config_help()))
        return 0
    if not args.config:
        raise ConfigError("", ["give a CONFIG to validate, or --explain to list every field"])
    cfg = load_config(args.config, args.set)
    print(f"{args.config}: valid pipeline {cfg.name!r}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from raymlp.pipeline import STAGES, run_pipeline
    from raymlp.runtime import init_ray, shutdown_ray

    cfg = load_config(args.config, args.set)
    stages = args.stages.split(",") if args.stages else list(STAGES)
    runtime = init_ray(cfg.runtime)
    result = run_pipeline(cfg, stages, resume=args.resume)
    print(_summary(result, cfg))
    if result.endpoint and runtime.embedded:
        if args.keep_serving:
            _wait_for_interrupt(result.endpoint)
        else:
            print("The app stopped with this process (embedded Ray). `raymlp serve CONFIG` keeps a model up.")
    shutdown_ray(runtime)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from raymlp.lifecycle.tracking import configure_tracking
    from raymlp.runtime import init_ray, shutdown_ray
    from raymlp.serve.app import build_model_app, deploy
    from raymlp.serve.security import resolve_api_keys

    cfg = load_config(args.config, args.set)
    runtime = init_ray(cfg.runtime)
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    api_keys = resolve_api_keys(cfg.serve.auth, Path(cfg.run_dir))
    url = deploy(build_model_app(cfg.serve, cfg.monitor, target, api_keys), cfg.serve, name=cfg.name)
    print(f"serving {target.model_name} at {url}/predict (OpenAPI docs: {url}/docs)")
    print(_auth_line(cfg))
    if runtime.embedded:
        _wait_for_interrupt(url)
    shutdown_ray(runtime)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from raymlp.serve.client import PredictError, predict

    text = Path(args.file).read_text() if args.file else args.rows
    rows = json.loads(text)
    try:
        print(json.dumps(predict(args.url, rows if isinstance(rows, list) else [rows], api_key=args.api_key), indent=2))
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    from raymlp.serve.client import PredictError, send_feedback

    path = Path(args.labels)
    readers = {".parquet": pyarrow.parquet.read_table, ".csv": pyarrow.csv.read_csv, ".jsonl": pyarrow.json.read_json}
    if path.suffix not in readers:
        raise ValueError(f"--labels: {path.name} is not .parquet, .csv or .jsonl")
    table = readers[path.suffix](path)
    missing = [c for c in (args.id_column, args.label_column) if c not in table.column_names]
    if missing:
        raise ValueError(f"--labels: {path.name} lacks columns {missing}; it has {table.column_names}")
    grouped: dict[str, list] = {}  # a request's rows in file order
    for request_id, label in zip(table[args.id_column].to_pylist(), table[args.label_column].to_pylist()):
        grouped.setdefault(str(request_id), []).append(label)
    try:
        result = send_feedback(args.url, [{"request_id": k, "labels": v} for k, v in grouped.items()], api_key=args.api_key)
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{result['joined_rows']} label rows joined; {len(result['unknown_request_ids'])} request ids unknown or "
          f"too old, {len(result['mismatched_request_ids'])} with another number of rows")  # fmt: skip
    print(json.dumps(result["live"], indent=2))
    for version, names in result["degraded"].items():
        print(f"version {version}: live {', '.join(names)} past monitor.feedback.thresholds")
    return 0


def cmd_predict_batch(args: argparse.Namespace) -> int:
    from raymlp.lifecycle.tracking import configure_tracking
    from raymlp.runtime import init_ray, shutdown_ray
    from raymlp.serve.batch import predict_batch

    cfg = load_config(args.config, args.set)
    runtime = init_ray(cfg.runtime)
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    report = predict_batch(
        target,
        args.input,
        args.output,
        Path(cfg.run_dir) / f"predict-{time.strftime('%Y%m%d-%H%M%S')}" / "quarantine",
        version=args.version or cfg.serve.model_version,
        precision=cfg.serve.precision,
        input_format=args.format,
        columns=args.columns.split(",") if args.columns else None,
        batch_size=args.batch_size,
        actors=tuple(int(n) for n in args.actors.split(",")) if args.actors else None,
        cpus_per_actor=args.cpus_per_actor,
        overwrite=args.overwrite,
    )
    print(report.summary())
    shutdown_ray(runtime)
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from raymlp.lifecycle.tracking import configure_tracking
    from raymlp.monitor.drift_check import drift_run
    from raymlp.runtime import init_ray, shutdown_ray

    cfg = load_config(args.config, args.set)
    runtime = init_ray(cfg.runtime)
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    check, out_dir = drift_run(target, cfg, args.data, args.version or cfg.serve.model_version, args.format)
    shutdown_ray(runtime)
    print(check.summary())
    print(f"report: {out_dir / 'drift.json'} and drift.png (MLflow run {check.run_id})")
    return 3 if args.fail_on_drift and check.report.alarms else 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from raymlp.monitor.retrain import RETRAIN_STAGES, RetrainRunning, retrain

    cfg = load_config(args.config, args.set)
    stages = args.stages.split(",") if args.stages else RETRAIN_STAGES
    while True:
        try:
            print(retrain(cfg, args.data, args.when, stages).summary(), flush=True)
        except RetrainRunning as e:  # on a schedule, the next round tries again
            print(f"error: {e}", file=sys.stderr, flush=True)
            if args.every is None:
                return 2
        if args.every is None:
            return 0
        time.sleep(args.every)


def cmd_submit(args: argparse.Namespace) -> int:
    from raymlp.jobs import job_client, job_spec, submit

    spec = job_spec(
        Path(args.config),
        args.set,
        stages=args.stages,
        working_dir=Path(args.working_dir) if args.working_dir else None,
        pip=args.pip,
        env_vars=dict(_key_value(e, "--env") for e in args.env),
    )
    client = job_client(args.address)
    job_id = submit(client, spec, args.job_id)
    print(f"submitted job {job_id}: {spec.entrypoint}  (files: {spec.runtime_env['working_dir']})")
    if args.no_wait:
        print(f"follow it with `raymlp job logs {job_id} --follow`")
        return 0
    return _follow(client, job_id)


def cmd_job(args: argparse.Namespace) -> int:
    from raymlp.jobs import job_client, job_info

    client = job_client(args.address)
    if args.action == "list":
        for job in sorted(client.list_jobs(), key=lambda j: j.start_time or 0):
            print(f"{job.submission_id or job.job_id}  {job.status.value:<9}  {job.entrypoint}")
        return 0
    info = job_info(client, args.job_id)
    if args.action == "status":
        print(f"{args.job_id}: {info.status.value}" + (f" ({info.message})" if info.message else ""))
    elif args.action == "stop":
        stopped = client.stop_job(args.job_id)
        print(f"{args.job_id}: " + ("stop requested" if stopped else f"already {info.status.value}"))
    elif args.follow:
        return _follow(client, args.job_id)
    else:
        print(client.get_job_logs(args.job_id), end="")
    return 0


def _follow(client: JobSubmissionClient, job_id: str) -> int:
    from raymlp.jobs import follow, job_info

    try:
        follow(client, job_id, lambda chunk: print(chunk, end="", flush=True))
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running (`raymlp job stop {job_id}` ends it)")
        return 130
    info = job_info(client, job_id)
    succeeded = info.status.value == "SUCCEEDED"
    print(f"job {job_id} {info.status.value}" + (f": {info.message}" if info.message and not succeeded else ""))
    return 0 if succeeded else 1


def _triggers(text: str) -> tuple[str, ...]:
    from raymlp.monitor.retrain import TRIGGERS

    triggers = tuple(t.strip() for t in text.split(","))
    unknown = [t for t in triggers if t not in TRIGGERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)}: triggers are {', '.join(TRIGGERS)}")
    return triggers


def _key_value(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"{flag} {text!r}: expected KEY=VALUE")
    return key, value


def cmd_models(args: argparse.Namespace) -> int:
    import mlflow

    from raymlp.lifecycle import registry
    from raymlp.lifecycle.tracking import configure_tracking

    cfg = load_config(args.config, args.set)
    target = configure_tracking(cfg.registry, Path(cfg.run_dir), cfg.name)
    client = mlflow.MlflowClient(target.tracking_uri)
    name = target.model_name
    if args.action == "promote":
        replaced = registry.crown(client, name, str(registry.resolve_version(client, name, args.version).version), "promoted by hand")
        print(f"{name}: version {args.version} is champion (replaced {replaced or 'none'})")
    elif args.action == "rollback":
        demoted, restored = registry.rollback(client, name)
        print(f"{name}: champion rolled back from version {demoted} to version {restored}")
    else:
        versions = registry.list_versions(client, name)
        aliases = client.get_registered_model(name).aliases if versions else {}
        print(_versions_table(versions, aliases, cfg.tune.metric))
    return 0


def _versions_table(versions: list[ModelVersion], aliases: dict[str, str], metric: str) -> str:
    """Newest first; `aliases` maps alias to version (search results do not carry them)."""
    if not versions:
        return "no versions registered yet"
    header = ("version", "aliases", metric, "int8", "data", "config", "run", "decision")
    rows = [
        (
            v.version,
            ",".join(sorted(a for a, n in aliases.items() if str(n) == str(v.version))) or "-",
            v.tags.get(metric, "-")[:8],
            {"true": "yes", "false": "no"}.get(v.tags.get("int8.accepted", ""), "-"),
            v.tags.get("lineage.data_fingerprint", "-")[:10],
            v.tags.get("lineage.config_sha256", "-")[:10],
            v.run_id[:10],
            v.tags.get("promotion.decision", "-"),
        )
        for v in reversed(versions)
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join(f"{c:<{w}}" for c, w in zip(r, widths)) + "  " + r[-1] for r in [header, *rows])


def _summary(result: PipelineResult, cfg: PipelineConfig) -> str:
    lines = [f"run folder:    {result.run_dir}", f"MLflow runs:   mlflow ui --backend-store-uri {result.tracking_uri}"]
    lines.append(f"               (run {result.mlflow_run_id})")
    if result.validation:
        lines.append("data:          " + result.validation.summary().replace("\n", "\n               "))
    if result.metrics:
        lines.append("best model:    " + ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items()))
    if result.model_version:
        lines.append(f"registered:    {result.model_name} version {result.model_version}")
    if result.promotion:
        p = result.promotion
        alias = "champion" if p.promote else "challenger"
        lines.append(f"               {alias}: {p.reason}")
    if result.compress:
        c = result.compress
        verdict = "accepted" if c.accepted else "refused: metric drop over compress.max_metric_drop"
        lines.append(
            f"int8 ({c.scheme}): {c.metric} {c.metric_fp32:.4f} -> {c.metric_int8:.4f}, "
            f"weights {c.size_fp32_bytes / 1024:.0f} KiB -> {c.size_int8_bytes / 1024:.0f} KiB, "
            f"64 rows {c.latency_64_fp32_ms:.2f} -> {c.latency_64_int8_ms:.2f} ms ({verdict})"
        )
    if result.endpoint:
        lines.append(f"endpoint:      {result.endpoint}/predict  (docs: {result.endpoint}/docs)")
        lines.append(f"               {_auth_line(cfg)}")
    if result.prediction:
        p = result.prediction
        lines.append(f"prediction:    {json.dumps(p['predictions'][0])}  ({p['precision']} weights)")
    return "\n".join(lines)


def _auth_line(cfg: PipelineConfig) -> str:
    auth = cfg.serve.auth
    if auth.mode == "none":
        return "auth: off (serve.auth.mode: none)"
    where = auth.keys_file or str(Path(cfg.run_dir) / "api_keys")
    return f"auth: API key from ${auth.keys_env} or {where}; send `Authorization: Bearer <key>`"


def _wait_for_interrupt(url: str) -> None:
    print(f"serving at {url}; Ctrl-C stops it")
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raymlp", description="Run ML pipelines on Ray, from raw data to a served model.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("config", help="pipeline YAML")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.epochs=3")
        return p

    run = with_config(sub.add_parser("run", help="run the pipeline (all stages, or --stages)"))
    run.add_argument("--stages", help="comma-separated subset of data,train,tune,register,compress,serve")
    run.add_argument("--keep-serving", action="store_true", help="with an embedded Ray, keep the app up until Ctrl-C")
    run.set_defaults(command=cmd_run, resume=None)

    train = with_config(sub.add_parser("train", help="prepare the data, train and register a model (no tune or serve)"))
    train.add_argument("--resume", metavar="RUN", help="continue RUN (a folder name under run_dir) from its latest checkpoint")
    train.set_defaults(command=cmd_run, stages="data,train,register", keep_serving=False)

    tune = with_config(sub.add_parser("tune", help="prepare the data, search, register and compress (no serve)"))
    tune.add_argument("--resume", metavar="RUN", help="restore RUN's interrupted search and finish its remaining trials")
    tune.set_defaults(command=cmd_run, stages="data,tune,register,compress", keep_serving=False)

    models = sub.add_parser("models", help="list registered versions; promote or roll back the champion")
    actions = models.add_subparsers(required=True, dest="action", metavar="ACTION")
    for action, text in [
        ("list", "versions newest first, with aliases, metric, lineage and promotion decision"),
        ("promote", "make VERSION (a number or alias) the champion"),
        ("rollback", "give the champion alias back to the version the champion replaced"),
    ]:
        command = with_config(actions.add_parser(action, help=text))
        if action == "promote":
            command.add_argument("version")
    models.set_defaults(command=cmd_models)

    validate = sub.add_parser("validate", help="check a config; print every error with its field path")
    validate.add_argument("config", nargs="?", help="pipeline YAML")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    validate.add_argument("--explain", action="store_true", help="list every config field and what it does")
    validate.set_defaults(command=cmd_validate)

    serve = with_config(sub.add_parser("serve", help="serve the registered model over HTTP"))
    serve.set_defaults(command=cmd_serve)

    pred = sub.add_parser("predict", help="send raw feature rows to a running app")
    pred.add_argument("--url", default="http://127.0.0.1:8000", help="app URL (without /predict)")
    pred.add_argument("--api-key", default=os.environ.get("RAYMLP_API_KEY"), help="API key (default: $RAYMLP_API_KEY)")
    source = pred.add_mutually_exclusive_group(required=True)
    source.add_argument("--rows", help='JSON row or list of rows, e.g. \'{"age": 40, "plan": "basic"}\'')
    source.add_argument("--file", help="JSON file holding a row or a list of rows")
    pred.set_defaults(command=cmd_predict)

    fb = sub.add_parser("feedback", help="send true labels of answered requests (by request id) to a running app")
    fb.add_argument("--url", default="http://127.0.0.1:8000", help="app URL (without /feedback)")
    fb.add_argument("--api-key", default=os.environ.get("RAYMLP_API_KEY"), help="API key (default: $RAYMLP_API_KEY)")
    fb.add_argument("--labels", required=True, help="parquet, CSV or JSON-lines file: a request id and a label per row")
    fb.add_argument("--id-column", default="request_id", help="the column of X-Request-ID values")
    fb.add_argument("--label-column", default="label", help="the column of true labels")
    fb.set_defaults(command=cmd_feedback)

    batch = with_config(sub.add_parser("predict-batch", help="predict a dataset with a registered model; write parquet"))
    batch.add_argument("--input", required=True, help="file, folder, glob or URI of parquet, CSV or JSON lines")
    batch.add_argument("--output", required=True, help="folder (or URI) for the parquet predictions; must not exist")
    batch.add_argument("--version", help="number, alias or latest (default: serve.model_version)")
    batch.add_argument("--format", choices=["parquet", "csv", "jsonl"], help="input format (default: from suffixes)")
    batch.add_argument("--columns", help="comma-separated input columns to pass through (default: all)")
    batch.add_argument("--batch-size", type=int, default=4096, help="rows per forward pass")
    batch.add_argument("--actors", metavar="MIN,MAX", help="model actor pool size (default: 1 up to one per GPU or CPU)")
    batch.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs (and torch threads) per actor")
    batch.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    batch.set_defaults(command=cmd_predict_batch)

    drift = with_config(sub.add_parser("drift", help="score a dataset's drift against a registered model's training data"))
    drift.add_argument("--data", required=True, help="file, folder, glob or URI of parquet, CSV or JSON lines")
    drift.add_argument("--version", help="number, alias or latest (default: serve.model_version)")
    drift.add_argument("--format", choices=["parquet", "csv", "jsonl"], help="input format (default: from suffixes)")
    drift.add_argument("--fail-on-drift", action="store_true", help="exit with status 3 when anything drifted")
    drift.set_defaults(command=cmd_drift)

    again = with_config(sub.add_parser("retrain", help="run the pipeline on new data; promote only a better model"))
    again.add_argument("--data", help="the new data: file, folder, glob or URI (default: data.path)")
    again.add_argument("--when", type=_triggers, default=("always",), metavar="TRIGGER[,TRIGGER]",
                       help="retrain when any fires: always (default); drifted: the data drifts from the served "
                            "version's training data; degraded: the running app's live metrics are past "
                            "monitor.feedback.thresholds")  # fmt: skip
    again.add_argument("--every", type=float, metavar="SECONDS", help="repeat on this schedule (until stopped)")
    again.add_argument("--stages", help="comma-separated pipeline stages (default: every stage but serve)")
    again.set_defaults(command=cmd_retrain)

    address = {"help": "the cluster's dashboard URL (default: $RAY_ADDRESS, else http://127.0.0.1:8265)"}
    job = with_config(sub.add_parser("submit", help="run the pipeline on a Ray cluster as a Ray job; stream its log"))
    job.add_argument("--address", **address)
    job.add_argument("--stages", help="comma-separated subset of data,train,tune,register,compress,serve")
    job.add_argument("--working-dir", help="folder uploaded as the job's files; must hold CONFIG (default: its folder)")
    job.add_argument("--pip", action="append", default=[], metavar="REQUIREMENT", help="extra package for the job's runtime env")
    job.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment variable for the job")
    job.add_argument("--job-id", help="submission id (default: generated)")
    job.add_argument("--no-wait", action="store_true", help="return once submitted instead of streaming the log")
    job.set_defaults(command=cmd_submit)

    jobs = sub.add_parser("job", help="status, log, stop or list of jobs on a Ray cluster")
    job_actions = jobs.add_subparsers(required=True, dest="action", metavar="ACTION")
    for action, text in [
        ("status", "the job's state and message"),
        ("logs", "the job's driver log (--follow: until it ends)"),
        ("stop", "stop the job"),
        ("list", "every job on the cluster, oldest first"),
    ]:
        command = job_actions.add_parser(action, help=text)
        command.add_argument("--address", **address)
        if action != "list":
            command.add_argument("job_id", metavar="JOB_ID")
        if action == "logs":
            command.add_argument("--follow", action="store_true", help="stream until the job ends; exit 1 unless it succeeded")
    jobs.set_defaults(command=cmd_job)
    return parser
