"""The valid rows of a source, as a lazy Ray Dataset that every pass streams through again.

One task per file reads it, assigns each valid row its split (split.py) and drops repeated rows
(clean.py). The first pass reads the whole file, checks every row (validate.py), records the file's
outcome in the ledger (invalid row positions included) and writes its invalid rows to quarantine.
Later passes trust that record: they read only the columns they need, cast them, and drop the rows
the first pass found invalid, with no rule checked twice.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from raymlp.config.schema import DataConfig
from raymlp.data.clean import KEY, POS, Duplicates, positions, row_keys
from raymlp.data.ledger import FileOutcome, job_ledger
from raymlp.data.sources import SourceFile, parse_file, read_bytes, read_columns
from raymlp.data.split import SPLIT, TRAIN, SplitRule, TimeSplit
from raymlp.data.validate import (
    RowChecks,
    cast_to,
    conform,
    outcome_of,
    quarantine_rows,
    unreadable,
    write_quarantine,
)

Verdicts = dict[str, tuple[int, np.ndarray] | None]
"""File -> (rows, positions of its invalid rows) as the first pass found them; None: unreadable."""


@dataclass(frozen=True)
class Record:
    """Where the first pass reports: the ledger actor and this run's id in it, and the quarantine
    folder (None: drop)."""

    ledger: ray.actor.ActorHandle
    run: str
    quarantine_dir: str | None

    @classmethod
    def start(cls, quarantine_dir: str | None) -> Record:
        """A new run in this job's ledger."""
        return cls(job_ledger(), uuid.uuid4().hex, quarantine_dir)

    def outcomes(self) -> dict[str, FileOutcome]:
        """What every read task of the run recorded, once its pass has run."""
        return ray.get(self.ledger.take.remote(self.run))


@dataclass(frozen=True)
class RowSource:
    """Everything a read task needs; shipped with each task, so it stays small (the duplicate
    table and the first pass's findings travel as object references)."""

    files: tuple[SourceFile, ...]
    checks: RowChecks
    label: str | None
    """Label column whose values the first pass counts (None: a regression label, not counted)."""
    dedupe_key: tuple[str, ...] | None = None
    """Columns whose hash identifies a row for deduplication (None: no deduplication)."""
    split: SplitRule | None = None
    """None: every row is train (preprocessing without a hold-out, or before time cutoffs exist)."""
    duplicates: ray.ObjectRef | None = None
    record: Record | None = None
    verdicts: ray.ObjectRef | None = None
    """The first pass's `Verdicts`; once set, rows are no longer checked but dropped as recorded."""
    columns: tuple[str, ...] | None = None
    """Columns to emit (None: all); passes after the first read only these."""
    keep_split: int | None = None
    """Emit only the rows of this split (None: every split): filtered in the read task, with the
    invalid and repeated rows, so that rows are copied once at most."""
    emit_keys: bool = False
    """Add the dedupe key hash and row position columns (for finding duplicates)."""
    single_operator: bool = False
    """Every dataset made from this source fuses into one Ray Data operator (read, check, then a
    map, an aggregation or a write: a data-stage pass), so per-operator reservations are off."""

    def dataset(self) -> ray.data.Dataset:
        """One read task per file: a fused downstream map can never bundle several files into one
        task, as it did when the files were items of a `map_batches` (batch sizes bundle inputs)."""
        ds = ray.data.read_datasource(_Files(self), override_num_blocks=len(self.files))
        if self.single_operator:
            # Ray 2.60's reservations share a cluster between operators, and with only one they
            # kept half of a 2-CPU cluster idle: 8 tasks of 0.4 s took 2.9 s with them and 1.85 s
            # without. A pipeline of several (an actor pool after the read) keeps them for its
            # backpressure. Derived datasets inherit the setting.
            ds.context.op_resource_reservation_enabled = False
        return ds

    def with_(self, **changes) -> RowSource:
        return replace(self, **changes)

    def blocks(self, index: int) -> Iterator[pa.Table]:
        """The valid rows of file `index`, with their split. The first pass waits for the ledger to
        take the file's outcome only after the block has gone downstream, so the ledger actor's
        start-up overlaps the first tasks' work instead of stalling them."""
        if self.verdicts is None:
            table, valid, recorded = self._check(index)
        else:
            (table, valid), recorded = self._recheck(index), None
        yield self._valid_rows(index, table, valid)
        if recorded is not None:
            ray.get(recorded)

    def _check(self, index: int) -> tuple[pa.Table, pa.Array | np.ndarray, ray.ObjectRef | None]:
        """Read the whole file and check every row: (table, valid mask, the ledger's receipt)."""
        source = self.files[index]
        uri, schema = source.uri, self.checks.schema
        try:
            content = read_bytes(source)
            raw = parse_file(content, source.format)
        except Exception as e:  # noqa: BLE001 - any read failure quarantines the file, named
            record, outcome = unreadable(uri, e, schema)
            return schema.empty_table(), np.empty(0, bool), self._report(uri, outcome, record)
        table, reason, detail = conform(raw, self.checks)
        recorded = None
        if self.record is not None:
            labels = table[self.label].combine_chunks() if self.label else None
            outcome = outcome_of(uri, table.num_rows, reason, labels)
            outcome.sha256 = hashlib.sha256(content).hexdigest()
            recorded = self._report(uri, outcome, quarantine_rows(table, reason, detail, uri) if outcome.invalid else None)
        return table, pc.is_null(reason), recorded

    def _recheck(self, index: int) -> tuple[pa.Table, np.ndarray]:
        """Read only the columns this pass needs; the valid mask is the first pass's."""
        uri = self.files[index].uri
        schema = pa.schema([self.checks.schema.field(c) for c in self._needed()])
        found = ray.get(self.verdicts)[uri]
        if found is None:  # unreadable, and already quarantined whole
            return schema.empty_table(), np.empty(0, bool)
        rows, invalid = found
        table = cast_to(read_columns(self.files[index], schema.names), schema)
        if table.num_rows != rows:
            raise RuntimeError(f"{uri} changed during the run: {table.num_rows} rows now, {rows} when it was validated")
        valid = np.ones(rows, bool)
        valid[invalid] = False
        return table, valid

    def _needed(self) -> list[str]:
        """The columns a later pass reads: those it emits, the dedupe key, the time split's column."""
        if self.columns is None:
            return self.checks.schema.names
        needed = set(self.columns)
        if self.dedupe_key is not None and (self.emit_keys or self.duplicates is not None):
            needed |= set(self.dedupe_key)
        if isinstance(self.split, TimeSplit):
            needed.add(self.split.column)
        return [c for c in self.checks.schema.names if c in needed]

    def _valid_rows(self, index: int, table: pa.Table, valid: pa.Array | np.ndarray) -> pa.Table:
        """Deduplicate, assign splits, keep the valid rows (of `keep_split`) and the emitted columns."""
        uri, keep = self.files[index].uri, np.array(valid, dtype=bool)  # writable: masks are and-ed in
        if self.dedupe_key is not None and (self.emit_keys or self.duplicates is not None):
            keys, pos = row_keys(table, list(self.dedupe_key)), positions(index, table.num_rows)
            if self.duplicates is not None:
                dups: Duplicates = ray.get(self.duplicates)
                keep &= dups.keep(keys, pos)
            if self.emit_keys:
                table = table.append_column(KEY, pa.array(keys)).append_column(POS, pa.array(pos))
        split = np.full(table.num_rows, TRAIN, np.int8) if self.split is None else self.split.assign(table, uri)
        if self.keep_split is not None:
            keep &= split == self.keep_split
        if self.columns is not None:
            table = table.select([*self.columns, *([KEY, POS] if self.emit_keys else [])])
        table = table.append_column(SPLIT, pa.array(split))
        return table if keep.all() else table.filter(pa.array(keep))

    def _report(self, uri: str, outcome: FileOutcome, invalid: pa.Table | None) -> ray.ObjectRef | None:
        if self.record is None:
            return None
        if invalid is not None and self.record.quarantine_dir is not None:
            write_quarantine(invalid, self.record.quarantine_dir, uri)
        return self.record.ledger.record.remote(self.record.run, uri, outcome)


def verdicts_of(outcomes: dict[str, FileOutcome]) -> Verdicts:
    """What later passes need of the first pass's outcomes."""
    return {uri: None if o.error else (o.rows, o.invalid_rows) for uri, o in outcomes.items()}


def row_source(files: list[SourceFile], checks: RowChecks, cfg: DataConfig) -> RowSource:
    """The data stage's source before any pass: no split, no known duplicates, nothing recorded yet."""
    key = None
    if cfg.dedupe == "key":
        missing = sorted(set(cfg.dedupe_key) - set(checks.schema.names))
        if missing:
            raise ValueError(f"data.dedupe_key: {missing} are not columns of the data; it has {checks.schema.names}")
        key = tuple(cfg.dedupe_key)
    elif cfg.dedupe == "exact":
        key = tuple(checks.schema.names)
    label = cfg.label if cfg.task == "classification" else None
    return RowSource(tuple(files), checks, label, dedupe_key=key, single_operator=True)


class _Files(Datasource):
    def __init__(self, source: RowSource):
        self.source = source

    def estimate_inmemory_data_size(self) -> None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        return [
            ReadTask(
                lambda index=index: self.source.blocks(index),
                BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(f.uri,)),
                per_task_row_limit=per_task_row_limit,
            )
            for index, f in enumerate(self.source.files)
        ]
