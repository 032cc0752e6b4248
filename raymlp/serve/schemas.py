"""Request and response schemas generated from the model's fitted feature transform.

Numbers must be finite: a NaN or Infinity is a 422 naming the field, not a 500. A null numeric
value is accepted and imputed with the training mean, as missing values were during training.
"""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from raymlp.data.features import FeaturePipeline

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Prediction(BaseModel):
    label: Any
    """The most probable class."""
    probabilities: dict[str, float]
    """Probability of every class, keyed by the class as a string."""


class PredictResponse(BaseModel):
    model: str
    version: str
    precision: str
    predictions: list[Prediction]


def make_request_model(features: FeaturePipeline, max_rows: int) -> type[BaseModel]:
    """`{"rows": [{feature: value, ...}, ...]}` with one typed, required field per raw input column."""
    fields: dict[str, Any] = {f.name: (FiniteFloat | None, ...) for f in features.numeric}
    fields |= {
        f.name: (str | None, Field(..., description=f"one of {f.categories[:10]}; others encode as unknown"))
        for f in features.categorical
    }
    row = create_model("Row", __config__=ConfigDict(extra="forbid"), **fields)
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        rows=(list[row], Field(..., min_length=1, max_length=max_rows)),
    )
