"""Read every source file into one schema and check every row against the column rules.

Nothing is lost uncounted: each row is either valid or tagged with the first rule it breaks, a file
that cannot be read becomes one tagged record naming it, and `valid + quarantined == read` is
checked before the data is used. Tagged rows go to the run's quarantine folder with their reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray.data
from ray.data.aggregate import ValueCounter

from raymlp.config.schema import ColumnSpec, DataConfig
from raymlp.data.profile import fingerprint
from raymlp.data.sources import SourceFile, list_files, read_file, read_schema

log = logging.getLogger(__name__)

REASON = "_raymlp_reason"
SOURCE = "_raymlp_source"
DETAIL = "_raymlp_detail"
UNREADABLE = "unreadable_file"
ARROW_TYPES = {"float": pa.float64(), "int": pa.int64(), "string": pa.string(), "bool": pa.bool_()}


@dataclass
class ValidationReport:
    files: int
    rows_read: int
    rows_valid: int
    quarantined: dict[str, int] = field(default_factory=dict)
    """Invalid rows by reason, e.g. {"range:age": 3, "type:income": 1}."""
    unreadable_files: dict[str, str] = field(default_factory=dict)
    """File -> error, for files quarantined whole (their rows cannot be counted)."""
    schema: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    """SHA-256 of the schema and every source file's content: the data's identity for lineage."""
    quarantine_path: str | None = None

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
        }
        return metrics | {f"data.invalid.{reason.replace(':', '.')}": n for reason, n in self.quarantined.items()}

    def summary(self) -> str:
        lines = [
            f"{self.rows_read} rows read from {self.files} files: {self.rows_valid} valid, {self.rows_invalid} invalid"
            f" (fingerprint {self.fingerprint[:12]})"
        ]
        lines += [f"  {n} {reason}" for reason, n in sorted(self.quarantined.items())]
        lines += [f"  unreadable, quarantined whole: {f} ({e})" for f, e in self.unreadable_files.items()]
        if self.quarantine_path:
            lines.append(f"  quarantined rows: {self.quarantine_path}")
        return "\n".join(lines)


def read_validated(cfg: DataConfig, quarantine_dir: Path) -> tuple[ray.data.Dataset, ValidationReport]:
    """Valid rows (materialized) and the report; applies `invalid_rows` and `max_bad_fraction`."""
    files = list_files(cfg)
    schema = target_schema(files, cfg.columns)
    tagged = (
        ray.data.from_items([{"uri": f.uri, "format": f.format} for f in files], override_num_blocks=len(files))
        .map_batches(_read_and_tag, batch_size=1, batch_format="pyarrow", fn_args=(schema, cfg.columns))
        .materialize()
    )
    report = _count(tagged, len(files), schema)
    report.fingerprint = fingerprint(files, schema)
    bad = tagged.map_batches(_keep, fn_args=(False,), batch_format="pyarrow")
    if report.rows_invalid or report.unreadable_files:
        if cfg.invalid_rows == "fail":
            raise ValueError(f"data.invalid_rows is 'fail' and the data has invalid records:\n{report.summary()}")
        if cfg.invalid_rows == "quarantine":
            bad.write_parquet(str(quarantine_dir))
            report.quarantine_path = str(quarantine_dir)
    log.info("data validation: %s", report.summary())
    if report.rows_invalid > cfg.max_bad_fraction * report.rows_read:
        raise ValueError(
            f"data.max_bad_fraction: {report.rows_invalid} of {report.rows_read} rows are invalid "
            f"(more than {cfg.max_bad_fraction:.1%}); fix the data or raise data.max_bad_fraction\n{report.summary()}"
        )
    if report.rows_valid == 0:
        raise ValueError(f"data.path: no valid rows to train on\n{report.summary()}")
    good = tagged.map_batches(_keep, fn_args=(True,), batch_format="pyarrow").drop_columns([REASON, SOURCE, DETAIL])
    return good.materialize(), report


def target_schema(files: list[SourceFile], columns: dict[str, ColumnSpec]) -> pa.Schema:
    """The first readable file's schema, with configured types applied (and all-null columns as
    float). Every file is conformed to it."""
    for source in files:
        try:
            inferred = read_schema(source)
            break
        except Exception:  # noqa: BLE001 - an unreadable file is reported by _read_and_tag
            continue
    else:
        raise ValueError(f"data.path: none of the {len(files)} files can be read (first: {files[0].uri})")
    fields = {f.name: pa.float64() if pa.types.is_null(f.type) else _normalize(f.type) for f in inferred}
    for name, spec in columns.items():
        if spec.type:
            fields[name] = ARROW_TYPES[spec.type]
        elif name not in fields:
            raise ValueError(f"data.columns.{name}: not in {files[0].uri}; give its `type` so other files can supply it")
    return pa.schema(fields.items())


def _read_and_tag(batch: pa.Table, schema: pa.Schema, columns: dict[str, ColumnSpec]) -> pa.Table:
    [uri], [fmt] = batch["uri"].to_pylist(), batch["format"].to_pylist()
    try:
        table = read_file(SourceFile(uri, fmt))
    except Exception as e:  # noqa: BLE001 - any read failure quarantines the file, named
        row = {name: pa.nulls(1, type_) for name, type_ in zip(schema.names, schema.types)}
        detail = f"{type(e).__name__}: {e}"[:500]
        return pa.table({**row, SOURCE: [uri], REASON: [UNREADABLE], DETAIL: [detail]})
    return conform(table, schema, columns, uri)


def conform(table: pa.Table, schema: pa.Schema, columns: dict[str, ColumnSpec], source: str) -> pa.Table:
    """Cast `table` to `schema` (missing columns become nulls, extra ones are dropped) and add the
    reason each row is invalid: the first failed rule, or null."""
    n = table.num_rows
    reason = pa.nulls(n, pa.string())
    arrays = []
    for name, type_ in zip(schema.names, schema.types):
        raw = table[name].combine_chunks() if name in table.column_names else pa.nulls(n, type_)
        values, cast_failed = _cast(raw, type_)
        arrays.append(values)
        reason = _first(reason, cast_failed, f"type:{name}")
        if name in columns:
            for rule, failed in _rule_failures(values, columns[name]):
                reason = _first(reason, failed, f"{rule}:{name}")
    out = pa.Table.from_arrays(arrays, schema=schema)
    return out.append_column(SOURCE, pa.array([source] * n, pa.string())).append_column(REASON, reason).append_column(
        DETAIL, pa.nulls(n, pa.string())
    )


def _rule_failures(values: pa.Array, spec: ColumnSpec) -> list[tuple[str, pa.Array]]:
    failures = []
    if not spec.nullable:
        failures.append(("null", pc.is_null(values)))
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


def _cast(values: pa.Array, type_: pa.DataType) -> tuple[pa.Array, pa.Array | None]:
    """Cast to `type_`; values that do not convert become null and are flagged."""
    if values.type == type_:
        return values, None
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


def _keep(batch: pa.Table, valid: bool) -> pa.Table:
    is_valid = pc.is_null(batch[REASON])
    return batch.filter(is_valid if valid else pc.invert(is_valid))


def _count(tagged: ray.data.Dataset, files: int, schema: pa.Schema) -> ValidationReport:
    total = tagged.count()  # exact: the data is materialized, not estimated from parquet footers
    # ValueCounter tallies per block and merges, where groupby().count() would shuffle every row.
    tally = tagged.aggregate(ValueCounter(REASON, alias_name="reasons"))["reasons"] or {"values": [], "counts": []}
    counts: dict[Any, int] = dict(zip(tally["values"], tally["counts"]))
    unreadable = {}
    if UNREADABLE in counts:
        rows = tagged.map_batches(
            lambda t: t.filter(pc.equal(t[REASON], UNREADABLE)).select([SOURCE, DETAIL]), batch_format="pyarrow"
        ).take_all()
        unreadable = {r[SOURCE]: r[DETAIL] for r in rows}
    valid = counts.pop(None, 0)
    counts.pop(UNREADABLE, None)
    rows_read = total - len(unreadable)
    if valid + sum(counts.values()) != rows_read:
        raise RuntimeError(f"data validation lost rows: {valid} valid + {counts} invalid != {rows_read} read")
    return ValidationReport(
        files=files,
        rows_read=rows_read,
        rows_valid=valid,
        quarantined=counts,
        unreadable_files=unreadable,
        schema={f.name: str(f.type) for f in schema},
    )


def _normalize(type_: pa.DataType) -> pa.DataType:
    return pa.string() if pa.types.is_large_string(type_) else type_
