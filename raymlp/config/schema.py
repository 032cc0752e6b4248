"""The one pipeline schema. Every YAML key is a field here; each field's docstring is its help text.

Each stage module receives only its own section (``cfg.train``, ``cfg.serve``...). Unknown keys are
rejected so that a typo fails at load time instead of silently using a default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class Section(BaseModel):
    """Base for every schema node: strict keys, docstrings as field descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class RuntimeConfig(Section):
    address: str | None = None
    """Ray cluster to attach to. Unset: `RAY_ADDRESS` if set (as under `ray job submit`), else an
    embedded local Ray. "auto" also attaches to a cluster started on this machine with `ray start`."""
    num_cpus: PositiveInt | None = None
    """Logical CPUs of the embedded Ray. Unset: the machine's core count."""
    object_store_memory_mb: PositiveInt = 512
    """Object store size of the embedded Ray, in MiB."""


class ColumnSpec(Section):
    type: Literal["float", "int", "string", "bool"] | None = None
    """Type every file is cast to; a value that does not cast quarantines its row. Unset: inferred."""
    nullable: bool = True
    """Whether a missing value is valid."""
    min: float | None = None
    """Smallest valid value (inclusive)."""
    max: float | None = None
    """Largest valid value (inclusive)."""
    allowed: list[str | int | float | bool] | None = None
    """The only valid values."""
    regex: str | None = None
    """Pattern a string value must match (searched, so anchor it with ^...$ for a full match)."""

    @model_validator(mode="after")
    def _check_range(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("`min` must not exceed `max`")
        return self


class DataConfig(Section):
    path: str
    """A file, a folder of shards, a glob (`shards/*.csv`), or a cloud URI (s3://, gs://). Relative
    paths are resolved against the config file's folder."""
    format: Literal["parquet", "csv", "jsonl"] | None = None
    """Source format. Unset: taken from each file's suffix (.parquet, .csv, .jsonl/.json)."""
    label: str
    """Column holding the class label."""
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    """Typed schema and validation rules per column. Unlisted columns keep the type inferred from the
    first readable file; the schema used is saved with the run."""
    invalid_rows: Literal["quarantine", "drop", "fail"] = "quarantine"
    """What happens to a row that breaks a rule or a file that cannot be read: kept aside in the
    run's quarantine folder with its reason, dropped (still counted), or fail the run."""
    max_bad_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """Largest share of invalid rows before the run fails."""
    valid_fraction: Fraction = 0.2
    """Share of rows held out for validation (seeded by the top-level `seed`)."""


class FeaturesConfig(Section):
    numeric: list[str] | None = None
    """Numeric input columns: imputed, optionally capped and log-transformed, then scaled. Unset:
    every numeric column but the label."""
    categorical: list[str] | None = None
    """Categorical input columns, one-hot encoded. Unset: every string column but the label."""
    max_categories: PositiveInt = 32
    """Most frequent categories kept per column; rarer and unseen values encode as all zeros (or
    as "other", see `other_bucket`)."""
    impute: Literal["mean", "median", "constant"] = "mean"
    """How a missing numeric value is filled, from train-split statistics (or `fill_value`)."""
    fill_value: float = 0.0
    """The fill for `impute: constant`."""
    missing_indicators: bool = False
    """Add a 0/1 column per numeric input marking where a value was missing."""
    cap: Literal["none", "iqr", "quantile", "zscore"] = "none"
    """Outlier capping of numeric inputs before scaling: Tukey fences, quantiles, or mean ± z·std."""
    cap_iqr_k: Annotated[float, Field(gt=0)] = 1.5
    """Fence width in IQRs for `cap: iqr`."""
    cap_quantiles: tuple[Fraction, Fraction] = (0.01, 0.99)
    """Lower and upper quantile for `cap: quantile`."""
    cap_z: Annotated[float, Field(gt=0)] = 3.0
    """Standard deviations from the mean for `cap: zscore`."""
    log1p: list[str] = Field(default_factory=list)
    """Numeric inputs to log1p after capping (for long-tailed, non-negative values)."""
    scaler: Literal["standard", "minmax", "robust"] = "standard"
    """Numeric scaling: (v - mean) / std, (v - min) / range, or (v - median) / IQR."""
    other_bucket: bool = False
    """Give each one-hot column an extra "other" column for rare and unseen values."""


class ModelConfig(Section):
    name: Literal["mlp"] = "mlp"
    """Architecture from the model zoo."""
    hidden_sizes: list[PositiveInt] = Field(default_factory=lambda: [64, 64])
    """Width of each hidden layer."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    """Dropout probability after each hidden layer."""


class TrainConfig(Section):
    num_workers: PositiveInt = 2
    """Data-parallel (DDP) training workers."""
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    """Logical CPUs each worker reserves; also its torch thread count (rounded up)."""
    use_gpu: bool = False
    """Give each worker one GPU (NCCL) instead of CPU only (gloo)."""
    epochs: PositiveInt = 5
    """Passes over the training split."""
    batch_size: PositiveInt = 256
    """Rows per step on each worker."""
    lr: Annotated[float, Field(gt=0)] = 1e-3
    """AdamW learning rate."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    """AdamW weight decay."""
    keep_checkpoints: PositiveInt = 2
    """Best checkpoints (by `tune.metric`) kept per training run."""
    storage_path: str | None = None
    """Where Ray Train writes checkpoints. Unset: inside the run folder. On a multi-node cluster
    this must be shared storage (s3://, gs://, NFS)."""


class SearchDim(Section):
    type: Literal["uniform", "loguniform", "int", "choice"]
    """Distribution to sample from."""
    low: float | None = None
    """Lower bound (uniform, loguniform, int)."""
    high: float | None = None
    """Upper bound, inclusive for int (uniform, loguniform, int)."""
    values: list[Any] | None = None
    """Candidates (choice)."""

    @model_validator(mode="after")
    def _check_bounds(self) -> SearchDim:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty `values` list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a {self.type} range needs `low` < `high`")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("a loguniform range needs `low` > 0")
        return self


class TuneConfig(Section):
    num_samples: PositiveInt = 4
    """Trials to run; each is a full distributed training run."""
    max_concurrent_trials: PositiveInt | None = None
    """Trials at once. Unset: as many as the cluster's CPUs fit."""
    metric: Literal["valid_accuracy", "valid_loss"] = "valid_accuracy"
    """Validation metric that ranks checkpoints, trials and candidate models."""
    grace_period: PositiveInt = 1
    """Epochs every trial runs before ASHA may stop it."""
    space: dict[str, SearchDim] = Field(default_factory=dict)
    """Search space: config path (e.g. `train.lr`) to distribution."""

    @property
    def mode(self) -> Literal["min", "max"]:
        return "min" if self.metric.endswith("loss") else "max"


class RegistryConfig(Section):
    tracking_uri: str | None = None
    """MLflow tracking URI. Unset: a SQLite store and artifact folder under `run_dir`."""
    experiment: str | None = None
    """MLflow experiment. Unset: the pipeline name."""
    model_name: str | None = None
    """Registered model name. Unset: the pipeline name."""


class CompressConfig(Section):
    scheme: Literal["int8_weight_only", "int8_dynamic"] = "int8_weight_only"
    """torchao int8 scheme: weights only (fastest on CPU), or weights and activations."""
    max_metric_drop: Annotated[float, Field(ge=0)] = 0.005
    """Largest validation-metric loss (0.005 = 0.5 points) for the int8 model to be served."""


class ServeConfig(Section):
    host: str = "127.0.0.1"
    """Interface the HTTP proxy binds; 0.0.0.0 exposes it to the network."""
    port: Annotated[int, Field(gt=0, lt=65536)] = 8000
    """HTTP port of the Serve proxy."""
    route_prefix: str = "/"
    """URL prefix of the app."""
    model_version: str = "latest"
    """Registered version to serve: a number, an alias, or "latest"."""
    quantized: bool = True
    """Serve the int8 weights when the compress stage accepted them."""
    num_replicas: PositiveInt = 1
    """Model replicas."""
    cpus_per_replica: Annotated[float, Field(gt=0)] = 0.5
    """Logical CPUs each replica reserves."""
    max_rows: PositiveInt = 1024
    """Most rows accepted in one request."""


class MonitorConfig(Section):
    metrics: bool = True
    """Export request counts and latency per model version as `raymlp_*` metrics through Ray."""


class PipelineConfig(Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    """Pipeline name: the default MLflow experiment, registered model and Serve app name."""
    seed: int = 0
    """Seed for splits, weight init and search."""
    run_dir: str = "runs"
    """Folder for run outputs and the embedded MLflow store, relative to the config file."""
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    data: DataConfig
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    @model_validator(mode="after")
    def _check_space_paths(self) -> PipelineConfig:
        for path in self.tune.space:
            section, _, key = path.partition(".")
            node = getattr(self, section, None) if section in type(self).model_fields else None
            if not isinstance(node, Section) or key not in type(node).model_fields:
                raise ValueError(
                    f"tune.space: {path!r} is not a config field; use `section.field`, e.g. train.lr"
                )
        return self
