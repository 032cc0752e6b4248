"""raymlp: one declarative pipeline from raw data to a served model, on a laptop or a Ray cluster.

    from raymlp import load_config, run_pipeline
    result = run_pipeline(load_config("examples/quickstart/pipeline.yaml"))
"""

from raymlp.lazy import lazy_exports

# Resolved on first use, so `raymlp validate` does not pay for importing Ray, torch and MLflow.
_EXPORTS = {
    "PipelineConfig": "raymlp.config",
    "load_config": "raymlp.config",
    "PipelineResult": "raymlp.pipeline",
    "run_pipeline": "raymlp.pipeline",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
