"""`predict_rows`: the JSON rows the HTTP API answers with, built from `predict_columns`."""

import json

import torch

from raymlp.artifacts import LoadedModel, ModelSpec
from raymlp.config.schema import ModelConfig
from raymlp.serve.model import predict_columns, predict_rows
from raymlp.train.models import build_model

from test_features import PIPELINE


def test_rows_carry_the_columns_label_and_every_class_rounded_to_six_places():
    spec = ModelSpec(ModelConfig(name="mlp", hidden_sizes=[8]), PIPELINE.output_dim, PIPELINE.num_outputs)
    torch.manual_seed(0)
    model = LoadedModel(build_model(spec.model, spec.input_dim, spec.output_dim).eval(), spec, PIPELINE)
    columns = {"a": [12.0, 8.0, None, 30.0], "c": ["y", "x", None, "z"]}
    rows, predicted = predict_rows(model, columns), predict_columns(model, columns)
    assert [r["label"] for r in rows] == predicted["prediction"].tolist()
    for i, row in enumerate(rows):
        assert set(row["probabilities"]) == {"no", "yes"}
        for c, p in row["probabilities"].items():
            assert type(p) is float and round(p, 6) == p
            assert abs(p - float(predicted[f"prob_{c}"][i])) <= 5e-7
    assert json.loads(json.dumps(rows)) == rows  # plain Python values: JSON as they are
