"""The JSON the HTTP API answers with, rows or lists, built from `predict_columns`."""

import json

import numpy as np
import torch

from raymlp.artifacts import LoadedModel, ModelSpec
from raymlp.config.schema import ModelConfig
from raymlp.serve.model import predict_columns, predict_rows, prediction_lists
from raymlp.serve.schemas import PredictColumnsResponse, PredictResponse
from raymlp.train.models import build_model

from test_features import PIPELINE


COLUMNS = {"a": [12.0, 8.0, None, 30.0], "c": ["y", "x", None, "z"]}


def model() -> LoadedModel:
    spec = ModelSpec(ModelConfig(name="mlp", hidden_sizes=[8]), PIPELINE.output_dim, PIPELINE.num_outputs)
    torch.manual_seed(0)
    return LoadedModel(build_model(spec.model, spec.input_dim, spec.output_dim).eval(), spec, PIPELINE)


def test_rows_carry_the_columns_label_and_every_class_rounded_to_six_places():
    rows, predicted = predict_rows(model(), COLUMNS), predict_columns(model(), COLUMNS)
    assert [r["label"] for r in rows] == predicted["prediction"].tolist()
    for i, row in enumerate(rows):
        assert set(row["probabilities"]) == {"no", "yes"}
        for c, p in row["probabilities"].items():
            assert type(p) is float and round(p, 6) == p
            assert abs(p - float(predicted[f"prob_{c}"][i])) <= 5e-7
    assert json.loads(json.dumps(rows)) == rows  # plain Python values: JSON as they are


def test_lists_hold_what_the_rows_hold_one_list_per_field():
    rows, predicted = predict_rows(model(), COLUMNS), predict_columns(model(), COLUMNS)
    lists = prediction_lists(predicted)
    assert lists["label"] == [r["label"] for r in rows]
    assert lists["probabilities"] == {c: [r["probabilities"][c] for r in rows] for c in ("no", "yes")}
    assert json.loads(json.dumps(lists)) == lists


def test_regression_lists_hold_the_values():
    lists = prediction_lists({"prediction": np.array([1.5, -2.25], dtype=np.float32)})
    assert lists == {"value": [1.5, -2.25]} and all(type(v) is float for v in lists["value"])


def test_both_answers_match_the_response_schemas_in_the_openapi_document():
    predicted = predict_columns(model(), COLUMNS)
    head = {"model": "churn", "version": "3", "precision": "fp32"}
    rows = PredictResponse.model_validate(head | {"predictions": predict_rows(model(), COLUMNS)})
    lists = PredictColumnsResponse.model_validate(head | {"predictions": prediction_lists(predicted)})
    assert len(rows.predictions) == len(lists.predictions.label) == 4
