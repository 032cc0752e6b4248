from pathlib import Path

import pytest
import yaml

from raymlp.config import ConfigError, load_config, parse_config, save_config, with_values
from raymlp.config.load import config_help

from conftest import QUICKSTART, REPO

MINIMAL = {"name": "p", "data": {"path": "data", "label": "y"}}


def errors_of(raw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.errors


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*/pipeline.yaml")), ids=lambda p: p.parent.name)
def test_every_example_config_loads(path):
    cfg = load_config(path)
    assert Path(cfg.data.path) == path.parent / "data"


def test_quickstart_config_loads_and_resolves_paths_against_its_folder():
    cfg = load_config(QUICKSTART / "pipeline.yaml")
    assert cfg.name == "quickstart-churn"
    assert cfg.data.path == str(QUICKSTART / "data")
    assert cfg.run_dir == str(QUICKSTART / "runs")
    assert cfg.tune.space["model.hidden_sizes"].values == [[32], [64, 64]]


def test_defaults_fill_every_section():
    cfg = parse_config(MINIMAL)
    assert cfg.train.num_workers == 2
    assert cfg.tune.mode == "max" and cfg.compress.max_metric_drop == 0.005
    assert cfg.serve.host == "127.0.0.1"


def test_unknown_key_names_its_path_and_the_allowed_keys():
    [error] = errors_of({**MINIMAL, "train": {"epoch": 3}})
    assert error.startswith("train.epoch: unknown key")
    assert "epochs" in error and "batch_size" in error


def test_unknown_section_is_rejected():
    [error] = errors_of({**MINIMAL, "trian": {}})
    assert error.startswith("trian: unknown key") and "train" in error


def test_bad_values_name_field_and_what_is_allowed():
    errors = errors_of({**MINIMAL, "data": {"path": "d", "label": "y", "format": "xls"}, "train": {"epochs": 0}})
    assert any(e.startswith("data.format:") and "'parquet', 'csv' or 'jsonl'" in e for e in errors)
    assert any(e.startswith("train.epochs:") and "greater than 0" in e and "passes over" in e for e in errors)


def test_missing_required_field_is_named():
    [error] = errors_of({"name": "p", "data": {"path": "d"}})
    assert error.startswith("data.label: Field required")


def test_search_space_must_name_real_fields_and_sane_ranges():
    [error] = errors_of({**MINIMAL, "tune": {"space": {"train.lrate": {"type": "uniform", "low": 0, "high": 1}}}})
    assert "'train.lrate' is not a config field" in error
    [error] = errors_of({**MINIMAL, "tune": {"space": {"train.lr": {"type": "loguniform", "low": 0, "high": 1}}}})
    assert error.startswith("tune.space.train.lr:") and "low` > 0" in error
    [error] = errors_of({**MINIMAL, "tune": {"space": {"model.dropout": {"type": "choice"}}}})
    assert "non-empty `values`" in error


def test_live_metric_thresholds_must_be_metrics_of_the_task():
    regression = {**MINIMAL, "data": {"path": "d", "label": "y", "task": "regression"}}
    [error] = errors_of({**regression, "monitor": {"feedback": {"thresholds": {"auc": 0.7}}}})
    assert error.startswith("monitor.feedback.thresholds:") and "'auc' is not a live metric of regression" in error
    assert "loss, rmse, mae, r2" in error
    cfg = parse_config({**MINIMAL, "monitor": {"feedback": {"thresholds": {"auc": 0.7, "loss": 0.5}}}})
    assert cfg.monitor.feedback.thresholds == {"auc": 0.7, "loss": 0.5}


def test_overrides_parse_yaml_values(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    cfg = load_config(path, ["train.epochs=7", "model.hidden_sizes=[8, 4]", "train.use_gpu=true", "data.path=s3://b/k"])
    assert cfg.train.epochs == 7 and cfg.model.hidden_sizes == [8, 4] and cfg.train.use_gpu is True
    assert cfg.data.path == "s3://b/k"  # URIs are not resolved against the folder


def test_bad_override_and_missing_file_are_config_errors(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="train.epochs: Input should be a valid integer"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path: Path):
    cfg = load_config(QUICKSTART / "pipeline.yaml", ["train.lr=0.01"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_with_values_revalidates():
    cfg = parse_config(MINIMAL)
    assert with_values(cfg, {"train.lr": 0.5, "model.hidden_sizes": [3]}).model.hidden_sizes == [3]
    with pytest.raises(ConfigError, match="train.lr"):
        with_values(cfg, {"train.lr": -1})


def test_every_field_is_described():
    lines = config_help()
    assert "train.epochs: Most passes over the training split." in lines
    assert all(line.split(": ", 1)[1] for line in lines), [line for line in lines if line.endswith(": ")]
