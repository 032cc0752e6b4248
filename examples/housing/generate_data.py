"""Write a synthetic house-price dataset (regression) as CSV shards; offline and seeded.

    python examples/housing/generate_data.py --rows 20000 --shards 4

The price depends non-linearly on size, age and neighbourhood, with interactions and noise, and
some values are missing, so imputation and a deeper model both matter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa

from raymlp.data.sources import write_shards

NEIGHBOURHOODS = np.array(["center", "riverside", "suburb", "hills", "industrial"])
PREMIUM = np.array([1.6, 1.3, 1.0, 1.2, 0.7])


def make_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    area = rng.gamma(6.0, 20.0, rows).clip(25, None)
    rooms = np.clip(np.round(area / 30 + rng.normal(0, 0.8, rows)), 1, None)
    age = rng.uniform(0, 100, rows)
    hood = rng.integers(0, len(NEIGHBOURHOODS), rows)
    distance = rng.exponential(8.0, rows)
    price = (
        2500 * area**0.9 * PREMIUM[hood] * (1 - 0.004 * age + 0.00003 * age**2) * np.exp(-0.02 * distance)
        + 8000 * rooms
    ) * rng.lognormal(0, 0.08, rows)
    distance_seen = np.where(rng.random(rows) < 0.05, np.nan, distance.round(2))
    return pa.table({
        "area_m2": area.round(1),
        "rooms": rooms.astype(np.int64),
        "age_years": age.round(1),
        "neighbourhood": NEIGHBOURHOODS[hood],
        "distance_km": pa.array(distance_seen, from_pandas=True),
        "price": (price / 1000).round(1),  # thousands
    })


def generate(out: Path, rows: int, shards: int, seed: int = 0) -> list[Path]:
    return write_shards(make_table(rows, seed), out, shards, "csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = generate(args.out, args.rows, args.shards, args.seed)
    print(f"wrote {args.rows} rows in {len(paths)} shards to {args.out}")


if __name__ == "__main__":
    main()
