"""Load a pipeline config from YAML, apply `--set a.b=value` overrides, and save the resolved copy."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from raymlp.config.schema import PipelineConfig, SearchDim

_URI_PREFIXES = ("s3://", "gs://", "gcs://", "abfs://", "hdfs://", "http://", "https://", "file://")


class ConfigError(ValueError):
    """A config that cannot be used; `errors` holds one 'field.path: problem' line each."""

    def __init__(self, source: str, errors: list[str]):
        self.errors = errors
        super().__init__(f"invalid config {source}:\n" + "\n".join(f"  {e}" for e in errors))


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Read YAML at `path`, apply overrides, validate, and resolve relative paths against its folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [f"no such config file: {path}"])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(str(path), [f"not valid YAML: {e}"]) from e
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["the top level must be a mapping of sections"])
    for override in overrides:
        apply_override(raw, override)
    cfg = parse_config(raw, source=str(path))
    return resolve_paths(cfg, path.resolve().parent)


def parse_config(raw: dict[str, Any], source: str = "<dict>") -> PipelineConfig:
    """Validate a raw mapping, turning pydantic's errors into 'field.path: problem. hint' lines."""
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(source, [_describe(err) for err in e.errors()]) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one `a.b.c=value` in place; the value is parsed as a YAML scalar or list."""
    key, sep, value = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError("--set", [f"{override!r}: expected KEY=VALUE, e.g. train.epochs=3"])
    _set_path(raw, key.strip(), yaml.safe_load(value))


def with_values(cfg: PipelineConfig, values: dict[str, Any]) -> PipelineConfig:
    """A re-validated copy of `cfg` with `{dotted.path: value}` set (e.g. a tune trial's params)."""
    raw = cfg.model_dump(mode="json")
    for path, value in values.items():
        _set_path(raw, path, value)
    return parse_config(raw, source="overrides")


def _set_path(raw: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError("--set", [f"{path}: {part!r} holds a value, not a section"])
        node = child
    node[leaf] = value


def resolve_paths(cfg: PipelineConfig, base: Path) -> PipelineConfig:
    """Make local relative paths absolute against `base` (the config file's folder)."""

    def resolve(p: str) -> str:
        return p if p.startswith(_URI_PREFIXES) or Path(p).is_absolute() else str(base / p)

    cfg = cfg.model_copy(deep=True)
    cfg.data.path = resolve(cfg.data.path)
    cfg.run_dir = resolve(cfg.run_dir)
    if cfg.train.storage_path:
        cfg.train.storage_path = resolve(cfg.train.storage_path)
    if cfg.serve.auth.keys_file:
        cfg.serve.auth.keys_file = resolve(cfg.serve.auth.keys_file)
    return cfg


def save_config(cfg: PipelineConfig, path: Path) -> None:
    """Write the resolved config (defaults filled in) so the run can be reproduced from it."""
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def config_digest(cfg: PipelineConfig) -> str:
    """SHA-256 of the resolved config (defaults filled in): the config part of a model's lineage."""
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def config_help(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[str]:
    """Every field as 'path: description' lines, for `raymlp validate --explain`."""
    lines = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.extend(config_help(annotation, f"{path}."))
        else:
            lines.append(f"{path}: {' '.join((field.description or '').split())}")
    return lines


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # whole-config checks put the field path in the message itself
        return msg
    if err["type"] == "extra_forbidden":
        *parent, _ = err["loc"]
        allowed = ", ".join(_fields_at(parent))
        return f"{loc}: unknown key; allowed here: {allowed}"
    hint = _description_at(err["loc"])
    return f"{loc}: {msg}" + (f" ({hint})" if hint else "")


def _model_at(loc: Iterable[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = PipelineConfig
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return model


def _fields_at(loc: list[Any]) -> list[str]:
    # tune.space.<path>.<key> sits under a dict of SearchDim, which _model_at cannot walk.
    if len(loc) >= 3 and loc[:2] == ["tune", "space"]:
        return list(SearchDim.model_fields)
    model = _model_at(loc)
    return list(model.model_fields) if model else []


def _description_at(loc: tuple[Any, ...]) -> str:
    *parent, leaf = loc or ("",)
    model = _model_at(parent)
    if model is None or leaf not in model.model_fields:
        return ""
    return " ".join((model.model_fields[leaf].description or "").split())
