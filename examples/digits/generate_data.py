"""Write scikit-learn's bundled handwritten digits (1797 8x8 images, no download) as parquet
shards: one column per pixel, `p00` to `p63` in row-major order, and the `digit` label.

    python examples/digits/generate_data.py --shards 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits

from raymlp.data.sources import write_shards

PIXELS = [f"p{i:02d}" for i in range(64)]


def make_table(seed: int = 0) -> pa.Table:
    images, digits = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(digits))  # shards mix every digit
    columns = {name: images[order, i].astype(np.float32) for i, name in enumerate(PIXELS)}
    return pa.table(columns | {"digit": digits[order].astype(np.int64)})


def generate(out: Path, shards: int, seed: int = 0) -> list[Path]:
    return write_shards(make_table(seed), out, shards)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = generate(args.out, args.shards, args.seed)
    print(f"wrote {sum(pq.read_metadata(p).num_rows for p in paths)} images in {len(paths)} shards to {args.out}")


if __name__ == "__main__":
    main()
