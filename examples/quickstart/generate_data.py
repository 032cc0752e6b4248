"""Write a synthetic customer-churn dataset as parquet shards; offline and seeded.

    python examples/quickstart/generate_data.py --rows 20000 --shards 4

Churn depends non-linearly on the features (short tenure on a basic plan with many support calls
churns; long-tenure premium customers stay), so an MLP has something to learn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa

from raymlp.data.sources import write_shards

PLANS = np.array(["basic", "standard", "premium"])
REGIONS = np.array(["north", "south", "east", "west"])


def make_table(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    tenure = rng.gamma(2.0, 12.0, rows)
    monthly = rng.normal(60.0, 20.0, rows).clip(5, None)
    calls = rng.poisson(1.5, rows)
    age = rng.integers(18, 80, rows)
    plan = rng.choice(PLANS, rows, p=[0.5, 0.3, 0.2])
    region = rng.choice(REGIONS, rows)
    logit = (
        1.2
        - 0.08 * tenure
        + 0.6 * calls
        + 0.02 * (monthly - 60)
        - 1.0 * (plan == "premium")
        + 0.8 * (plan == "basic") * (calls > 2)
        + 0.4 * (region == "south")
        - 0.01 * np.abs(age - 45)
    )
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pa.table({
        "tenure_months": tenure.round(1),
        "monthly_charges": monthly.round(2),
        "support_calls": calls,
        "age": age,
        "plan": plan,
        "region": region,
        "churned": churned.astype(np.int64),
    })


def generate(out: Path, rows: int, shards: int, seed: int = 0) -> list[Path]:
    return write_shards(make_table(rows, seed), out, shards)


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
