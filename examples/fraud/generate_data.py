"""Write synthetic card transactions as JSON-lines shards; offline and seeded.

    python examples/fraud/generate_data.py --rows 20000 --shards 4

Fraud (about 17% of rows) is driven by night hours, large amounts, young cards, web purchases, a few
countries and a few merchant categories, plus noise, so an MLP on the derived features clearly beats
the majority class. The data is deliberately dirty, as real exports are: nulls in device and card age,
a long tail of rare merchant categories, huge amount outliers, ~2% exact duplicate rows, ~1% rows that
reuse a transaction_id with different content, and ~0.2% malformed rows (amount "n/a" or negative,
unknown country) for validation to quarantine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

COUNTRIES = np.array(["US", "GB", "DE", "FR", "CA", "ES", "IT", "NL", "BR", "MX", "NG", "RO"])
COUNTRY_P = np.array([0.35, 0.12, 0.1, 0.08, 0.07, 0.06, 0.05, 0.05, 0.04, 0.03, 0.03, 0.02])
RISKY_COUNTRIES = ["BR", "NG", "RO"]
DEVICES = np.array(["phone", "web", "pos"])
COLUMNS = [
    "transaction_id",
    "ts",
    "amount",
    "merchant_category",
    "country",
    "device",
    "card_age_days",
    "customer_tenure_days",
    "is_fraud",
]
START = np.datetime64("2024-01-01T00:00:00", "s")
DAYS = 90
# Legitimate spending follows the day; fraud does not, so night hours carry signal.
HOUR_WEIGHTS = np.array([2, 1, 1, 1, 1, 2, 4, 6, 8, 9, 10, 10, 11, 11, 10, 10, 10, 11, 12, 12, 10, 8, 6, 4], float)
Merchants = tuple[np.ndarray, np.ndarray, np.ndarray]


def merchant_categories(rng: np.random.Generator, n: int = 300) -> Merchants:
    """Codes, Zipf-like probabilities (so most codes are rare) and the fraud effect of each code."""
    codes = np.char.add("mcc_", np.sort(rng.choice(np.arange(1000, 10000), n, replace=False)).astype(str))
    rank = rng.permutation(n) + 1
    p = 1.0 / rank**1.1
    effect = np.zeros(n)
    effect[rng.choice(np.flatnonzero((rank > 3) & (rank <= 60)), 8, replace=False)] = 5.0
    return codes, p / p.sum(), effect


def make_rows(rng: np.random.Generator, n: int, mcc: Merchants) -> dict[str, np.ndarray]:
    """`n` clean transactions with labels (ids are assigned by the caller)."""
    codes, code_p, code_effect = mcc
    hour = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    seconds = rng.integers(0, DAYS, n) * 86400 + hour * 3600 + rng.integers(0, 3600, n)
    amount = rng.lognormal(3.5, 1.0, n)
    outlier = rng.random(n) < 0.005
    amount[outlier] *= rng.uniform(50, 500, outlier.sum())
    category = rng.choice(len(codes), n, p=code_p)
    country = rng.choice(COUNTRIES, n, p=COUNTRY_P)
    device = rng.choice(DEVICES, n, p=[0.45, 0.3, 0.25])
    card_age = rng.gamma(1.5, 300, n).astype(np.int64)
    tenure = np.maximum(card_age + rng.normal(200, 150, n), 0).round(1)
    night = (hour <= 4) | (hour >= 23)
    logit = (
        -4.5
        + 6.0 * night
        + 2.5 * np.clip(np.log(amount / 60), -0.5, 3)
        + 5.5 * (card_age < 60)
        + 5.0 * np.isin(country, RISKY_COUNTRIES)
        + 1.0 * (device == "web")
        + code_effect[category]
        - 1.0 * (tenure > 1000)
        + rng.normal(0, 0.3, n)
    )
    is_fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    device = device.astype(object)
    device[rng.random(n) < 0.08] = None
    card_age_col = card_age.astype(object)
    card_age_col[rng.random(n) < 0.03] = None
    return {
        "ts": np.datetime_as_string(START + seconds, unit="s", timezone="UTC").astype(object),
        "amount": amount.round(2).astype(object),
        "merchant_category": codes[category].astype(object),
        "country": country.astype(object),
        "device": device,
        "card_age_days": card_age_col,
        "customer_tenure_days": tenure.astype(object),
        "is_fraud": is_fraud.astype(object),
    }


def make_table(rows: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Columns as object arrays of JSON values, and counts of the planted defects."""
    rng = np.random.default_rng(seed)
    mcc = merchant_categories(rng)
    n_exact, n_key, n_bad = round(rows * 0.02), round(rows * 0.01), max(3, round(rows * 0.002))
    n_unique = rows - n_exact - n_key
    table = make_rows(rng, n_unique, mcc)
    ids = np.char.add("tx_", rng.choice(10 * rows, n_unique, replace=False).astype(str))
    table["transaction_id"] = ids.astype(object)
    # Key duplicates reuse an existing id with freshly drawn content; exact duplicates copy whole rows.
    key_dups = make_rows(rng, n_key, mcc)
    reused = rng.choice(n_unique, n_key, replace=False)
    key_dups["transaction_id"] = table["transaction_id"][reused]
    copies = rng.choice(n_unique, n_exact)
    table = {c: np.concatenate([table[c], key_dups[c], table[c][copies]]) for c in COLUMNS}
    # Defects go on rows that are neither copied nor reused, so each is counted once and duplicates stay exact.
    bad = rng.choice(np.setdiff1d(np.arange(n_unique), np.concatenate([reused, copies])), n_bad, replace=False)
    kind = np.arange(n_bad) % 3
    table["amount"][bad[kind == 0]] = "n/a"
    table["amount"][bad[kind == 1]] = -table["amount"][bad[kind == 1]]
    table["country"][bad[kind == 2]] = "ZZ"
    order = rng.permutation(rows)
    table = {c: table[c][order] for c in COLUMNS}
    return table, {"exact_duplicates": n_exact, "key_duplicates": n_key, "malformed": n_bad}


def generate(out: Path, rows: int, shards: int, seed: int = 0) -> tuple[list[Path], dict[str, int]]:
    out.mkdir(parents=True, exist_ok=True)
    table, defects = make_table(rows, seed)
    columns = list(table)
    records = [json.dumps(dict(zip(columns, values))) for values in zip(*(table[c].tolist() for c in columns))]
    bounds = np.linspace(0, rows, shards + 1, dtype=int)
    paths = []
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        paths.append(out / f"part-{i:03d}.jsonl")
        paths[-1].write_text("".join(r + "\n" for r in records[lo:hi]))
    positives = sum(table["is_fraud"].tolist())
    return paths, {"fraud": positives, **defects}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths, counts = generate(args.out, args.rows, args.shards, args.seed)
    print(
        f"wrote {args.rows} rows in {len(paths)} shards to {args.out}: {counts['fraud'] / args.rows:.1%} fraud, "
        f"{counts['exact_duplicates']} exact duplicates, {counts['key_duplicates']} key duplicates, "
        f"{counts['malformed']} malformed"
    )


if __name__ == "__main__":
    main()
