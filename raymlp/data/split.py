"""Seeded random and time-based train/valid/test splits that need no shuffle.

A read task assigns every valid row its split as it reads the file, so the assignment is the same in
every pass over the data and on every machine: random splits draw from a generator seeded by the
pipeline seed and the file name (row i of a file always gets the i-th draw); time splits compare the
row's time with cutoffs fitted once, as quantiles of the time column.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from raymlp.config.schema import DataConfig
from raymlp.data.aggregates import Quantiles, aggregate

SPLIT = "_raymlp_split"
TRAIN, VALID, TEST = 0, 1, 2
NAMES = {TRAIN: "train", VALID: "valid", TEST: "test"}


@dataclass(frozen=True)
class RandomSplit:
    seed: int
    valid: float
    test: float

    def assign(self, table: pa.Table, uri: str) -> np.ndarray:
        file_seed = zlib.crc32(PurePosixPath(uri).name.encode())
        draw = np.random.default_rng([self.seed, file_seed]).random(table.num_rows)
        return np.select([draw < self.valid, draw < self.valid + self.test], [VALID, TEST], TRAIN).astype(np.int8)


@dataclass(frozen=True)
class TimeSplit:
    column: str
    valid_from: float
    """Rows at or after this time (seconds since the epoch, or the column's own unit) are valid..."""
    test_from: float
    """...and at or after this one, test."""

    def assign(self, table: pa.Table, uri: str) -> np.ndarray:
        t = as_seconds(table[self.column])
        return np.select([t >= self.test_from, t >= self.valid_from], [TEST, VALID], TRAIN).astype(np.int8)


SplitRule = RandomSplit | TimeSplit


def random_split(cfg: DataConfig, seed: int) -> RandomSplit:
    return RandomSplit(seed, cfg.valid_fraction, cfg.test_fraction)


def fit_time_split(rows: ray.data.Dataset, cfg: DataConfig) -> TimeSplit:
    """Cutoffs at the (1 - valid - test) and (1 - test) quantiles of `cfg.time_column`."""
    column = cfg.time_column
    assert column is not None  # the schema requires it for `split: time`
    valid_q, test_q = 1.0 - cfg.valid_fraction - cfg.test_fraction, 1.0 - cfg.test_fraction
    seconds = rows.select_columns([column]).map_batches(
        lambda t: pa.table({column: as_seconds(t[column])}), batch_format="pyarrow"
    )
    cuts = aggregate(seconds, Quantiles(column, [valid_q, test_q], alias_name="cuts"))["cuts"]
    return TimeSplit(column, valid_from=float(cuts[0]), test_from=float(cuts[1]) if cfg.test_fraction else np.inf)


def as_seconds(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps as float seconds since the epoch; numbers as they are."""
    if pa.types.is_timestamp(column.type):
        micros = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
        return micros.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
