"""Request and response schemas generated from the model's fitted feature transform.

Numbers must be finite: a NaN or Infinity is a 422 naming the field, not a 500. A null value is
accepted and treated as missing values were during training (imputed, or encoded as unknown).
Timestamps must parse as ISO-8601, so a malformed one is a 422 too. Text must be encodable as
UTF-8: JSON lets a lone surrogate escape ("\\ud800") through, and the feature transform cannot
encode it (a 500 before this check).

Rows come as a list of objects (`make_request_model`) or as one list per column
(`make_columns_model`), the cheaper form for many rows: a third of the bytes, parsed and validated
in about a third of the time, and already the columns the model reads (its answer comes as lists
too, `PredictColumnsResponse`). Either validates into plain dicts (TypedDicts): a model instance
per row would cost a `model_dump` per row on top of validating it (1 ms of a 1,024-row request).
"""

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator
from typing_extensions import TypedDict

from raymlp.data.features import FeaturePipeline

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

NOT_UNICODE = "text is not valid Unicode (a lone surrogate escape, \\ud800-\\udfff)"
"""The error never quotes the input: the 422 handler returns it as is."""


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_text(text: str) -> str:
    if not _encodes(text):
        raise ValueError(NOT_UNICODE)
    return text


def _utf8_texts(texts: list[str | None]) -> list[str | None]:
    """`_utf8_text` for a whole column: one check, not one call per value."""
    if not _encodes("".join(t for t in texts if t is not None)):
        row = next(i for i, t in enumerate(texts) if t is not None and not _encodes(t))
        raise ValueError(f"value {row}: {NOT_UNICODE}")
    return texts


Text = Annotated[str, AfterValidator(_utf8_text)]


class ClassPrediction(BaseModel):
    label: Any
    """The most probable class."""
    probabilities: dict[str, float]
    """Probability of every class, keyed by the class as a string."""


class ValuePrediction(BaseModel):
    value: float
    """The predicted label value (regression), in the label's units."""


class PredictResponse(BaseModel):
    model: str
    version: str
    precision: str
    predictions: list[ClassPrediction] | list[ValuePrediction]


class ClassColumns(BaseModel):
    label: list[Any]
    """The most probable class of each row."""
    probabilities: dict[str, list[float]]
    """Per class (keyed by the class as a string), its probability for each row."""


class ValueColumns(BaseModel):
    value: list[float]
    """The predicted label value of each row (regression), in the label's units."""


class PredictColumnsResponse(BaseModel):
    """`PredictResponse`'s predictions as one list per field, in row order."""

    model: str
    version: str
    precision: str
    predictions: ClassColumns | ValueColumns


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
    """The `X-Request-ID` the prediction was answered with."""
    labels: Annotated[list[bool | int | FiniteFloat | Text], Field(min_length=1)]
    """The true label of each row of that request, in order."""


def make_feedback_model(max_rows: int) -> type[BaseModel]:
    """`{"feedback": [{"request_id": ..., "labels": [...]}, ...]}`: labels of up to `max_rows`
    requests at once."""
    return create_model(
        "FeedbackRequest",
        __config__=ConfigDict(extra="forbid"),
        feedback=(Annotated[list[FeedbackItem], Field(min_length=1, max_length=max_rows)], ...),
    )


def make_request_model(features: FeaturePipeline, max_rows: int) -> type[BaseModel]:
    """`{"rows": [{feature: value, ...}, ...]}` with one typed, required field per raw input column;
    `rows` validates into a list of dicts."""
    row = TypedDict("Row", {name: value for name, (value, _) in _fields(features).items()})  # every key required
    row.__pydantic_config__ = ConfigDict(extra="forbid")
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        rows=(list[row], Field(..., min_length=1, max_length=max_rows)),
    )


def make_columns_model(features: FeaturePipeline, max_rows: int) -> type[BaseModel]:
    """`{"columns": {feature: [value, ...], ...}}`: every raw input column, each a list with one value
    per row, of the types `make_request_model` gives a row's fields; validates into a dict of lists."""
    length = Field(min_length=1, max_length=max_rows)
    columns = TypedDict("Columns", {name: Annotated[column, length] for name, (_, column) in _fields(features).items()})
    columns.__pydantic_config__ = ConfigDict(extra="forbid")

    def same_length(request: BaseModel) -> BaseModel:
        lengths = {name: len(values) for name, values in request.columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns differ in length ({lengths}): every column needs one value per row")
        return request

    return create_model(
        "PredictColumnsRequest",
        __config__=ConfigDict(extra="forbid"),
        __validators__={"same_length": model_validator(mode="after")(same_length)},
        columns=(columns, ...),
    )


def _fields(features: FeaturePipeline) -> dict[str, tuple[Any, Any]]:
    """Per raw input column: the type of its value in a row, and the type of a whole column of them.
    Text is checked for UTF-8 once per value in a row, once per column in a column."""
    numbers = set(features.numeric_inputs)
    times = {d.name for d in features.datetime}
    categories = {f.name: f.categories for f in features.categorical}
    fields: dict[str, tuple[Any, Any]] = {}
    for name in features.input_columns:
        if name in numbers:
            fields[name] = (FiniteFloat | None, list[FiniteFloat | None])
        elif name in times:
            value = Annotated[datetime | None, Field(description="ISO-8601 timestamp; without an offset, UTC")]
            fields[name] = (value, list[value])
        else:
            known = Field(description=f"one of {categories[name][:10]}; others encode as unknown" if name in categories else "text")
            column = Annotated[list[Annotated[str | None, known]], AfterValidator(_utf8_texts)]
            fields[name] = (Annotated[Text | None, known], column)
    return fields
