"""Request and response schemas generated from the model's fitted feature transform.

Numbers must be finite: a NaN or Infinity is a 422 naming the field, not a 500. A null value is
accepted and treated as missing values were during training (imputed, or encoded as unknown).
Timestamps must parse as ISO-8601, so a malformed one is a 422 too. Text must be encodable as
UTF-8: JSON lets a lone surrogate escape ("\\ud800") through, and the feature transform cannot
encode it (a 500 before this check).

A row validates into a plain dict (a TypedDict), which is what the replica reads: a model instance
per row would cost a `model_dump` per row on top of validating it (1 ms of a 1,024-row request).
"""

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from typing_extensions import TypedDict

from raymlp.data.features import FeaturePipeline

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _utf8_text(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # The message must not quote the input: the 422 handler returns it as is.
        raise ValueError("text is not valid Unicode (a lone surrogate escape, \\ud800-\\udfff)") from None
    return text


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


def make_request_model(features: FeaturePipeline, max_rows: int) -> type[BaseModel]:
    """`{"rows": [{feature: value, ...}, ...]}` with one typed, required field per raw input column;
    `rows` validates into a list of dicts."""
    numbers = set(features.numeric_inputs)
    times = {d.name for d in features.datetime}
    categories = {f.name: f.categories for f in features.categorical}
    fields: dict[str, Any] = {}
    for name in features.input_columns:
        if name in numbers:
            fields[name] = FiniteFloat | None
        elif name in times:
            fields[name] = Annotated[datetime | None, Field(description="ISO-8601 timestamp; without an offset, UTC")]
        else:
            known = f"one of {categories[name][:10]}; others encode as unknown" if name in categories else "text"
            fields[name] = Annotated[Text | None, Field(description=known)]
    row = TypedDict("Row", fields)  # every key required (total), null allowed
    row.__pydantic_config__ = ConfigDict(extra="forbid")
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        rows=(list[row], Field(..., min_length=1, max_length=max_rows)),
    )
