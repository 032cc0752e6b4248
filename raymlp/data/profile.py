"""Lineage and a data profile for the validated dataset.

The fingerprint (schema plus the SHA-256 of every source file) identifies exactly which data a
model was trained on; the profile (per-column statistics from one distributed aggregation pass)
says what that data looked like.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pyarrow as pa
import pyarrow.fs as pa_fs
import ray.data
from ray.data.aggregate import Max, Mean, Min, MissingValuePercentage, Std, ValueCounter

from raymlp.data.features import is_numeric
from raymlp.data.sources import SourceFile

TOP_CATEGORIES = 5


def fingerprint(files: list[SourceFile], schema: pa.Schema) -> str:
    """SHA-256 over the schema and each file's URI and content digest (hashed in parallel)."""
    digests = (
        ray.data.from_items([{"uri": f.uri} for f in files], override_num_blocks=len(files))
        .map(_file_digest)
        .take_all()
    )
    payload = {
        "schema": [[f.name, str(f.type)] for f in schema],
        "files": sorted((d["uri"], d["sha256"]) for d in digests),
    }
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def profile(ds: ray.data.Dataset) -> dict[str, dict[str, Any]]:
    """Per column: missing fraction, and min/max/mean/std for numbers or top categories otherwise."""
    schema = ds.schema().base_schema
    numeric = [f.name for f in schema if is_numeric(f.type)]
    other = [f.name for f in schema if f.name not in numeric]
    aggs = [MissingValuePercentage(c, alias_name=f"missing:{c}") for c in schema.names]
    for c in numeric:
        aggs += [Min(c, alias_name=f"min:{c}"), Max(c, alias_name=f"max:{c}"), Mean(c, alias_name=f"mean:{c}")]
        aggs.append(Std(c, ddof=0, alias_name=f"std:{c}"))
    aggs += [ValueCounter(c, alias_name=f"counts:{c}") for c in other]
    stats = ds.aggregate(*aggs)
    result: dict[str, dict[str, Any]] = {}
    for c in schema.names:
        column: dict[str, Any] = {"missing_fraction": (stats[f"missing:{c}"] or 0.0) / 100}
        if c in numeric:
            column |= {k: _number(stats[f"{k}:{c}"]) for k in ("min", "max", "mean", "std")}
        else:
            counts = stats[f"counts:{c}"]
            ranked = sorted(
                ((n, str(v)) for n, v in zip(counts["counts"], counts["values"]) if v is not None), reverse=True
            )
            column["top"] = {value: n for n, value in ranked[:TOP_CATEGORIES]}
            column["distinct"] = len(ranked)
        result[c] = column
    return result


def profile_summary(prof: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, col in prof.items():
        missing = f"{col['missing_fraction']:.1%} missing"
        if "mean" in col:
            lines.append(f"  {name}: {missing}, min {col['min']:.4g}, mean {col['mean']:.4g}, max {col['max']:.4g}")
        else:
            top = ", ".join(f"{v} ({n})" for v, n in list(col["top"].items())[:3])
            lines.append(f"  {name}: {missing}, {col['distinct']} distinct, top {top}")
    return "\n".join(lines)


def _file_digest(row: dict[str, Any]) -> dict[str, Any]:
    fs, path = pa_fs.FileSystem.from_uri(row["uri"])
    digest = hashlib.sha256()
    try:
        with fs.open_input_stream(path) as stream:
            while chunk := stream.read(1 << 22):
                digest.update(chunk)
    except OSError as e:  # an unreadable file still changes the fingerprint, by its error
        digest.update(f"unreadable: {e}".encode())
    return {"uri": row["uri"], "sha256": digest.hexdigest()}


def _number(value: Any) -> float | None:
    return None if value is None else float(value)
