"""What `raymlp submit` hands to Ray's job client, checked without a cluster."""

import shlex

import pytest

from raymlp.cli import _parser
from raymlp.config import ConfigError
from raymlp.jobs import AGENT_NOT_READY, UPLOAD_EXCLUDES, job_spec, submit

from conftest import QUICKSTART


def test_the_config_folder_is_the_working_dir_and_the_entrypoint_names_the_config_inside_it():
    spec = job_spec(QUICKSTART / "pipeline.yaml", ["train.epochs=3"], stages="data,train")
    assert spec.runtime_env == {"working_dir": str(QUICKSTART), "excludes": UPLOAD_EXCLUDES}
    assert spec.entrypoint == "raymlp run pipeline.yaml --stages data,train --set=train.epochs=3"
    assert spec.metadata == {"raymlp.pipeline": "quickstart-churn"}


def test_the_entrypoint_parses_as_the_command_it_claims_to_be():
    spec = job_spec(QUICKSTART / "pipeline.yaml", ["serve.canary.percent=5", "run_dir=/mnt/shared runs"],
                    working_dir=QUICKSTART.parent)
    argv = shlex.split(spec.entrypoint)
    assert argv[0] == "raymlp"
    args = _parser().parse_args(argv[1:])
    assert args.command.__name__ == "cmd_run"
    assert args.config == "quickstart/pipeline.yaml"
    assert args.set == ["serve.canary.percent=5", "run_dir=/mnt/shared runs"]


def test_pip_and_env_go_into_the_runtime_env():
    spec = job_spec(QUICKSTART / "pipeline.yaml", [], pip=["lightgbm==4.6.0"], env_vars={"RAYMLP_API_KEYS": "k"})
    assert spec.runtime_env["pip"] == ["lightgbm==4.6.0"]
    assert spec.runtime_env["env_vars"] == {"RAYMLP_API_KEYS": "k"}


def test_a_config_error_is_raised_before_anything_is_submitted():
    with pytest.raises(ConfigError, match="train.epoch: unknown key"):
        job_spec(QUICKSTART / "pipeline.yaml", ["train.epoch=3"])


def test_a_working_dir_that_does_not_hold_the_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--working-dir .* must contain the config"):
        job_spec(QUICKSTART / "pipeline.yaml", [], working_dir=tmp_path)


class HeadNode:
    """Answers submissions as Ray's jobs API does: 'no agent' for the first `not_ready` calls, then
    an id; any other error as given. Only the retry is under test here, the API itself runs in
    tests/integration/test_cluster.py."""

    def __init__(self, not_ready: int, error: str | None = None):
        self.not_ready, self.error, self.calls = not_ready, error, 0

    def get_address(self) -> str:
        return "http://127.0.0.1:8265"

    def submit_job(self, *, entrypoint, runtime_env, metadata, submission_id) -> str:
        self.calls += 1
        if self.error:
            raise RuntimeError(f"Request failed with status code 400: {self.error}.")
        if self.calls <= self.not_ready:
            raise RuntimeError(f"Request failed with status code 500: {AGENT_NOT_READY}, please try again later..")
        return submission_id


def test_a_head_whose_job_agent_is_not_up_yet_is_asked_again_until_patience_runs_out():
    spec = job_spec(QUICKSTART / "pipeline.yaml", [])
    head = HeadNode(not_ready=1)
    assert submit(head, spec, "j1", patience_s=30) == "j1" and head.calls == 2
    with pytest.raises(RuntimeError, match=AGENT_NOT_READY):
        submit(HeadNode(not_ready=5), spec, "j2", patience_s=0)
    refused = HeadNode(not_ready=0, error="invalid runtime_env")
    with pytest.raises(RuntimeError, match="invalid runtime_env"):
        submit(refused, spec, "j3", patience_s=30)
    assert refused.calls == 1
