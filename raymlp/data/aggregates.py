"""Ray Data aggregations that fitting needs and Ray lacks or runs value by value.

Each reduces a block to a small, bounded accumulator, so a statistic over any number of rows
never holds a column in memory: `Quantiles` is a KLL sketch (Ray's `ApproximateQuantile` feeds
its sketch one Python value at a time, ~100x slower), `Sample` a uniform sample of whole rows of
at most `rows` rows, `CrossMoments` the sums that give a correlation matrix.
"""

from __future__ import annotations

import pickle
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
    column = BlockAccessor.for_block(block).to_arrow()[name]
    return column.to_numpy() if column.null_count == 0 else column.to_numpy(zero_copy_only=False).astype(float)


class Quantiles(AggregateFnV2):
    """Approximate quantiles of a numeric column (nulls ignored); None when it has no values."""

    def __init__(self, on: str, quantiles: list[float], alias_name: str):
        self._quantiles = list(quantiles)
        super().__init__(alias_name, zero_factory=lambda: kll_doubles_sketch(SKETCH_K).serialize(), on=on, ignore_nulls=True)

    def aggregate_block(self, block: Any) -> bytes:
        values = np.asarray(_column(block, self._target_col_name), dtype=np.float64)
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
        x = np.column_stack([np.asarray(_column(block, c), dtype=np.float64) for c in self._columns])
        return Moments.of(x)

    def combine(self, current: Moments | None, new: Moments | None) -> Moments | None:
        if current is None:
            return new
        return current if new is None else current + new

    def finalize(self, accumulator: Moments | None) -> Moments | None:  # type: ignore[override]
        return accumulator
