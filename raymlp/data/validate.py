"""Read every source file into one schema and check every row against the column rules.

Nothing is lost uncounted. One Ray Data task reads one file whole, casts it to the target schema and
tags each row with the first rule it breaks; valid rows flow on, invalid ones go to the run's
quarantine folder with their reason, and a file that cannot be read is named and quarantined whole.
Each task records its file's outcome (rows read, valid, invalid by reason, content digest, which
rows were invalid) in the ledger (ledger.py), keyed by run and file so that a retried task cannot
count twice; the report is built from it and `valid + invalid == read` is checked per file and in
total.

The valid rows are a lazy, streaming dataset (rows.py): every pass over it re-reads the files
instead of holding the data in memory, so memory stays bounded by a few files whatever the size;
the passes after the first drop the rows it recorded as invalid rather than checking them again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raymlp.config.schema import ColumnSpec, DataConfig
from raymlp.data.ledger import FileOutcome
from raymlp.data.sources import SourceFile, read_file, read_schema

log = logging.getLogger(__name__)

REASON = "_raymlp_reason"
SOURCE = "_raymlp_source"
DETAIL = "_raymlp_detail"
ROW = "_raymlp_row"
UNREADABLE = "unreadable_file"
TIMESTAMP = pa.timestamp("us", tz="UTC")
ARROW_TYPES = {"float": pa.float64(), "int": pa.int64(), "string": pa.string(), "bool": pa.bool_(), "timestamp": TIMESTAMP}


@dataclass
class ValidationReport:
    files: int
    rows_read: int
    rows_valid: int
    quarantined: dict[str, int] = field(default_factory=dict)
    """Invalid rows by reason, e.g. {"range:age": 3, "type:income": 1}."""
    unreadable_files: dict[str, str] = field(default_factory=dict)
    """File -> error, for files quarantined whole (their rows cannot be counted)."""
    duplicates: int = 0
    """Valid rows dropped as repeats of an earlier row (see `data.dedupe`)."""
    schema: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    """SHA-256 of the schema and every source file's content: the data's identity for lineage."""
    quarantine_path: str | None = None
    labels: dict[Any, int] = field(default_factory=dict)
    """Label value -> count among the valid rows (duplicates included)."""

    @property
    def rows_invalid(self) -> int:
        return sum(self.quarantined.values())

    def as_metrics(self) -> dict[str, float]:
        metrics = {
            "data.files": self.files,
            "data.unreadable_files": len(self.unreadable_files),
            "data.rows_read": self.rows_read,
            "data.rows_valid": self.rows_valid,
            "data.rows_invalid": self.rows_invalid,
            "data.rows_duplicate": self.duplicates,
        }
        return metrics | {f"data.invalid.{reason.replace(':', '.')}": n for reason, n in self.quarantined.items()}

    def summary(self) -> str:
        lines = [
            f"{self.rows_read} rows read from {self.files} files: {self.rows_valid} valid, {self.rows_invalid} invalid"
            + (f", {self.duplicates} duplicates dropped" if self.duplicates else "")
            + f" (fingerprint {self.fingerprint[:12]})"
        ]
        lines += [f"  {n} {reason}" for reason, n in sorted(self.quarantined.items())]
        lines += [f"  unreadable, quarantined whole: {f} ({e})" for f, e in self.unreadable_files.items()]
        if self.quarantine_path:
            lines.append(f"  quarantined rows: {self.quarantine_path}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RowChecks:
    """How a read task turns one file into valid rows: the target schema and the column rules."""

    schema: pa.Schema
    columns: dict[str, ColumnSpec]
    required: frozenset[str]
    """Columns that may never be null (the label, the time column of a time split)."""


def target_schema(files: list[SourceFile], columns: dict[str, ColumnSpec]) -> pa.Schema:
    """The first readable file's schema, with configured types applied (and all-null columns as
    float). Every file is conformed to it."""
    inferred = _first_schema(files)
    fields = {f.name: pa.float64() if pa.types.is_null(f.type) else _normalize(f.type) for f in inferred}
    for name, spec in columns.items():
        if spec.type:
            fields[name] = ARROW_TYPES[spec.type]
        elif name not in fields:
            raise ValueError(f"data.columns.{name}: not in {files[0].uri}; give its `type` so other files can supply it")
    return pa.schema(fields.items())


def _first_schema(files: list[SourceFile]) -> pa.Schema:
    """The first file whose schema reads from its footer or first block; failing that, the first
    file read whole. A CSV or JSON file whose first block mixes types ("n/a" among numbers) is
    readable, re-read untyped (see sources.read_file), so dirty exports still give a schema."""
    for read in (read_schema, lambda source: read_file(source).schema):
        for source in files:
            try:
                return read(source)
            except Exception:  # noqa: BLE001 - an unreadable file is reported when it is read
                continue
    raise ValueError(f"data.path: none of the {len(files)} files can be read (first: {files[0].uri})")


def checks_for(cfg: DataConfig, schema: pa.Schema) -> RowChecks:
    required = {cfg.label} | ({cfg.time_column} if cfg.time_column else set())
    for name in sorted(required):
        if name not in schema.names:
            field_name = "data.label" if name == cfg.label else "data.time_column"
            raise ValueError(f"{field_name}: column {name!r} is not in the data; it has {schema.names}")
    label_type = schema.field(cfg.label).type
    if cfg.task == "regression" and not (pa.types.is_integer(label_type) or pa.types.is_floating(label_type)):
        raise ValueError(
            f"data.task: regression needs a numeric label, and {cfg.label!r} is {label_type}; "
            f"set data.columns.{cfg.label}.type: float, or use task: classification"
        )
    return RowChecks(schema, cfg.columns, frozenset(required))


def cast_to(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` as `schema` (missing columns become nulls, extra ones are dropped), without the
    rules: for passes after the one that checked it, which drop the rows it found invalid (a value
    that does not cast becomes null, and its row is among them)."""
    n = table.num_rows
    columns = [
        _cast(table[name] if name in table.column_names else pa.nulls(n, type_), type_)[0]
        for name, type_ in zip(schema.names, schema.types)
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def conform(table: pa.Table, checks: RowChecks) -> tuple[pa.Table, pa.Array, pa.Array]:
    """Cast `table` to the target schema (missing columns become nulls, extra ones are dropped).
    Returns it with, per row, the first failed rule (or null) and a detail (the value that did not
    cast, which the cast itself turns into null)."""
    n = table.num_rows
    reason = detail = pa.nulls(n, pa.string())
    arrays = []
    for name, type_ in zip(checks.schema.names, checks.schema.types):
        raw = table[name].combine_chunks() if name in table.column_names else pa.nulls(n, type_)
        values, cast_failed = _cast(raw, type_)
        arrays.append(values)
        if cast_failed is not None:
            shown = pc.binary_join_element_wise(name, "=", pc.cast(raw, pa.string()), "")
            detail = pc.coalesce(detail, pc.if_else(cast_failed, shown, pa.scalar(None, pa.string())))
        reason = _first(reason, cast_failed, f"type:{name}")
        for rule, failed in _rule_failures(values, checks.columns.get(name), name in checks.required):
            reason = _first(reason, failed, f"{rule}:{name}")
    return pa.Table.from_arrays(arrays, schema=checks.schema), reason, detail


def outcome_of(uri: str, rows: int, reason: pa.Array, labels: pa.Array | None) -> FileOutcome:
    """Count one file's rows by reason, and its valid rows by label when `labels` are classes;
    `valid + invalid == rows` or the run stops."""
    valid_mask = pc.is_null(reason)
    invalid = {r["values"]: r["counts"] for r in pc.value_counts(reason.filter(pc.invert(valid_mask))).to_pylist()}
    label_counts = {}
    if labels is not None:
        label_counts = {r["values"]: r["counts"] for r in pc.value_counts(labels.filter(valid_mask)).to_pylist()}
    invalid_rows = np.flatnonzero(~valid_mask.to_numpy(zero_copy_only=False))
    valid = rows - len(invalid_rows)
    if valid + sum(invalid.values()) != rows:
        raise RuntimeError(f"data validation lost rows in {uri}: {valid} valid + {invalid} invalid != {rows} read")
    return FileOutcome(rows=rows, valid=valid, invalid=invalid, labels=label_counts, invalid_rows=invalid_rows)


def unreadable(uri: str, error: Exception, schema: pa.Schema) -> tuple[pa.Table, FileOutcome]:
    """The one quarantine record naming a file that cannot be read, and its outcome."""
    message = f"{type(error).__name__}: {error}"[:500]
    row = {name: pa.nulls(1, type_) for name, type_ in zip(schema.names, schema.types)}
    record = pa.table({**row, SOURCE: [uri], ROW: pa.nulls(1, pa.int64()), REASON: [UNREADABLE], DETAIL: [message]})
    # The error stands in for the content digest, so an unreadable file still changes the fingerprint.
    return record, FileOutcome(sha256=hashlib.sha256(message.encode()).hexdigest(), error=message)


def quarantine_rows(table: pa.Table, reason: pa.Array, detail: pa.Array, uri: str) -> pa.Table:
    """The invalid rows of a conformed file, with where they came from and why."""
    bad = pc.is_valid(reason)
    rows = table.filter(bad)
    return (
        rows.append_column(SOURCE, pa.array([uri] * rows.num_rows, pa.string()))
        .append_column(ROW, pa.array(np.flatnonzero(bad.to_numpy(zero_copy_only=False)), pa.int64()))
        .append_column(REASON, reason.filter(bad))
        .append_column(DETAIL, detail.filter(bad))
    )


def write_quarantine(rows: pa.Table, quarantine_dir: str, uri: str) -> None:
    """One parquet file per source file, named after it; written whole then renamed, so a retried
    task replaces it rather than adding a second copy."""
    os.makedirs(quarantine_dir, exist_ok=True)
    name = f"{Path(uri).stem}-{hashlib.sha1(uri.encode()).hexdigest()[:8]}.parquet"
    tmp = os.path.join(quarantine_dir, f".{name}.tmp")
    pq.write_table(rows, tmp)
    os.replace(tmp, os.path.join(quarantine_dir, name))


def build_report(
    files: list[SourceFile], outcomes: dict[str, FileOutcome], schema: pa.Schema, cfg: DataConfig, quarantine_dir: str
) -> ValidationReport:
    """The run's validation report from every file's outcome; applies `invalid_rows` and
    `max_bad_fraction`, and fails when no valid row is left."""
    missing = [f.uri for f in files if f.uri not in outcomes]
    if missing:
        raise RuntimeError(f"data validation has no outcome for {len(missing)} files (first: {missing[0]})")
    quarantined: Counter[str] = Counter()
    labels: Counter[Any] = Counter()
    for outcome in outcomes.values():
        quarantined.update(outcome.invalid)
        labels.update(outcome.labels)
    report = ValidationReport(
        files=len(files),
        rows_read=sum(o.rows for o in outcomes.values()),
        rows_valid=sum(o.valid for o in outcomes.values()),
        quarantined=dict(quarantined),
        unreadable_files={uri: o.error for uri, o in outcomes.items() if o.error},
        schema={f.name: str(f.type) for f in schema},
        fingerprint=_fingerprint(schema, outcomes),
        labels=dict(labels),
    )
    if report.rows_valid + report.rows_invalid != report.rows_read:
        raise RuntimeError(f"data validation lost rows:\n{report.summary()}")
    bad = report.rows_invalid or report.unreadable_files
    if bad and cfg.invalid_rows == "fail":
        raise ValueError(f"data.invalid_rows is 'fail' and the data has invalid records:\n{report.summary()}")
    if bad and cfg.invalid_rows == "quarantine":
        report.quarantine_path = quarantine_dir
    if report.rows_invalid > cfg.max_bad_fraction * report.rows_read:
        raise ValueError(
            f"data.max_bad_fraction: {report.rows_invalid} of {report.rows_read} rows are invalid "
            f"(more than {cfg.max_bad_fraction:.1%}); fix the data or raise data.max_bad_fraction\n{report.summary()}"
        )
    if report.rows_valid == 0:
        raise ValueError(f"data.path: no valid rows to train on\n{report.summary()}")
    return report


def _fingerprint(schema: pa.Schema, outcomes: dict[str, FileOutcome]) -> str:
    payload = {
        "schema": [[f.name, str(f.type)] for f in schema],
        "files": sorted((uri, o.sha256) for uri, o in outcomes.items()),
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _rule_failures(values: pa.Array, spec: ColumnSpec | None, required: bool) -> list[tuple[str, pa.Array]]:
    failures = []
    if required or (spec is not None and not spec.nullable):
        failures.append(("null", pc.is_null(values)))
    if spec is None:
        return failures
    if spec.min is not None:
        failures.append(("range", pc.less(values, spec.min)))
    if spec.max is not None:
        failures.append(("range", pc.greater(values, spec.max)))
    if spec.allowed is not None:
        allowed = pa.array(spec.allowed).cast(values.type)
        failures.append(("not_allowed", pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, allowed)))))
    if spec.regex is not None:
        failures.append(("regex", pc.invert(pc.match_substring_regex(values, spec.regex))))
    return failures


def _cast(values: pa.Array | pa.ChunkedArray, type_: pa.DataType) -> tuple[pa.Array | pa.ChunkedArray, pa.Array | None]:
    """Cast to `type_`; values that do not convert become null and are flagged."""
    if values.type == type_:
        return values, None
    if pa.types.is_timestamp(values.type) and pa.types.is_timestamp(type_):
        return pc.cast(values, type_, safe=False), None  # naive times are UTC; nanoseconds truncate
    if type_ == TIMESTAMP and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        parsed = pd.to_datetime(values.to_pandas(), utc=True, format="ISO8601", errors="coerce")
        out = pa.Array.from_pandas(parsed).cast(TIMESTAMP, safe=False)
        return out, pc.and_(pc.is_valid(values), pc.is_null(out))
    try:
        return pc.cast(values, type_), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    out, failed = [], []
    for v in values.to_pylist():  # slow path, only for files with values of the wrong type
        try:
            out.append(None if v is None else pa.scalar(v).cast(type_).as_py())
            failed.append(False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            out.append(None)
            failed.append(True)
    return pa.array(out, type_), pa.array(failed)


def _first(reason: pa.Array, failed: pa.Array | None, label: str) -> pa.Array:
    """Keep an earlier reason; else `label` where `failed` is true."""
    if failed is None:
        return reason
    hit = pc.fill_null(failed, False)
    return pc.coalesce(reason, pc.if_else(hit, pa.scalar(label), pa.scalar(None, pa.string())))


def _normalize(type_: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(type_):
        return pa.string()
    if pa.types.is_timestamp(type_):
        return TIMESTAMP
    return type_

