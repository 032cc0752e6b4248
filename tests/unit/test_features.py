import numpy as np
import pytest

from raymlp.data.features import FORMAT_VERSION, CategoricalFeature, FeaturePipeline, NumericFeature

PIPELINE = FeaturePipeline(
    label="y",
    classes=["no", "yes"],
    numeric=[NumericFeature("a", fill=10.0, center=10.0, scale=2.0)],
    categorical=[CategoricalFeature("c", categories=["x", "y"])],
)


def test_transform_scales_and_one_hot_encodes():
    out = PIPELINE.transform({"a": [12.0, 8.0], "c": ["y", "x"]})
    assert out.dtype == np.float32 and out.shape == (2, PIPELINE.output_dim) == (2, 3)
    np.testing.assert_array_equal(out, [[1.0, 0.0, 1.0], [-1.0, 1.0, 0.0]])


def test_missing_numbers_take_the_mean_and_unknown_categories_encode_as_zeros():
    out = PIPELINE.transform({"a": [None, float("nan")], "c": ["z", None]})
    np.testing.assert_array_equal(out, np.zeros((2, 3)))


def test_labels_map_to_class_indices():
    np.testing.assert_array_equal(PIPELINE.encode_labels(["yes", "no", "yes"]), [1, 0, 1])
    batch = PIPELINE.transform_xy({"a": np.array([10.0]), "c": np.array(["x"]), "y": np.array(["yes"])})
    assert batch["x"].shape == (1, 3) and batch["y"].tolist() == [1]


def test_json_round_trip_is_exact_and_versioned():
    text = PIPELINE.to_json()
    assert FeaturePipeline.from_json(text) == PIPELINE
    with pytest.raises(ValueError, match="format 99 is not supported"):
        FeaturePipeline.from_json(text.replace(f'"format_version": {FORMAT_VERSION}', '"format_version": 99'))


def test_numeric_cleaning_imputes_caps_and_marks_missing():
    f = NumericFeature("a", fill=5.0, lower=0.0, upper=10.0, indicator=True, center=0.0, scale=2.0)
    pipeline = FeaturePipeline(label="y", classes=[0, 1], numeric=[f])
    np.testing.assert_array_equal(f.clean([None, -3.0, 4.0, 99.0]), [5.0, 0.0, 4.0, 10.0])
    assert pipeline.output_dim == 2
    np.testing.assert_array_equal(pipeline.transform({"a": [None, 99.0]}), [[2.5, 1.0], [5.0, 0.0]])


def test_log1p_and_the_other_bucket():
    f = NumericFeature("a", fill=0.0, log1p=True)
    np.testing.assert_allclose(f.clean([None, -2.0, np.e - 1]), [0.0, 0.0, 1.0])
    c = CategoricalFeature("c", ["x", "y"], other=True)
    pipeline = FeaturePipeline(label="y", classes=[0, 1], categorical=[c])
    assert pipeline.output_dim == 3
    np.testing.assert_array_equal(pipeline.transform({"c": ["y", "rare", None]}), [[0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_column_major_output_equals_row_major_and_leaves_the_input_alone():
    """Encoders write into slices of the output (column-major when batches are written out), and
    cleaning works on its own copy: a pyarrow column or the caller's array is never modified."""
    import pyarrow as pa

    pipeline = FeaturePipeline(
        label="y",
        classes=[0, 1],
        numeric=[NumericFeature("a", fill=0.5, lower=-1.0, upper=1.0, indicator=True, center=0.1, scale=2.0)],
        categorical=[
            CategoricalFeature("c", categories=["x", "y"], other=True),
            CategoricalFeature("o", categories=["p", "q"], encoding="ordinal"),
        ],
    )
    a = np.array([3.0, np.nan, -0.5, 0.25])
    columns = {"a": a, "c": pa.chunked_array([["x", "z"], [None, "y"]]), "o": ["q", None, "p", "r"]}
    row_major, column_major = pipeline.transform(columns), pipeline.transform(columns, order="F")
    assert column_major.flags.f_contiguous and row_major.flags.c_contiguous
    np.testing.assert_array_equal(row_major, column_major)
    expected = [[0.45, 0, 1, 0, 0, 1], [0.2, 1, 0, 0, 1, -1], [-0.3, 0, 0, 0, 0, 0], [0.075, 0, 0, 1, 0, -1]]
    np.testing.assert_allclose(row_major, expected, rtol=1e-6)  # "z" is present but unseen: other
    np.testing.assert_array_equal(a, [3.0, np.nan, -0.5, 0.25])
