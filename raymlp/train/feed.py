"""Batches for one worker from its Ray Data shard: streamed every epoch, or read once into tensors.

Streaming from Ray Data costs per batch (Arrow to numpy to torch, a hop through the object store),
and on a small machine the training step waits on it most of the epoch. A shard that fits in
memory is read once, in large blocks, into two tensors on the training device; every later epoch
is a seeded permutation of them, which is what a plain torch loop over in-memory tensors does.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from ray.data import DataIterator

READ_BATCH = 65_536
"""Rows per block while filling the cache: large blocks amortize Ray Data's per-batch cost."""


class ShardFeed:
    def __init__(
        self,
        shard: DataIterator,
        *,
        cache: bool,
        batch_size: int,
        target_dtype: torch.dtype,
        device: torch.device,
        seed: int,
    ):
        self.shard, self.cache, self.batch_size, self.device, self.seed = shard, cache, batch_size, device, seed
        self.dtypes = {"x": torch.float32, "y": target_dtype}
        self._tensors: tuple[torch.Tensor, torch.Tensor] | None = None

    def rows(self) -> int | None:
        """Rows in the shard, when cached (reading it if not yet read)."""
        return len(self._cached()[0]) if self.cache else None

    def batches(self, epoch: int, shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (x, y) batches; shuffled by a generator seeded with `seed` and `epoch`, so
        a resumed run sees the same order the interrupted one would have."""
        if not self.cache:
            for batch in self.shard.iter_torch_batches(
                batch_size=self.batch_size,
                dtypes=self.dtypes,
                device=self.device,
                prefetch_batches=2,
                local_shuffle_buffer_size=4 * self.batch_size if shuffle else None,
                local_shuffle_seed=self.seed + epoch if shuffle else None,
            ):
                yield batch["x"], batch["y"]
            return
        x, y = self._cached()
        order = None
        if shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(len(x), generator=generator).to(self.device)
        for start in range(0, len(x), self.batch_size):
            if order is None:
                yield x[start : start + self.batch_size], y[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                yield x[index], y[index]

    def _cached(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tensors is None:
            xs, ys = [], []
            for batch in self.shard.iter_torch_batches(batch_size=READ_BATCH, dtypes=self.dtypes, device=self.device):
                xs.append(batch["x"])
                ys.append(batch["y"])
            self._tensors = (torch.cat(xs), torch.cat(ys))
        return self._tensors
