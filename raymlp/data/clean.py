"""Exact and key-based deduplication without shuffling the rows themselves.

Each valid row gets a 64-bit hash of its key (every column for `exact`) and its position (file
index, row index). One grouped aggregation over those two numbers, the only data shuffled, finds
the keys seen more than once and the first position of each; every later pass keeps a row unless
its key is among those and it is not the first copy. Two different keys colliding in 64 bits (odds
near 1e-5 at 20 million rows) would be treated as duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import ray.data
from ray.data.aggregate import Count, Min
from ray.data.context import ShuffleStrategy

KEY = "_raymlp_key"
POS = "_raymlp_pos"


@dataclass(frozen=True)
class Duplicates:
    """The keys seen more than once (sorted) and the position of the copy to keep for each."""

    keys: np.ndarray
    first: np.ndarray
    dropped: int
    """Rows that `keep` removes: the count of every repeated key, less one."""

    def keep(self, keys: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Mask of rows to keep."""
        if not len(self.keys):
            return np.ones(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        repeated = self.keys[at] == keys
        return ~repeated | (self.first[at] == positions)


def row_keys(table: pa.Table, columns: list[str]) -> np.ndarray:
    """A stable 64-bit hash of `columns` per row (pandas' fixed-key SipHash, the same on every
    machine), as int64: Ray's sort-based grouping cannot sort unsigned keys."""
    frame = table.select(columns).to_pandas()
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64).view(np.int64)


def positions(file_index: int, rows: int) -> np.ndarray:
    """File and row order as one sortable number: the first copy of a row is the smallest."""
    return (np.int64(file_index) << np.int64(32)) + np.arange(rows, dtype=np.int64)


def find_duplicates(keyed: ray.data.Dataset, partitions: int) -> Duplicates:
    """Group rows of (KEY, POS) by key; `partitions` sizes the shuffle. Sort-based, like every
    aggregation here (see aggregates.aggregate): Ray's hash shuffle starts aggregator actors and
    took ~11 s even on a few hundred rows."""
    keyed.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    groups = keyed.groupby(KEY, num_partitions=partitions).aggregate(
        Count(alias_name="n"), Min(POS, alias_name="first")
    )
    repeated = groups.filter(expr="n > 1").to_arrow_refs()
    tables = [t for t in ray.get(repeated) if t.num_rows]
    if not tables:
        return Duplicates(np.empty(0, np.int64), np.empty(0, np.int64), 0)
    table = pa.concat_tables(tables).sort_by(KEY)
    counts = table["n"].to_numpy()
    return Duplicates(
        keys=table[KEY].to_numpy().astype(np.int64),
        first=table["first"].to_numpy().astype(np.int64),
        dropped=int(counts.sum() - len(counts)),
    )
