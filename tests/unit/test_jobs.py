"""What `raymlp submit` hands to Ray's job client, checked without a cluster."""

import shlex

import pytest

from raymlp.cli import _parser
from raymlp.config import ConfigError
from raymlp.jobs import UPLOAD_EXCLUDES, job_spec

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
