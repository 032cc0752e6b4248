"""Ray Data aggregations that fitting needs and Ray lacks or runs value by value.

Each reduces a block to a small, bounded accumulator, so a statistic over any number of rows
never holds a column in memory: `Summary` the count, mean, spread and range of many numeric
columns in one numpy pass each (Ray's Count/Mean/Std/Min/Max, one aggregation per column and
statistic, took ~15x longer and dominated the fitting passes), `Quantiles` a KLL sketch (Ray's
`ApproximateQuantile` feeds its sketch one Python value at a time, ~100x slower), `Sample` a
uniform sample of whole rows of at most `rows` rows, `CrossMoments` the sums that give a
correlation matrix.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data
from datasketches import kll_doubles_sketch
from ray.data.aggregate import AggregateFn, AggregateFnV2
from ray.data.block import BlockAccessor

from raymlp.data.selection import Moments

SKETCH_K = 800
"""KLL accuracy parameter: quantile rank error about 0.3% at any size, exact below ~800 values."""


def aggregate(ds: ray.data.Dataset, *aggs: AggregateFn) -> dict[str, Any]:
    """`ds.aggregate(*aggs)` without a shuffle: each block is reduced to its accumulators inside the
    streaming map tasks, and the small accumulators are merged and finalized on the driver.

    Ray 2.60 plans a global aggregation as an exchange: the hash shuffle (its default) started
    aggregator actors and made each fitting pass ~5x slower on 2 cores, and the sort-based one is
    an all-to-all barrier that held every block of a 20M-row pass and spilled 6.7 GiB to disk.
    The aggregations' own `accumulate_block`/`merge`/`finalize` do the work either way.
    """

    def partial(block: pa.Table) -> pa.Table:
        accumulators = [agg.accumulate_block(agg.init(None), block) for agg in aggs]
        return pa.table({"partial": [pickle.dumps(accumulators)]})

    totals = [agg.init(None) for agg in aggs]
    for row in ds.map_batches(partial, batch_format="pyarrow", batch_size=None).iter_rows():
        for i, (agg, acc) in enumerate(zip(aggs, pickle.loads(row["partial"]))):
            totals[i] = agg.merge(totals[i], acc)
    return {agg.name: agg.finalize(total) for agg, total in zip(aggs, totals)}


def _column(block: Any, name: str) -> np.ndarray:
    """A numeric column as float64 numpy, nulls as NaN (a copy only where a conversion needs one)."""
    column = BlockAccessor.for_block(block).to_arrow()[name]
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


@dataclass(frozen=True, eq=False)
class ColumnStats:
    """Per column of a set: count of present values, mean, centred sum of squares, min and max.

    A value is missing when null or NaN, column by column (the transform imputes both alike).
    Blocks merge with Chan et al.'s update, which stays exact where raw sums of squares would
    cancel for columns with large offsets.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def of(cls, columns: list[np.ndarray]) -> ColumnStats:
        """Statistics of float64 columns, NaN as missing; masked reductions rather than copies of
        the present values, which cost as much again."""
        stats = np.zeros((5, len(columns)))
        stats[3:] = [[np.inf], [-np.inf]]
        for i, values in enumerate(columns):
            missing = np.isnan(values)
            count = len(values) - np.count_nonzero(missing)
            if count == len(values):  # the common case, and every cleaned column: plain reductions
                mean = values.mean()
                centred = values - mean
                stats[:, i] = count, mean, centred @ centred, values.min(), values.max()
            elif count:
                mean = np.add.reduce(values, where=~missing) / count
                centred = values - mean
                centred[missing] = 0.0
                stats[:, i] = count, mean, centred @ centred, np.fmin.reduce(values), np.fmax.reduce(values)
        return cls(*stats)

    def __add__(self, other: ColumnStats) -> ColumnStats:
        count = self.count + other.count
        delta = other.mean - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(count > 0, other.count / count, 0.0)
        return ColumnStats(
            count=count,
            mean=self.mean + delta * share,
            m2=self.m2 + other.m2 + delta**2 * self.count * share,
            min=np.minimum(self.min, other.min),
            max=np.maximum(self.max, other.max),
        )

    def column(self, i: int) -> dict[str, float | None]:
        """Column `i`'s count, mean, population std (ddof 0), min and max; None but the count when
        it has no values."""
        n = int(self.count[i])
        if not n:
            return {"count": 0, "mean": None, "std": None, "min": None, "max": None}
        std = float(np.sqrt(max(self.m2[i], 0.0) / n))
        return {"count": n, "mean": float(self.mean[i]), "std": std, "min": float(self.min[i]), "max": float(self.max[i])}


class Summary(AggregateFnV2):
    """Count, mean, std (ddof 0), min and max of each numeric column, in one aggregation:
    `{column: {"count": ..., "mean": ..., ...}}` (see `ColumnStats`)."""

    def __init__(self, columns: list[str], alias_name: str):
        self._columns = list(columns)
        super().__init__(alias_name, zero_factory=lambda: None, on=None, ignore_nulls=True)

    def aggregate_block(self, block: Any) -> ColumnStats:
        table = BlockAccessor.for_block(block).to_arrow()
        return ColumnStats.of([_column(table, c) for c in self._columns])

    def combine(self, current: ColumnStats | None, new: ColumnStats | None) -> ColumnStats | None:
        if current is None:
            return new
        return current if new is None else current + new

    def finalize(self, accumulator: ColumnStats | None) -> dict[str, dict[str, float | None]]:  # type: ignore[override]
        if accumulator is None:
            accumulator = ColumnStats.of([np.empty(0)] * len(self._columns))
        return {c: accumulator.column(i) for i, c in enumerate(self._columns)}


class Quantiles(AggregateFnV2):
    """Approximate quantiles of a numeric column (nulls ignored); None when it has no values."""

    def __init__(self, on: str, quantiles: list[float], alias_name: str):
        self._quantiles = list(quantiles)
        super().__init__(alias_name, zero_factory=lambda: kll_doubles_sketch(SKETCH_K).serialize(), on=on, ignore_nulls=True)

    def aggregate_block(self, block: Any) -> bytes:
        values = _column(block, self._target_col_name)
        sketch = kll_doubles_sketch(SKETCH_K)
        sketch.update(values[~np.isnan(values)])
        return sketch.serialize()

    def combine(self, current: bytes, new: bytes) -> bytes:
        merged = kll_doubles_sketch.deserialize(current)
        merged.merge(kll_doubles_sketch.deserialize(new))
        return merged.serialize()

    def finalize(self, accumulator: bytes) -> list[float] | None:  # type: ignore[override]
        sketch = kll_doubles_sketch.deserialize(accumulator)
        return None if sketch.is_empty() else list(sketch.get_quantiles(self._quantiles))


class Sample(AggregateFnV2):
    """A uniform random sample of at most `rows` rows of `columns`, as numpy arrays.

    Each block keeps a seeded random subset; two partial samples merge in proportion to the rows
    they stand for, so the result is uniform over the dataset and the same on every run.
    """

    def __init__(self, columns: list[str], rows: int, seed: int, alias_name: str = "sample"):
        self._columns, self._rows, self._seed = list(columns), rows, seed
        super().__init__(alias_name, zero_factory=lambda: {"n": 0, "data": None}, on=None, ignore_nulls=False)

    def aggregate_block(self, block: Any) -> dict[str, Any]:
        table: pa.Table = BlockAccessor.for_block(block).to_arrow().select(self._columns)
        n = table.num_rows
        keep = np.sort(np.random.default_rng([self._seed, n]).permutation(n)[: self._rows])
        data = {c: table[c].to_numpy(zero_copy_only=False)[keep] for c in self._columns}
        return {"n": n, "data": data}

    def combine(self, current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        if not new["n"]:
            return current
        if not current["n"]:
            return new
        total = current["n"] + new["n"]
        take_current = min(_size(current), round(self._rows * current["n"] / total))
        take_new = min(_size(new), self._rows - take_current)
        rng = np.random.default_rng([self._seed, total])
        picks = [np.sort(rng.permutation(_size(acc))[:k]) for acc, k in ((current, take_current), (new, take_new))]
        # Accumulators travel between tasks as Arrow rows, so their arrays may come back as lists.
        data = {
            c: np.concatenate([np.asarray(current["data"][c])[picks[0]], np.asarray(new["data"][c])[picks[1]]])
            for c in self._columns
        }
        return {"n": total, "data": data}

    def finalize(self, accumulator: dict[str, Any]) -> dict[str, np.ndarray]:  # type: ignore[override]
        data = accumulator["data"] or {}
        return {c: np.asarray(data.get(c, [])) for c in self._columns}


def _size(accumulator: dict[str, Any]) -> int:
    return len(next(iter(accumulator["data"].values())))


class CrossMoments(AggregateFnV2):
    """Count, sums and cross products of numeric `columns` (rows with a NaN skipped), for a
    correlation matrix without a second pass."""

    def __init__(self, columns: list[str], alias_name: str = "moments"):
        self._columns = list(columns)
        super().__init__(alias_name, zero_factory=lambda: None, on=None, ignore_nulls=True)

    def aggregate_block(self, block: Any) -> Moments:
        x = np.column_stack([_column(block, c) for c in self._columns])
        return Moments.of(x)

    def combine(self, current: Moments | None, new: Moments | None) -> Moments | None:
        if current is None:
            return new
        return current if new is None else current + new

    def finalize(self, accumulator: Moments | None) -> Moments | None:  # type: ignore[override]
        return accumulator
