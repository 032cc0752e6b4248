"""The one pipeline schema. Every YAML key is a field here; each field's docstring is its help text.

Each stage module receives only its own section (``cfg.train``, ``cfg.serve``...). Unknown keys are
rejected so that a typo fails at load time instead of silently using a default.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
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
    serve_ingress: Literal["haproxy", "proxy"] = "haproxy"
    """How HTTP reaches the Serve replicas of an embedded Ray. `haproxy`: Serve's direct ingress;
    HAProxy (Ray ships it) takes `serve.port` and forwards to the gateway replicas' own HTTP
    servers. `proxy`: Serve's Python proxy, one more Python process on every request's path (half
    the single-row throughput here; benchmarks/serve_load.py). A cluster raymlp attaches to keeps
    the ingress its nodes were started with: the Python proxy unless `RAY_SERVE_ENABLE_HA_PROXY=1`."""


class ColumnSpec(Section):
    type: Literal["float", "int", "string", "bool", "timestamp"] | None = None
    """Type every file is cast to; a value that does not cast quarantines its row. Unset: inferred.
    `timestamp` parses ISO-8601 text (naive times are UTC)."""
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
    """Column the model predicts."""
    task: Literal["classification", "regression"] = "classification"
    """Predict the label's class (binary or multiclass: the classes are the label's values), or
    its numeric value (the label is standardized for training, predictions are in its units)."""
    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    """Typed schema and validation rules per column. Unlisted columns keep the type inferred from the
    first readable file; the schema used is saved with the run."""
    invalid_rows: Literal["quarantine", "drop", "fail"] = "quarantine"
    """What happens to a row that breaks a rule or a file that cannot be read: kept aside in the
    run's quarantine folder with its reason, dropped (still counted), or fail the run."""
    max_bad_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    """Largest share of invalid rows before the run fails."""
    dedupe: Literal["none", "exact", "key"] = "none"
    """Drop repeated rows (counted, not quarantined): identical in every column, or sharing the
    `dedupe_key` columns. The copy kept is the first by file and row order. Deduplication shuffles
    the valid rows by key and keeps the result in Ray's object store (spilling to disk when large)."""
    dedupe_key: list[str] = Field(default_factory=list)
    """Columns that identify a record, for `dedupe: key` (e.g. [transaction_id])."""
    split: Literal["random", "time"] = "random"
    """How rows are held out: seeded at random (the top-level `seed`), or by `time_column`, the
    latest rows going to test and the ones before them to validation."""
    time_column: str | None = None
    """Timestamp or numeric column ordering rows, for `split: time`."""
    valid_fraction: Fraction = 0.2
    """Share of rows held out for validation."""
    test_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    """Share of rows held out as a test set, evaluated once after training."""

    @model_validator(mode="after")
    def _check_split(self) -> DataConfig:
        if self.dedupe == "key" and not self.dedupe_key:
            raise ValueError("`dedupe: key` needs `dedupe_key`, the columns identifying a record")
        if self.split == "time" and not self.time_column:
            raise ValueError("`split: time` needs `time_column`")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError("`valid_fraction` + `test_fraction` must leave rows to train on (sum below 1)")
        return self


DatetimePart = Literal[
    "year", "month", "day", "hour", "minute", "day_of_week", "day_of_year",
    "hour_sin", "hour_cos", "day_of_week_sin", "day_of_week_cos", "month_sin", "month_cos",
]  # fmt: skip


class SelectConfig(Section):
    variance_threshold: Annotated[float, Field(ge=0)] | None = None
    """Drop numeric inputs whose variance (after imputation and capping) is at most this."""
    max_correlation: Annotated[float, Field(gt=0, le=1)] | None = None
    """Drop a numeric input whose |Pearson r| with an earlier kept one exceeds this."""
    top_k: PositiveInt | None = None
    """Keep the k inputs scoring highest by `method`."""
    method: Literal["mutual_info", "importance"] = "mutual_info"
    """Score for `top_k`: mutual information with the label, or extra-trees importance."""
    sample_rows: PositiveInt = 50_000
    """Rows sampled (uniformly, across the cluster) to score inputs and fit power transforms."""


class FeaturesConfig(Section):
    numeric: list[str] | None = None
    """Numeric input columns: imputed, optionally capped and log-transformed, then scaled. Unset:
    every numeric column but the label and the columns given another encoding."""
    categorical: list[str] | None = None
    """Categorical input columns, one-hot encoded. Unset: every string or bool column but the label
    and the columns given another encoding."""
    ordinal: list[str] = Field(default_factory=list)
    """Categorical inputs encoded as one integer code each (sorted categories; unseen values are
    -1, and missing ones too unless `impute_categorical: mode` fills them), for ordered values."""
    hashed: dict[str, PositiveInt] = Field(default_factory=dict)
    """Categorical inputs hashed into this many one-hot buckets (stable across machines), for
    open-ended vocabularies such as ids or merchant codes."""
    datetime: dict[str, list[DatetimePart]] = Field(default_factory=dict)
    """Timestamp inputs to the parts extracted from them (UTC), e.g. `ts: [hour_sin, hour_cos,
    day_of_week]`; each part becomes a numeric input named `<column>_<part>`."""
    derived: dict[str, str] = Field(default_factory=dict)
    """New numeric inputs computed from others by an arithmetic expression, e.g.
    `amount_per_day: amount / (card_age_days + 1)` (functions: log, log1p, exp, sqrt, abs, floor,
    ceil, minimum, maximum, clip, where)."""
    bucketize: dict[str, PositiveInt | list[float]] = Field(default_factory=dict)
    """Numeric inputs also one-hot encoded by range: a number of equal-frequency buckets (edges
    fitted on train), or the bucket edges themselves."""
    max_categories: PositiveInt = 32
    """Most frequent categories kept per column; rarer and unseen values encode as all zeros (or
    as "other", see `other_bucket`)."""
    impute: Literal["mean", "median", "mode", "constant"] = "mean"
    """How a missing numeric value is filled, from train-split statistics (or `fill_value`).
    The median is approximate (a KLL sketch, rank error ~0.3%) so fitting never holds a column in
    memory; the mode counts every distinct value, so keep it for discrete columns."""
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
    power: list[str] = Field(default_factory=list)
    """Numeric inputs to Yeo-Johnson transform after capping, lambda fitted by maximum likelihood on
    a sample of the train split (for skewed values of any sign)."""
    scaler: Literal["standard", "minmax", "robust"] = "standard"
    """Numeric scaling: (v - mean) / std, (v - min) / range, or (v - median) / IQR."""
    impute_categorical: Literal["none", "mode"] = "none"
    """Missing categorical values: encoded as all zeros, or filled with the most frequent category."""
    other_bucket: bool = False
    """Give each one-hot column an extra "other" column for rare and unseen values."""
    select: SelectConfig = Field(default_factory=SelectConfig)
    """Feature selection on the train split, before the transform is fitted."""

    @model_validator(mode="after")
    def _check_transforms(self) -> FeaturesConfig:
        both = sorted(set(self.log1p) & set(self.power))
        if both:
            raise ValueError(f"{both} are in both `log1p` and `power`; choose one transform per column")
        return self


ZOO = ("mlp", "resmlp", "cnn")
IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class ModelConfig(Section):
    name: str = "mlp"
    """Architecture: `mlp`, `resmlp` (residual blocks with layer norm), `cnn` (for image tensors,
    see `image_shape`), or your own model as `package.module:factory`, called as
    `factory(model_config, input_dim, output_dim)` and returning a `torch.nn.Module`."""
    hidden_sizes: list[PositiveInt] = Field(default_factory=lambda: [64, 64])
    """Width of each hidden layer (mlp), residual block (resmlp) or dense layer after the
    convolutions (cnn)."""
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    """Dropout probability after each hidden layer."""
    image_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = None
    """cnn only: (channels, height, width) the input features are reshaped to, in row-major
    order; their product must equal the number of input features."""
    channels: list[PositiveInt] = Field(default_factory=lambda: [16, 32])
    """cnn only: output channels of each 3x3 convolution block (each halves height and width)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Free-form settings passed to a user model factory inside `model_config.options`."""

    @model_validator(mode="after")
    def _check_architecture(self) -> ModelConfig:
        if self.name not in ZOO and not re.match(IMPORT_PATH, self.name):
            raise ValueError(f"`name: {self.name}` is neither one of {', '.join(ZOO)} nor an import path `package.module:factory`")
        if self.name == "cnn" and self.image_shape is None:
            raise ValueError("`name: cnn` needs `image_shape: [channels, height, width]`")
        return self


class TrainConfig(Section):
    backend: Literal["ddp", "horovod"] = "ddp"
    """Data-parallel backend: PyTorch DDP, or Horovod (needs the `horovod` extra, built by
    scripts/build_horovod.sh). Same loop, checkpoints, failure handling and metrics."""
    num_workers: PositiveInt | tuple[PositiveInt, PositiveInt] = 2
    """Training workers, or a `[min, max]` range: an elastic run starts with what the cluster
    has (at least min) and grows toward max as resources appear."""
    cpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    """Logical CPUs each worker reserves; also its torch thread count (rounded up)."""
    use_gpu: bool | Literal["auto"] = "auto"
    """Train on GPUs (NCCL); `auto` uses them when the cluster has any."""
    gpus_per_worker: Annotated[float, Field(gt=0)] = 1.0
    """GPUs each worker reserves when training on GPU."""
    epochs: PositiveInt = 5
    """Most passes over the training split."""
    batch_size: PositiveInt = 256
    """Rows per step on each worker (one micro-batch when accumulating)."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """AdamW, or SGD with Nesterov momentum."""
    lr: Annotated[float, Field(gt=0)] = 1e-3
    """Peak learning rate."""
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    """Decoupled (AdamW) or L2 (SGD) weight decay."""
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    """SGD momentum."""
    schedule: Literal["constant", "cosine", "linear", "onecycle"] = "constant"
    """Learning-rate schedule over all steps: constant, cosine or linear decay to zero after the
    warmup, or one-cycle (its own warmup over the first 30%)."""
    warmup_epochs: Annotated[float, Field(ge=0)] = 0.0
    """Linear warmup from zero, in epochs (fractions allowed); not used by `onecycle`."""
    accumulation_steps: PositiveInt = 1
    """Micro-batches whose gradients add up to one optimizer step."""
    clip_grad_norm: Annotated[float, Field(gt=0)] | None = None
    """Clip the global gradient norm to this before each step."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """bf16 autocast, or fp32. `auto`: bf16 on GPU, fp32 on CPU (where bf16 is slower)."""
    early_stopping_patience: PositiveInt | None = None
    """Stop after this many epochs without `tune.metric` improving by `early_stopping_min_delta`."""
    early_stopping_min_delta: Annotated[float, Field(ge=0)] = 0.0
    """Smallest change of `tune.metric` that counts as an improvement."""
    checkpoint_every: PositiveInt = 1
    """Epochs between checkpoints (the last epoch is always checkpointed). A failed worker makes
    the run resume from the latest one."""
    keep_checkpoints: PositiveInt = 2
    """Best checkpoints (by `tune.metric`) kept per training run; the latest is kept too."""
    max_failures: Annotated[int, Field(ge=-1)] = 2
    """Worker-group failures survived per run by restarting from the latest checkpoint (-1: no limit).
    In a search, Tune retries the failed trial instead, and its training resumes the same way."""
    cache_data: Literal["auto", "always", "never"] = "auto"
    """Hold each worker's shard of the splits in memory as tensors after the first read, instead
    of streaming it from Ray Data every epoch. `auto`: when it fits in `cache_max_mb`."""
    cache_max_mb: PositiveInt = 2048
    """Largest shard per worker that `cache_data: auto` caches."""
    storage_path: str | None = None
    """Where Ray Train writes checkpoints. Unset: inside the run folder. On a multi-node cluster
    this must be shared storage (s3://, gs://, NFS)."""

    @model_validator(mode="after")
    def _check_workers(self) -> TrainConfig:
        if isinstance(self.num_workers, tuple) and self.num_workers[0] > self.num_workers[1]:
            raise ValueError("`num_workers: [min, max]` needs min <= max")
        return self

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if isinstance(self.num_workers, tuple) else self.num_workers


class SearchDim(Section):
    type: Literal["uniform", "loguniform", "int", "choice"]
    """Distribution to sample from."""
    low: float | None = None
    """Lower bound (uniform, loguniform, int)."""
    high: float | None = None
    """Upper bound, inclusive for int (uniform, loguniform, int)."""
    values: list[Any] | None = None
    """Candidates (choice)."""
    q: Annotated[float, Field(gt=0)] | None = None
    """Quantization step: samples are rounded to multiples of `q` (e.g. 0.05, or 16 for an int).
    Unset: continuous (int: every integer)."""

    @model_validator(mode="after")
    def _check_bounds(self) -> SearchDim:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs a non-empty `values` list")
            if self.q is not None:
                raise ValueError("`q` quantizes ranges; a choice takes none")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"a {self.type} range needs `low` < `high`")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("a loguniform range needs `low` > 0")
        return self


CLASSIFICATION_METRICS = ("valid_loss", "valid_accuracy", "valid_auc", "valid_f1")
REGRESSION_METRICS = ("valid_loss", "valid_rmse", "valid_mae", "valid_r2")
LOWER_IS_BETTER = ("valid_loss", "valid_rmse", "valid_mae")
Metric = Literal["valid_loss", "valid_accuracy", "valid_auc", "valid_f1", "valid_rmse", "valid_mae", "valid_r2"]


Objective = Literal["model_params", "latency_ms"]


class TuneConfig(Section):
    searcher: Literal["optuna", "random", "grid"] = "optuna"
    """How trials pick their values: Optuna's TPE (learns from finished trials), random sampling,
    or a grid over every combination (each dim a choice or an int range; num_samples is ignored)."""
    scheduler: Literal["asha", "median", "none"] = "asha"
    """Early stopping of poor trials: ASHA (successive halving), the median stopping rule, or none."""
    num_samples: PositiveInt = 4
    """Trials to run; each is a full distributed training run."""
    max_concurrent_trials: PositiveInt | None = None
    """Trials at once. Unset: as many as the cluster's CPUs fit."""
    time_budget_s: Annotated[float, Field(gt=0)] | None = None
    """Stop starting and running trials after this many seconds; the best so far wins."""
    objectives: list[Objective] = Field(default_factory=list)
    """Further objectives to minimize beside `metric` (multi-objective TPE): `model_params`
    (parameter count), `latency_ms` (one 64-row forward pass). The model registered is the
    trial with the best `metric`, which always lies on the Pareto front; the front is logged."""
    metric: Metric | None = None
    """Validation metric that ranks checkpoints, trials and candidate models, and drives early
    stopping. Unset: valid_accuracy for classification, valid_rmse for regression."""
    grace_period: PositiveInt = 1
    """Epochs every trial runs before ASHA may stop it."""
    startup_trials: PositiveInt | None = None
    """Optuna only: trials sampled at random before TPE models the space. Unset: a quarter of
    num_samples, 2 to 10 (Optuna's own 10 would leave a 16-trial search 6 guided trials)."""
    space: dict[str, SearchDim] = Field(default_factory=dict)
    """Search space: config path (e.g. `train.lr`) to distribution."""

    @model_validator(mode="after")
    def _check_search(self) -> TuneConfig:
        if self.objectives and self.searcher != "optuna":
            raise ValueError("tune.objectives: multi-objective search needs `searcher: optuna`")
        if self.searcher == "grid":
            for path, dim in self.space.items():
                if dim.type in ("uniform", "loguniform"):
                    raise ValueError(
                        f"tune.space.{path}: a grid cannot enumerate a {dim.type} range; make it a choice"
                    )
        return self

    @property
    def mode(self) -> Literal["min", "max"]:
        return "min" if self.metric in LOWER_IS_BETTER else "max"


class RegistryConfig(Section):
    tracking_uri: str | None = None
    """MLflow tracking URI. Unset: a SQLite store and artifact folder under `run_dir`."""
    experiment: str | None = None
    """MLflow experiment. Unset: the pipeline name."""
    model_name: str | None = None
    """Registered model name. Unset: the pipeline name."""
    promotion: Literal["if_better", "always", "manual"] = "if_better"
    """When a newly registered version becomes `champion` (the version served by default): when it
    beats the champion on `tune.metric` by more than `promotion_margin`, both scored on this run's
    validation rows; always; or only by `raymlp models promote`. A version that is not promoted
    becomes `challenger`. The first version is always champion."""
    promotion_margin: Annotated[float, Field(ge=0)] = 0.0
    """How much a challenger must beat the champion by, in the metric's units (0.005 = half a
    point of accuracy)."""


class CompressConfig(Section):
    scheme: Literal["int8_dynamic", "int8_weight_only"] = "int8_dynamic"
    """torchao int8 scheme. `int8_dynamic`: int8 weights, and activations quantized per row at run
    time; compiled for CPU when the model loads (10-30 s the first time on a machine, needs a C++
    compiler), then the fastest on CPUs with VNNI: ~1.3x fp32 at 64 rows for the quickstart MLP,
    2-3.3x for hidden widths 256-1024; on plain AVX2 far slower than fp32, which `serve.precision:
    auto` then serves instead (benchmarks/quantize.py). `int8_weight_only`: int8 weights, fp32 activations, run
    uncompiled: the smallest metric loss, but slower than fp32 on CPU."""
    prune_amount: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Fraction of all Linear and Conv weights zeroed before quantizing, smallest magnitudes first
    across the whole model (global L1 unstructured pruning, made permanent). 0 turns it off. The
    int8 kernels and files are dense, so it saves neither time nor bytes by itself; the pruned
    and quantized model must still pass `max_metric_drop`."""
    max_metric_drop: Annotated[float, Field(ge=0)] = 0.005
    """Largest validation-metric loss (0.005 = 0.5 points) for the int8 model to be served."""


class AutoscalingConfig(Section):
    target_ongoing_requests: Annotated[float, Field(gt=0)] = 8.0
    """Requests in flight per replica that the autoscaler aims for."""
    upscale_delay_s: Annotated[float, Field(ge=0)] = 5.0
    """How long load must stay above target before replicas are added."""
    downscale_delay_s: Annotated[float, Field(ge=0)] = 60.0
    """How long load must stay below target before replicas are removed."""


class BatchingConfig(Section):
    max_batch_size: PositiveInt = 32
    """Most requests one forward pass serves (each may hold many rows)."""
    wait_timeout_s: Annotated[float, Field(ge=0)] = 0.005
    """How long the first request of a batch waits for others to join it."""


class AuthConfig(Section):
    mode: Literal["api_key", "none"] = "api_key"
    """`api_key`: every route but /healthz and /readyz needs `Authorization: Bearer <key>` or
    `X-API-Key: <key>` (401 without); `none`: open to anyone who reaches the port."""
    keys_env: str = "RAYMLP_API_KEYS"
    """Environment variable, in the process that deploys the app, holding comma-separated keys."""
    keys_file: str | None = None
    """File of keys, one per line. Unset: `<run_dir>/api_keys`, created (mode 600) with one random
    key when neither it nor `keys_env` holds a key."""


class CanaryConfig(Section):
    version: str = "challenger"
    """Version (a number or an alias) served beside `model_version`."""
    percent: Annotated[float, Field(ge=0, le=100)] = 10.0
    """Share of requests it answers. 0: shadow mode, where it answers a copy of every request and
    its answers are only compared with the served ones (`raymlp_shadow_*` metrics), never returned."""


class ServeConfig(Section):
    host: str = "127.0.0.1"
    """Interface the HTTP proxy binds; 0.0.0.0 exposes it to the network."""
    port: Annotated[int, Field(gt=0, lt=65536)] = 8000
    """HTTP port of the Serve proxy."""
    route_prefix: str = "/"
    """URL prefix of the app."""
    model_version: str = "champion"
    """Registered version to serve: a number, an alias (`champion`, `challenger`), or "latest"."""
    precision: Literal["auto", "int8", "fp32"] = "auto"
    """Weights a replica serves. `auto`: the int8 ones when the compress stage accepted them and
    they run faster than fp32 on the replica's own CPU (timed when it loads: int8 kernels beat
    fp32 1.3-3.3x on CPUs with VNNI, and lose ~10x on plain AVX2; see benchmarks/quantize.py), else
    fp32. `int8`: the int8 ones whenever accepted. `fp32`: never int8."""
    canary: CanaryConfig | None = None
    """A second version taking a share of the traffic (or a shadow copy of it). Its request
    columns must be among the served version's."""
    topology: Literal["split", "fused"] = "split"
    """Where the models run. `split`: HTTP replicas (`Gateway`) call model replicas (`model`,
    `canary`) through Serve handles, and retry a call whose model replica died, so a replica's
    death costs no request, whatever the client; the model replicas scale apart from the HTTP
    ones. `fused`: each HTTP replica holds the models and batches in process: one hop, 3.5-6x split's
    single-row throughput on 2 cores (benchmarks/serve_load.py); a request in flight on a
    fused replica that dies is replayed by HAProxy (as an embedded Ray sets it up) unless the
    request is over HAProxy's 16 KiB buffer (none lost in 24 kills: benchmarks/replica_kills.py)."""
    num_replicas: PositiveInt | tuple[NonNegativeInt, PositiveInt] = 1
    """Model replicas (fused: the HTTP replicas that hold them): a number, or `[min, max]` for
    autoscaling between them (min 0 scales to zero when idle; the first request then waits for a
    replica to start)."""
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    """How an autoscaled app (`num_replicas: [min, max]`) follows its load."""
    cpus_per_replica: Annotated[float, Field(gt=0)] = 0.5
    """Logical CPUs each model replica reserves; it runs that many torch threads (rounded down, at least one)."""
    gateway_cpus: Annotated[float, Field(gt=0)] = 0.25
    """Logical CPUs each gateway replica reserves (auth, request validation, routing, retries) in the split topology."""
    health_check_period_s: Annotated[float, Field(gt=0)] = 2.0
    """How often Serve checks each replica. A replica that died is found, and replaced, only at
    its next check: Serve's default of 10 s would hold back that much capacity after a crash."""
    max_ongoing_requests: PositiveInt = 64
    """Requests a replica works on at once; batching needs many (Serve's default of 5 starves it)."""
    max_queued_requests: Annotated[int, Field(ge=-1)] = 512
    """Requests waiting for a replica before Serve answers 503 (-1: unbounded)."""
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    """Dynamic batching: concurrent requests share one forward pass."""
    max_rows: PositiveInt = 1024
    """Most rows accepted in one request."""
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    """Largest request body (413 above it, also for chunked uploads)."""
    rate_limit_per_s: Annotated[float, Field(gt=0)] | None = None
    """Requests per second per API key, per replica (429 with Retry-After above it). Unset: no limit."""
    auth: AuthConfig = Field(default_factory=AuthConfig)

    @model_validator(mode="after")
    def _check_replicas(self) -> ServeConfig:
        if isinstance(self.num_replicas, tuple) and self.num_replicas[0] > self.num_replicas[1]:
            raise ValueError("`num_replicas: [min, max]` needs min <= max")
        return self


class DriftConfig(Section):
    enabled: bool = True
    """Score served inputs and predictions against the training reference (needs `monitor.metrics`)."""
    window_rows: PositiveInt = 10_000
    """Each model replica scores its latest this many served rows."""
    interval_s: Annotated[float, Field(gt=0)] = 10.0
    """How often a replica scores its window and updates the drift gauges."""
    psi_threshold: Annotated[float, Field(gt=0)] = 0.2
    """A feature drifts at this PSI or above (0.1-0.2 is a moderate shift, above 0.2 a large one)."""
    ks_threshold: Annotated[float, Field(gt=0, le=1)] = 0.1
    """...or, numeric features, at this KS statistic or above."""
    min_rows: PositiveInt = 500
    """Below this many rows drift is reported but never flagged."""


class FeedbackConfig(Section):
    enabled: bool = False
    """Keep answers by request id and take labels at `POST /feedback`: live metrics per version."""
    max_requests: PositiveInt = 100_000
    """Answers kept to join labels to; labels for older requests are counted as unmatched."""
    window_rows: PositiveInt = 10_000
    """Live metrics cover each version's latest this many labelled rows."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Bounds on live metrics, by name without `valid_` (e.g. `{auc: 0.75}`): floors for accuracy,
    auc, f1 and r2, ceilings for loss, rmse and mae. A version past one is degraded: the
    `raymlp_live_thresholds_crossed` gauge, the RaymlpLiveMetricDegraded alert, `raymlp retrain --when degraded`."""
    min_rows: PositiveInt = 200
    """Below this many labelled rows a version's live metrics cross no threshold."""


class MonitorConfig(Section):
    metrics: bool = True
    """Export request counts and latency per model version as `raymlp_*` metrics through Ray."""
    drift: DriftConfig = Field(default_factory=DriftConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)


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
    def _check_metrics(self) -> PipelineConfig:
        allowed = CLASSIFICATION_METRICS if self.data.task == "classification" else REGRESSION_METRICS
        if self.tune.metric is None:
            self.tune.metric = allowed[1]
        elif self.tune.metric not in allowed:
            raise ValueError(
                f"tune.metric: {self.tune.metric} does not apply to {self.data.task}; choose one of {', '.join(allowed)}"
            )
        live = [m.removeprefix("valid_") for m in allowed]
        for name in self.monitor.feedback.thresholds:
            if name not in live:
                raise ValueError(
                    f"monitor.feedback.thresholds: {name!r} is not a live metric of {self.data.task}; "
                    f"use one of {', '.join(live)}"
                )
        return self

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
