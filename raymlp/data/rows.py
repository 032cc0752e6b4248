"""The valid rows of a source, as a lazy Ray Dataset that every pass streams through again.

One task per file reads it, checks every row (validate.py), assigns each valid row its split
(split.py) and drops repeated rows (clean.py). In the first pass it also records the file's outcome
in the ledger and writes its invalid rows to quarantine; later passes only read.
"""

from __future__ import annotations

import hashlib
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
from raymlp.data.sources import SourceFile, parse_file, read_bytes
from raymlp.data.split import SPLIT, TRAIN, SplitRule
from raymlp.data.validate import (
    FileOutcome,
    RowChecks,
    conform,
    outcome_of,
    quarantine_rows,
    unreadable,
    write_quarantine,
)


@dataclass(frozen=True)
class Record:
    """Where the first pass reports: the ledger actor, and the quarantine folder (None: drop)."""

    ledger: ray.actor.ActorHandle
    quarantine_dir: str | None


@dataclass(frozen=True)
class RowSource:
    """Everything a read task needs; shipped with each task, so it stays small (the duplicate
    table travels as an object reference)."""

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
    emit_keys: bool = False
    """Add the dedupe key hash and row position columns (for finding duplicates)."""

    def dataset(self) -> ray.data.Dataset:
        """One read task per file: a fused downstream map can never bundle several files into one
        task, as it did when the files were items of a `map_batches` (batch sizes bundle inputs)."""
        return ray.data.read_datasource(_Files(self), override_num_blocks=len(self.files))

    def with_(self, **changes) -> RowSource:
        return replace(self, **changes)

    def read(self, index: int) -> pa.Table:
        """The valid rows of file `index`, with their split."""
        source = self.files[index]
        uri, schema = source.uri, self.checks.schema
        try:
            content = read_bytes(source)
            raw = parse_file(content, source.format)
        except Exception as e:  # noqa: BLE001 - any read failure quarantines the file, named
            record, outcome = unreadable(uri, e, schema)
            self._report(uri, outcome, record)
            return self._empty()
        table, reason, detail = conform(raw, self.checks)
        if self.record is not None:
            labels = table[self.label].combine_chunks() if self.label else None
            outcome = outcome_of(uri, table.num_rows, reason, labels)
            outcome.sha256 = hashlib.sha256(content).hexdigest()
            self._report(uri, outcome, quarantine_rows(table, reason, detail, uri) if outcome.invalid else None)
        valid = pc.is_null(reason)
        pos = positions(index, table.num_rows)
        if self.dedupe_key is not None and (self.emit_keys or self.duplicates is not None):
            keys = row_keys(table, list(self.dedupe_key))
            if self.duplicates is not None:
                dups: Duplicates = ray.get(self.duplicates)
                valid = pc.and_(valid, pa.array(dups.keep(keys, pos)))
            if self.emit_keys:
                table = table.append_column(KEY, pa.array(keys)).append_column(POS, pa.array(pos))
        split = np.full(table.num_rows, TRAIN, np.int8) if self.split is None else self.split.assign(table, uri)
        return table.append_column(SPLIT, pa.array(split)).filter(valid)

    def _report(self, uri: str, outcome: FileOutcome, invalid: pa.Table | None) -> None:
        if self.record is None:
            return
        if invalid is not None and self.record.quarantine_dir is not None:
            write_quarantine(invalid, self.record.quarantine_dir, uri)
        ray.get(self.record.ledger.record.remote(uri, outcome))

    def _empty(self) -> pa.Table:
        table = self.checks.schema.empty_table()
        if self.emit_keys:
            table = table.append_column(KEY, pa.array([], pa.int64())).append_column(POS, pa.array([], pa.int64()))
        return table.append_column(SPLIT, pa.array([], pa.int8()))


def row_source(files: list[SourceFile], checks: RowChecks, cfg: DataConfig) -> RowSource:
    """The source before any pass: no split, no known duplicates, nothing recorded yet."""
    key = None
    if cfg.dedupe == "key":
        missing = sorted(set(cfg.dedupe_key) - set(checks.schema.names))
        if missing:
            raise ValueError(f"data.dedupe_key: {missing} are not columns of the data; it has {checks.schema.names}")
        key = tuple(cfg.dedupe_key)
    elif cfg.dedupe == "exact":
        key = tuple(checks.schema.names)
    label = cfg.label if cfg.task == "classification" else None
    return RowSource(tuple(files), checks, label, dedupe_key=key)


class _Files(Datasource):
    def __init__(self, source: RowSource):
        self.source = source

    def estimate_inmemory_data_size(self) -> None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        return [
            ReadTask(
                lambda index=index: [self.source.read(index)],
                BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(f.uri,)),
                per_task_row_limit=per_task_row_limit,
            )
            for index, f in enumerate(self.source.files)
        ]
