"""Read sharded parquet or CSV sources into a Ray Dataset, from local paths or cloud URIs."""

from __future__ import annotations

from pathlib import Path

import ray.data

from raymlp.config.schema import DataConfig

_READERS = {"parquet": ray.data.read_parquet, "csv": ray.data.read_csv}
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def read_source(cfg: DataConfig) -> ray.data.Dataset:
    """A lazy Dataset over `cfg.path`; a missing local path fails here, naming the path."""
    return _READERS[source_format(cfg)](cfg.path)


def source_format(cfg: DataConfig) -> str:
    if cfg.format:
        return cfg.format
    if "://" in cfg.path:
        fmt = _SUFFIXES.get(Path(cfg.path).suffix.lower())
        if fmt is None:
            raise ValueError(f"data.format: cannot tell the format of {cfg.path}; set data.format to parquet or csv")
        return fmt
    path = Path(cfg.path)
    if not path.exists():
        raise FileNotFoundError(f"data.path: no such file or folder: {path}")
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    formats = {_SUFFIXES[p.suffix.lower()] for p in files if p.suffix.lower() in _SUFFIXES}
    if len(formats) != 1:
        found = sorted(formats) or "no .parquet or .csv files"
        raise ValueError(f"data.format: cannot tell the format of {path} (found {found}); set data.format")
    return formats.pop()
