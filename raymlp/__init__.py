"""raymlp: one declarative pipeline from raw data to a served model, on a laptop or a Ray cluster.

    from raymlp import load_config, run_pipeline
    result = run_pipeline(load_config("examples/quickstart/pipeline.yaml"))
"""

from importlib import import_module
from typing import Any

# Resolved on first use, so `raymlp validate` does not pay for importing Ray, torch and MLflow.
_EXPORTS = {
    "PipelineConfig": "raymlp.config",
    "load_config": "raymlp.config",
    "PipelineResult": "raymlp.pipeline",
    "run_pipeline": "raymlp.pipeline",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'raymlp' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
