"""Run a pipeline on a Ray cluster as a Ray job, and follow it: a thin layer over Ray's
JobSubmissionClient that ships the config's folder as the job's working_dir, so that the same
relative paths (data, run folder) resolve on the cluster as they do here."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raymlp.config import load_config

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Local outputs that have no business on the cluster (a run folder can hold GBs of checkpoints).
UPLOAD_EXCLUDES = ["runs/", "mlruns/", ".venv/", "__pycache__/", ".git/"]
# What Ray's jobs API answers (HTTP 500) while the head node's job agent has not registered yet.
AGENT_NOT_READY = "No available agent to submit job"


@dataclass(frozen=True)
class JobSpec:
    """What `JobSubmissionClient.submit_job` is given for one pipeline run."""

    entrypoint: str
    runtime_env: dict[str, object]
    metadata: dict[str, str]


def job_client(address: str | None) -> JobSubmissionClient:
    """A client for the cluster's jobs API: `address`, else `RAY_ADDRESS`, else the local default.
    With Ray's token auth on, the client sends the token only when `RAY_AUTH_MODE=token` is set
    here too (token from `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or ~/.ray/auth_token)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    try:
        return JobSubmissionClient(address)
    except ConnectionError as e:
        raise ConnectionError(
            f"{e} Is the cluster's dashboard port reachable from here? For a remote cluster, forward it "
            "first: `ray dashboard clusters/aws.yaml` or `kubectl port-forward svc/raymlp-head-svc 8265`."
        ) from None
    except AuthenticationError as e:
        raise PermissionError(f"{address}: {e}") from None


def job_spec(
    config: Path,
    overrides: list[str],
    *,
    stages: str | None = None,
    working_dir: Path | None = None,
    pip: list[str] | None = None,
    env_vars: dict[str, str] | None = None,
) -> JobSpec:
    """`raymlp run` on `config` with `working_dir` (default: the config's folder) as the job's
    files. The config is checked here first: a typo should not cost an upload and a cluster start."""
    config = config.resolve()
    cfg = load_config(config, overrides)
    root = (working_dir or config.parent).resolve()
    if not config.is_relative_to(root):
        raise ValueError(f"--working-dir {root} must contain the config {config}: the job reads it from there")
    if "://" not in cfg.data.path and not Path(cfg.data.path).is_relative_to(root):
        log.warning("data.path %s is outside the uploaded folder: the cluster must see it at that path", cfg.data.path)
    if Path(cfg.run_dir).is_relative_to(root):
        log.warning(
            "run_dir %s is inside the uploaded folder, which every node unpacks on its own: on more than one "
            "node, set run_dir (checkpoints, models) to storage they share", cfg.run_dir
        )
    args = ["raymlp", "run", str(config.relative_to(root)), *(["--stages", stages] if stages else [])]
    runtime_env: dict[str, object] = {"working_dir": str(root), "excludes": UPLOAD_EXCLUDES}
    if pip:
        runtime_env["pip"] = pip
    if env_vars:
        runtime_env["env_vars"] = env_vars
    return JobSpec(
        entrypoint=shlex.join([*args, *(f"--set={o}" for o in overrides)]),
        runtime_env=runtime_env,
        metadata={"raymlp.pipeline": cfg.name},
    )


def submit(client: JobSubmissionClient, spec: JobSpec, job_id: str | None = None, *, patience_s: float = 120) -> str:
    """Submit `spec`; returns the job id. A head node that has just started answers "no available
    agent, try again later" until its job agent registers (the dashboard waits only 10 s for it, and
    on a busy small head that agent can take longer): that answer is retried for `patience_s`."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return client.submit_job(
                entrypoint=spec.entrypoint, runtime_env=spec.runtime_env, metadata=spec.metadata, submission_id=job_id
            )
        except RuntimeError as e:  # Ray's client reports any HTTP error status this way
            if AGENT_NOT_READY not in str(e) or time.monotonic() > deadline:
                raise
            log.warning("%s: the head node's job agent is not up yet; submitting again", client.get_address())
            time.sleep(2)


def job_info(client: JobSubmissionClient, job_id: str) -> JobDetails:
    try:
        return client.get_job_info(job_id)
    except RuntimeError as e:  # Ray's client reports any HTTP error status this way
        if "status code 404" not in str(e):
            raise
        raise LookupError(f"no job {job_id!r} at {client.get_address()}; `raymlp job list` shows the jobs there") from None


def follow(client: JobSubmissionClient, job_id: str, write: Callable[[str], object]) -> None:
    """Stream the job's driver log to `write` until the job ends."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())
