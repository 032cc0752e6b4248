import pytest
from pydantic import ValidationError

from raymlp.serve.schemas import make_columns_model, make_request_model

from test_features import PIPELINE

Request = make_request_model(PIPELINE, max_rows=2)


def test_valid_rows_accepted_with_null_numbers_for_imputation():
    body = Request.model_validate({"rows": [{"a": 1.5, "c": "x"}, {"a": None, "c": None}]})
    assert len(body.rows) == 2


@pytest.mark.parametrize(
    "body, field",
    [
        ({"rows": [{"a": float("nan"), "c": "x"}]}, ("rows", 0, "a")),
        ({"rows": [{"a": float("inf"), "c": "x"}]}, ("rows", 0, "a")),
        ({"rows": [{"a": "high", "c": "x"}]}, ("rows", 0, "a")),
        ({"rows": [{"c": "x"}]}, ("rows", 0, "a")),
        ({"rows": [{"a": 1, "c": "x", "extra": 1}]}, ("rows", 0, "extra")),
        ({"rows": []}, ("rows",)),
        ({"rows": [{"a": 1, "c": "x"}] * 3}, ("rows",)),
    ],
)
def test_bad_rows_name_the_field(body, field):
    with pytest.raises(ValidationError) as info:
        Request.model_validate(body)
    assert field in [e["loc"] for e in info.value.errors()]


Columns = make_columns_model(PIPELINE, max_rows=2)


def test_columns_validate_into_lists_with_nulls_kept():
    body = Columns.model_validate({"columns": {"a": [1.5, None], "c": ["x", None]}})
    assert body.columns == {"a": [1.5, None], "c": ["x", None]}


@pytest.mark.parametrize(
    "columns, field, message",
    [
        ({"a": [1.0], "c": ["x", "y"]}, (), "differ in length"),
        ({"a": [float("nan")], "c": ["x"]}, ("columns", "a", 0), "finite"),
        ({"a": [1.0], "c": ["\ud800"]}, ("columns", "c"), "value 0: text is not valid Unicode"),
        ({"a": [1.0], "c": ["x"], "z": [1]}, ("columns", "z"), "Extra"),
        ({"a": [1.0]}, ("columns", "c"), "required"),
        ({"a": [], "c": []}, ("columns", "a"), "at least 1"),
        ({"a": [1.0] * 3, "c": ["x"] * 3}, ("columns", "a"), "at most 2"),
    ],
)
def test_bad_columns_name_the_field(columns, field, message):
    with pytest.raises(ValidationError) as info:
        Columns.model_validate({"columns": columns})
    errors = {e["loc"]: e["msg"] for e in info.value.errors()}
    assert field in errors and message in errors[field], errors
