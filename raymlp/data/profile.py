"""The data profile: per input column, the missing fraction and either min/mean/std/max or the top
categories, over the train split. Built from the statistics the fitting pass already computed, so
profiling costs no pass of its own; saved with the run and logged to MLflow."""

from __future__ import annotations

from typing import Any

from raymlp.data.fit import Roles

TOP_CATEGORIES = 5


def build_profile(raw: dict[str, Any], roles: Roles, labels: dict[Any, int]) -> dict[str, dict[str, Any]]:
    rows = raw["rows"] or 0
    result: dict[str, dict[str, Any]] = {}
    for c in roles.numeric:
        summary = raw["numeric"][c]
        result[c] = {"missing_fraction": _missing(summary["count"], rows)}
        result[c] |= {k: summary[k] for k in ("min", "max", "mean", "std")}
    for c in roles.categories:
        counts = raw[f"counts:{c}"] or {"values": [], "counts": []}
        present = {str(v): n for v, n in zip(counts["values"], counts["counts"]) if v is not None}
        ranked = sorted(present.items(), key=lambda item: (-item[1], item[0]))
        result[c] = {
            "missing_fraction": _missing(sum(present.values()), rows),
            "distinct": len(ranked),
            "top": dict(ranked[:TOP_CATEGORIES]),
        }
    for c in roles.hashed:
        result[c] = {"missing_fraction": _missing(raw[f"count:{c}"], rows)}
    result["label"] = {"rows": rows}
    if labels:
        result["label"]["classes"] = {str(k): n for k, n in sorted(labels.items(), key=str)}
    else:  # a regression label
        summary = next(iter(raw["target"].values()))
        result["label"] |= {k: summary[k] for k in ("min", "max", "mean", "std")}
    return result


def profile_summary(profile: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, col in profile.items():
        if name == "label":
            continue
        missing = f"{col['missing_fraction']:.1%} missing"
        if col.get("mean") is not None:
            lines.append(f"  {name}: {missing}, min {col['min']:.4g}, mean {col['mean']:.4g}, max {col['max']:.4g}")
        elif "top" in col:
            top = ", ".join(f"{v} ({n})" for v, n in list(col["top"].items())[:3])
            lines.append(f"  {name}: {missing}, {col['distinct']} distinct, top {top}")
        else:
            lines.append(f"  {name}: {missing}")
    label = profile["label"]
    if "classes" in label:
        lines.append(f"  label: {label['classes']}")
    else:
        lines.append(f"  label: min {label['min']:.4g}, mean {label['mean']:.4g}, max {label['max']:.4g}")
    return "\n".join(lines)


def _missing(present: int | None, rows: int) -> float:
    return 1.0 - (present or 0) / rows if rows else 0.0
