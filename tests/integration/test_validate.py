"""Reading and validation on real Ray Data: exact counts for every way data goes wrong."""

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from raymlp.config import parse_config
from raymlp.data.ledger import FileOutcome, job_ledger
from raymlp.data.prepare import open_source, validate_data
from raymlp.data.split import SPLIT
from raymlp.data.validate import REASON, SOURCE, UNREADABLE

pytestmark = pytest.mark.integration


def data_cfg(path: Path, **data):
    return parse_config({"name": "t", "data": {"path": str(path), "label": "y", **data}}).data


def shard(path: Path, rows: int, start: int = 0, **extra) -> None:
    a = np.arange(start, start + rows, dtype=float)
    pq.write_table(pa.table({"a": a, "c": np.where(a % 2 == 0, "x", "y"), "y": (a % 3 == 0).astype(int), **extra}), path)


def wait_for_restart(actor, timeout_s: float = 60) -> None:
    from ray.util.state import get_actor

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = get_actor(actor._actor_id.hex(), address=ray.get_runtime_context().gcs_address)
        if state is not None and state.num_restarts >= 1 and state.state == "ALIVE":
            return
        time.sleep(0.2)
    raise AssertionError(f"the actor did not come back within {timeout_s} s: {state}")


def corrupt(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = b"\0" * 64
    path.write_bytes(bytes(raw))


def test_a_corrupt_parquet_file_is_named_and_quarantined_whole_while_the_others_are_read(ray_session, tmp_path):
    for i in range(4):
        shard(tmp_path / f"part-{i}.parquet", 75, start=100 * i)
    corrupt(tmp_path / "part-2.parquet")
    good, report = validate_data(data_cfg(tmp_path), tmp_path / "quarantine")
    assert good.count() == report.rows_valid == report.rows_read == 225
    assert list(report.unreadable_files) == [str(tmp_path / "part-2.parquet")]
    quarantined = pq.read_table(tmp_path / "quarantine").to_pylist()
    assert [(r[SOURCE], r[REASON]) for r in quarantined] == [(str(tmp_path / "part-2.parquet"), UNREADABLE)]


def test_rules_quarantine_exact_counts_with_the_first_broken_rule(ray_session, tmp_path):
    pq.write_table(
        pa.table({
            "a": [1.0, -5.0, 50.0, None, 2.0, 3.0],
            "c": ["x", "x", "x", "x", "q", "x"],
            "code": ["AB1", "AB2", "AB3", "AB4", "AB5", "zz"],
            "y": [0, 1, 0, 1, 0, 1],
        }),
        tmp_path / "p.parquet",
    )
    columns = {
        "a": {"nullable": False, "min": 0, "max": 10},
        "c": {"allowed": ["x", "y"]},
        "code": {"regex": "^AB[0-9]$"},
    }
    good, report = validate_data(data_cfg(tmp_path, columns=columns, max_bad_fraction=1.0), tmp_path / "q")
    assert report.quarantined == {"range:a": 2, "null:a": 1, "not_allowed:c": 1, "regex:code": 1}
    assert report.rows_valid == 1 and good.take_all()[0]["a"] == 1.0
    reasons = sorted(pq.read_table(tmp_path / "q").column(REASON).to_pylist())
    assert reasons == ["not_allowed:c", "null:a", "range:a", "range:a", "regex:code"]


def test_wrong_types_in_a_csv_shard_quarantine_only_those_rows(ray_session, tmp_path):
    (tmp_path / "a.csv").write_text("a,c,y\n1.5,x,0\n2.5,y,1\n")
    (tmp_path / "b.csv").write_text("a,c,y\n3.5,x,0\nabc,y,1\n4.5,x,1\n??,x,0\n")
    good, report = validate_data(data_cfg(tmp_path, max_bad_fraction=0.5), tmp_path / "q")
    assert report.quarantined == {"type:a": 2}
    assert sorted(r["a"] for r in good.take_all()) == [1.5, 2.5, 3.5, 4.5]


def test_schema_drift_between_shards_fills_missing_columns_and_drops_extra_ones(ray_session, tmp_path):
    shard(tmp_path / "p0.parquet", 10)
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0, 1], "new": ["n", "n"]}), tmp_path / "p1.parquet")
    good, report = validate_data(data_cfg(tmp_path), tmp_path / "q")
    assert report.rows_valid == 12 and set(report.schema) == {"a", "c", "y"}
    _, strict = validate_data(data_cfg(tmp_path, columns={"c": {"nullable": False}}, max_bad_fraction=0.5), tmp_path / "q2")
    assert strict.quarantined == {"null:c": 2}


def test_an_all_null_column_is_read_as_float_and_can_be_rejected(ray_session, tmp_path):
    pq.write_table(pa.table({"a": pa.nulls(4), "y": [0, 1, 0, 1]}), tmp_path / "p.parquet")
    good, report = validate_data(data_cfg(tmp_path), tmp_path / "q")
    assert report.schema["a"] == "double" and report.rows_valid == 4
    with pytest.raises(ValueError, match="data.max_bad_fraction: 4 of 4 rows are invalid"):
        validate_data(data_cfg(tmp_path, columns={"a": {"nullable": False}}), tmp_path / "q2")


def test_policies_fail_and_drop(ray_session, tmp_path):
    shard(tmp_path / "p.parquet", 20)
    rules = {"a": {"max": 18}}
    with pytest.raises(ValueError, match="data.invalid_rows is 'fail'"):
        validate_data(data_cfg(tmp_path, columns=rules, invalid_rows="fail"), tmp_path / "q")
    good, report = validate_data(data_cfg(tmp_path, columns=rules, invalid_rows="drop", max_bad_fraction=0.1), tmp_path / "q")
    assert report.quarantined == {"range:a": 1} and good.count() == 19
    assert report.quarantine_path is None and not (tmp_path / "q").exists()


def test_jsonl_through_a_glob(ray_session, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"a": 1.0, "y": 0}\n{"a": 2.0, "y": 1}\n')
    (tmp_path / "b.jsonl").write_text('{"a": 3.0, "y": 0}\n')
    (tmp_path / "notes.txt").write_text("not data")
    good, report = validate_data(data_cfg(tmp_path / "*.jsonl"), tmp_path / "q")
    assert report.files == 2 and good.count() == 3


def test_empty_inputs_fail_clearly(ray_session, tmp_path):
    (tmp_path / "readme.txt").write_text("no data here")
    with pytest.raises(FileNotFoundError, match="no .parquet, .csv or .jsonl files"):
        validate_data(data_cfg(tmp_path), tmp_path / "q")
    pq.write_table(pa.table({"a": pa.array([], pa.float64()), "y": pa.array([], pa.int64())}), tmp_path / "p.parquet")
    with pytest.raises(ValueError, match="no valid rows"):
        validate_data(data_cfg(tmp_path), tmp_path / "q")


def test_fingerprint_follows_content_and_schema(ray_session, tmp_path):
    shard(tmp_path / "p0.parquet", 10)
    shard(tmp_path / "p1.parquet", 10, start=10)
    first = validate_data(data_cfg(tmp_path), tmp_path / "q")[1].fingerprint
    assert validate_data(data_cfg(tmp_path), tmp_path / "q")[1].fingerprint == first
    shard(tmp_path / "p1.parquet", 10, start=11)
    changed = validate_data(data_cfg(tmp_path), tmp_path / "q")[1].fingerprint
    retyped = validate_data(data_cfg(tmp_path, columns={"y": {"type": "float"}}), tmp_path / "q")[1].fingerprint
    assert len({first, changed, retyped}) == 3


def test_passes_after_the_first_read_only_their_columns_and_drop_the_rows_it_found_invalid(ray_session, tmp_path):
    shard(tmp_path / "part-0.parquet", 50)
    shard(tmp_path / "part-1.parquet", 50, start=100)
    passes = open_source(data_cfg(tmp_path, columns={"a": {"max": 120}}, max_bad_fraction=0.5), tmp_path / "q")
    passes.next().dataset().count()  # the first pass checks every rule and records what it found
    later = passes.next(columns=("c",)).dataset()
    assert later.columns() == ["c", SPLIT]  # `a` is not read, yet its rule still holds
    assert later.count() == passes.validated().rows_valid == 50 + 21
    shard(tmp_path / "part-1.parquet", 60, start=100)  # rewritten during the run
    with pytest.raises(Exception, match="part-1.parquet changed during the run: 60 rows now, 50 when it was validated"):
        passes.next(columns=("c",)).dataset().count()


def test_one_ledger_per_job_keeps_runs_apart_and_hands_each_over_once(ray_session):
    first, second = job_ledger(), job_ledger()
    ray.get([first.record.remote("r1", "f", FileOutcome(rows=1)), second.record.remote("r2", "f", FileOutcome(rows=2))])
    assert ray.get(second.take.remote("r1"))["f"].rows == 1  # the same actor
    assert ray.get(first.take.remote("r2"))["f"].rows == 2
    assert ray.get(first.take.remote("r1")) == {}
    ray.kill(first, no_restart=False)  # its process dies: the job's later runs still have a ledger
    wait_for_restart(first)  # ray.kill returns at once: a call made now may still reach the old process
    ray.get(first.record.remote("r3", "f", FileOutcome(rows=3)))
    assert ray.get(job_ledger().take.remote("r3"))["f"].rows == 3
