"""Batches for one worker: from its rows held in memory, or streamed from its Ray Data shard.

A split that fits in memory (`train.cache_data`) is handed to the workers as the blocks of the
materialized dataset: object references and row counts (`SplitBlocks`). Each worker reads the rows
of its shard with one `ray.get`, zero-copy from its node's object store, into two tensors on its
device; every epoch is a seeded permutation of them, as a plain torch loop over in-memory tensors
does. No Ray Data executor runs for it: handing Ray Train the datasets makes it start a
`streaming_split` coordinator per split and a streaming executor per run, ~9 s of a run's start
on 2 cores, which every tune trial paid again. A split too large for memory streams from Ray Data
every epoch instead (`StreamFeed`), paying per batch (Arrow to numpy to torch, through the object
store).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import ray
import ray.data
import torch
from ray.data import DataIterator
from ray.data.block import BlockAccessor

Batch = tuple[torch.Tensor, torch.Tensor]


class Feed(Protocol):
    device: torch.device

    def rows(self) -> int | None:
        """Rows in this worker's shard, when known before the first epoch."""

    def batches(self, epoch: int, shuffle: bool) -> Iterator[Batch]:
        """One epoch of (x, y) batches; a shuffle is seeded by the feed's seed and `epoch`, so a
        resumed run sees the order the interrupted one would have."""


@dataclass(frozen=True)
class SplitBlocks:
    """A materialized split as its blocks, in order: object references and their row counts."""

    refs: tuple[ray.ObjectRef, ...]
    rows: tuple[int, ...]

    @classmethod
    def of(cls, ds: ray.data.Dataset) -> SplitBlocks:
        """The blocks of `ds`: free for a materialized dataset (as `prepare_data` leaves its
        splits); any other is executed here, in the caller."""
        entries = [entry for bundle in ds.iter_internal_ref_bundles() for entry in bundle.blocks]
        return cls(tuple(e.ref for e in entries), tuple(e.metadata.num_rows for e in entries))

    def shard(self, rank: int, world: int, *, equal: bool) -> range:
        """The rows of worker `rank`: contiguous, covering every row, sizes differing by at most
        one; `equal` makes every size the same (n // world, the last n % world rows dropped), as
        data-parallel training needs: a worker with one more batch would wait on the others'
        gradients forever."""
        total = sum(self.rows)
        if equal:
            size = total // world
            return range(rank * size, (rank + 1) * size)
        return range(total * rank // world, total * (rank + 1) // world)

    def read(self, rows: range, target_dtype: torch.dtype, device: torch.device) -> Batch:
        """Columns `x` and `y` of `rows`, fetched from the object store in one call."""
        starts = list(itertools.accumulate(self.rows, initial=0))
        picked = [i for i in range(len(self.refs)) if starts[i] < rows.stop and starts[i + 1] > rows.start]
        xs, ys = [], []
        for i, block in zip(picked, ray.get([self.refs[i] for i in picked])):
            lo, hi = max(rows.start, starts[i]) - starts[i], min(rows.stop, starts[i + 1]) - starts[i]
            accessor = BlockAccessor.for_block(BlockAccessor.for_block(block).slice(lo, hi, copy=False))
            xs.append(accessor.to_numpy("x"))
            ys.append(accessor.to_numpy("y"))
        if not xs:
            raise ValueError(f"a worker's shard of a {sum(self.rows)}-row split is empty: use fewer workers")
        # The concatenation is this worker's own copy: blocks in the object store are read-only.
        x = torch.from_numpy(np.concatenate(xs).astype(np.float32, copy=False))
        y = torch.from_numpy(np.concatenate(ys)).to(target_dtype)
        return x.to(device), y.to(device)


class TensorFeed:
    """A shard held as two tensors on the training device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, seed: int):
        self.x, self.y, self.batch_size, self.seed, self.device = x, y, batch_size, seed, x.device

    def rows(self) -> int:
        return len(self.x)

    def batches(self, epoch: int, shuffle: bool) -> Iterator[Batch]:
        order = None
        if shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(len(self.x), generator=generator).to(self.device)
        for start in range(0, len(self.x), self.batch_size):
            if order is None:
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                yield self.x[index], self.y[index]


class StreamFeed:
    """A shard streamed from Ray Data every epoch, with prefetching and a local shuffle buffer."""

    def __init__(
        self, shard: DataIterator, *, batch_size: int, target_dtype: torch.dtype, device: torch.device, seed: int
    ):
        self.shard, self.batch_size, self.device, self.seed = shard, batch_size, device, seed
        self.dtypes = {"x": torch.float32, "y": target_dtype}

    def rows(self) -> None:
        return None

    def batches(self, epoch: int, shuffle: bool) -> Iterator[Batch]:
        for batch in self.shard.iter_torch_batches(
            batch_size=self.batch_size,
            dtypes=self.dtypes,
            device=self.device,
            prefetch_batches=2,
            local_shuffle_buffer_size=4 * self.batch_size if shuffle else None,
            local_shuffle_seed=self.seed + epoch if shuffle else None,
        ):
            yield batch["x"], batch["y"]
