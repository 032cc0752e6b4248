"""Batch inference over the quickstart data with a registered model: every row predicted
exactly as the served path predicts it (through the CLI), malformed rows and an unreadable file
quarantined and counted."""

from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlp.cli import main
from raymlp.config import load_config
from raymlp.data.validate import REASON, SOURCE, UNREADABLE
from raymlp.lifecycle.registry import resolve_version
from raymlp.serve.batch import predict_batch
from raymlp.serve.model import load_served_model, predict_rows

from conftest import QUICKSTART, copy_registry, free_port, tiny_overrides

pytestmark = pytest.mark.integration

INPUTS = ["tenure_months", "monthly_charges", "support_calls", "age", "plan", "region"]


@pytest.fixture(scope="module")
def registered(registry_runs, quickstart_data, tmp_path_factory):
    """Version 1 of the quickstart model as champion (a copy of the shared registry), and the
    overrides that reach it."""
    overrides = tiny_overrides(quickstart_data, tmp_path_factory.mktemp("batch"), free_port())
    cfg = load_config(QUICKSTART / "pipeline.yaml", overrides)
    return cfg, copy_registry(registry_runs, cfg, champion="1"), overrides


def served(cfg, target, table: pa.Table) -> dict[tuple, dict]:
    """The served path's answer for each row of `table`, keyed by its input values (output rows
    come back in no particular order)."""
    version = resolve_version(mlflow.MlflowClient(target.tracking_uri), target.model_name, cfg.serve.model_version)
    model, _ = load_served_model(version, cfg.serve.precision)
    predictions = predict_rows(model, {c: table[c].to_pylist() for c in INPUTS})
    return dict(zip(_keys(table), predictions))


def _keys(table: pa.Table) -> list[tuple]:
    return list(zip(*(table[c].to_pylist() for c in INPUTS)))


def assert_served(out: pa.Table, expected: dict[tuple, dict]) -> None:
    for key, row in zip(_keys(out), out.to_pylist()):
        want = expected[key]
        assert row["prediction"] == want["label"]
        for cls, p in want["probabilities"].items():
            assert row[f"prob_{cls}"] == pytest.approx(p, abs=1e-6)  # served probabilities are rounded to 6 places


def test_every_row_is_predicted_as_served(registered, quickstart_data, tmp_path, capsys):
    cfg, target, overrides = registered
    args = ["predict-batch", str(QUICKSTART / "pipeline.yaml"), *(f"--set={o}" for o in overrides)]
    args += ["--input", str(quickstart_data), "--output", str(tmp_path / "out")]
    assert main([*args, "--columns", ",".join(INPUTS), "--actors", "1,1"]) == 0
    assert "version 1 (fp32): 1500 rows from 3 files -> 1500 predictions" in capsys.readouterr().out
    out = pq.read_table(tmp_path / "out")
    assert out.num_rows == 1500 and out.column_names == [*INPUTS, "prediction", "prob_0", "prob_1"]
    assert_served(out, served(cfg, target, pq.read_table(quickstart_data)))
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_malformed_rows_and_files_are_quarantined_and_counted(registered, quickstart_data, tmp_path):
    cfg, target, _ = registered
    frame = pq.read_table(quickstart_data).slice(0, 40).to_pandas().astype({"age": object, "monthly_charges": object})
    frame.loc[5, "age"] = "abc"  # not a number
    frame.loc[10, "monthly_charges"] = "inf"  # the served API refuses it too
    frame.loc[12, "support_calls"] = None  # missing: imputed, as in training and serving
    data = tmp_path / "in"
    data.mkdir()
    frame.to_csv(data / "part.csv", index=False)
    (data / "broken.parquet").write_bytes(b"PAR1 not parquet at all")

    serve = cfg.serve  # the CLI's defaults: the champion, int8 when accepted and faster (none was made here)
    report = predict_batch(
        target, str(data), str(tmp_path / "out"), tmp_path / "quarantine",
        version=serve.model_version, precision=serve.precision, actors=(1, 1),  # each actor takes seconds to start
    )  # fmt: skip
    assert (report.version, report.precision, report.files) == ("1", "fp32", 2) and report.rows_per_s > 0
    assert report.rows_in == 40 and report.rows_out == 38 and report.quarantine_path == str(tmp_path / "quarantine")
    assert report.quarantined == {"type:age": 1, "range:monthly_charges": 1}
    assert list(report.unreadable_files) == [str(data / "broken.parquet")]
    quarantined = pq.read_table(tmp_path / "quarantine").to_pylist()
    assert sorted((Path(r[SOURCE]).name, r[REASON]) for r in quarantined) == [
        ("broken.parquet", UNREADABLE),
        ("part.csv", "range:monthly_charges"),
        ("part.csv", "type:age"),
    ]
    valid = pa.Table.from_pandas(frame.drop(index=[5, 10]).astype({"age": float, "monthly_charges": float}))
    assert_served(pq.read_table(tmp_path / "out"), served(cfg, target, valid))
