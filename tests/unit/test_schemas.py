import pytest
from pydantic import ValidationError

from raymlp.serve.schemas import make_request_model

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
