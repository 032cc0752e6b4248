"""`raymlp drift` on Ray Data: the training data does not drift from its own reference; shifted data
does, feature by feature and in its predictions; bad rows are quarantined and counted; the report
lands in MLflow."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlp.cli import main
from raymlp.config import load_config
from raymlp.monitor.drift_check import MODEL_VERSION_TAG

from conftest import QUICKSTART, copy_registry, example_generator, free_port, tiny_overrides

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(registry_runs, quickstart_data, tmp_path_factory):
    overrides = tiny_overrides(quickstart_data, tmp_path_factory.mktemp("drift"), free_port())
    cfg = load_config(QUICKSTART / "pipeline.yaml", overrides)
    return cfg, copy_registry(registry_runs, cfg, champion="2"), overrides


def drift(overrides: list[str], data, *extra: str) -> int:
    return main(["drift", str(QUICKSTART / "pipeline.yaml"), *(f"--set={o}" for o in overrides), "--data", str(data), *extra])


def latest_report(cfg) -> dict:
    folder = max(Path(cfg.run_dir).glob("drift-*"))
    return json.loads((folder / "drift.json").read_text())


def test_new_rows_like_the_training_data_do_not_drift(registered, tmp_path, capsys):
    cfg, target, overrides = registered
    pq.write_table(example_generator("quickstart").make_table(3_000, seed=11), tmp_path / "new.parquet")
    assert drift(overrides, tmp_path / "new.parquet", "--fail-on-drift") == 0
    report = latest_report(cfg)
    assert report["rows"] == 3_000 and report["drifted"] == [] and report["version"] == "2"
    assert {f["name"] for f in report["features"]} == {"tenure_months", "monthly_charges", "support_calls", "age", "plan", "region"}
    assert max(f["psi"] for f in report["features"]) < 0.05
    assert report["prediction"] is None  # no prediction column
    assert "drifted: none" in capsys.readouterr().out


def test_shifted_rows_drift_and_bad_rows_are_quarantined(registered, tmp_path, capsys):
    cfg, target, overrides = registered
    table = example_generator("quickstart").make_table(3_000, seed=12).drop(["churned"])
    charges = table["monthly_charges"].to_numpy() + 60.0
    charges[0] = np.inf  # breaks the input contract: quarantined, not scored
    table = table.set_column(table.schema.get_field_index("monthly_charges"), "monthly_charges", pa.array(charges))
    plan = np.where(np.arange(3_000) % 2 == 0, "enterprise", table["plan"].to_numpy(zero_copy_only=False))
    table = table.set_column(table.schema.get_field_index("plan"), "plan", pa.array(plan))
    table = table.append_column("prediction", pa.array(np.ones(3_000, dtype=np.int64)))  # as predict-batch writes it
    pq.write_table(table, tmp_path / "shifted.parquet")

    assert drift(overrides, tmp_path / "shifted.parquet", "--fail-on-drift") == 3
    report = latest_report(cfg)
    assert report["rows_in"] == 3_000 and report["rows"] == 2_999 and report["quarantined"] == {"range:monthly_charges": 1}
    assert report["drifted"] == ["monthly_charges", "plan"]
    features = {f["name"]: f for f in report["features"]}
    assert features["monthly_charges"]["ks"] > 0.8 and features["plan"]["actual"][-2] == pytest.approx(0.5, abs=0.01)  # other
    assert report["prediction"]["drifted"] and report["prediction"]["actual"][:2] == [0.0, 1.0]

    [run] = mlflow.MlflowClient(target.tracking_uri).search_runs(
        [target.experiment_id], "attributes.run_name = 'drift'", order_by=["attributes.start_time DESC"], max_results=1
    )
    assert run.data.tags[MODEL_VERSION_TAG] == "2" and run.data.tags["raymlp.drift.drifted"] == "monthly_charges,plan"
    assert run.data.metrics["drift.psi.monthly_charges"] == features["monthly_charges"]["psi"]
    artifacts = {a.path for a in mlflow.MlflowClient(target.tracking_uri).list_artifacts(run.info.run_id, "drift")}
    assert {"drift/drift.json", "drift/drift.png"} <= artifacts
    assert "DRIFT monthly_charges" in capsys.readouterr().out
