import numpy as np
import pytest
from sklearn.ensemble import ExtraTreesClassifier
from sklearn.feature_selection import VarianceThreshold, mutual_info_classif, mutual_info_regression

from raymlp.data.selection import (
    Moments,
    correlation_keep,
    model_importance,
    mutual_information,
    top_k,
    variance_keep,
)


@pytest.fixture
def block():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 1))
    # a large offset shows the merge does not cancel catastrophically
    return np.hstack([base, 2 * base + rng.normal(0, 0.1, (400, 1)), rng.normal(1.7e9, 3.0, (400, 1))])


def test_combined_moments_equal_whole_block_covariance_and_corrcoef(block):
    parts = [Moments.of(block[:150]), Moments.of(block[150:151]), Moments.of(block[151:])]
    total = parts[0] + parts[1] + parts[2]
    assert total.n == 400
    np.testing.assert_allclose(total.covariance(), np.cov(block, rowvar=False), rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(total.correlation(), np.corrcoef(block, rowvar=False), atol=1e-9)


def test_moments_skip_incomplete_rows_and_empty_blocks(block):
    holed = block.copy()
    holed[::7, 1] = np.nan
    merged = Moments.of(holed[:0]) + Moments.of(holed) + Moments.of(np.empty((0, 3)))
    complete = block[np.arange(400) % 7 != 0]
    assert merged.n == len(complete)
    np.testing.assert_allclose(merged.correlation(), np.corrcoef(complete, rowvar=False), atol=1e-9)


def test_zero_variance_columns_correlate_zero_not_nan():
    x = np.column_stack([np.arange(10.0), np.full(10, 3.0), -np.arange(10.0)])
    corr = Moments.of(x).correlation()
    np.testing.assert_allclose(corr, [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-12)


def test_moments_errors():
    with pytest.raises(ValueError, match="combine moments of 2 and 3"):
        Moments.of(np.ones((2, 2))) + Moments.of(np.ones((2, 3)))
    with pytest.raises(ValueError, match="more than 1 complete row"):
        Moments.of(np.ones((1, 2))).covariance()
    with pytest.raises(ValueError, match="rows, columns"):
        Moments.of(np.ones(3))


def test_variance_keep_matches_sklearn_variance_threshold():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(0, s, 300) for s in (0.0, 0.05, 0.3, 1.0, 2.0)])
    names = ["a", "b", "c", "d", "e"]
    for threshold in (0.0, 0.01, 0.5):
        reference = VarianceThreshold(threshold).fit(x)
        expected = [n for n, keep in zip(names, reference.get_support()) if keep]
        assert variance_keep(names, x.var(axis=0), threshold) == expected
    assert variance_keep(["a", "b"], [np.nan, 1.0]) == ["b"]
    with pytest.raises(ValueError, match="one per name"):
        variance_keep(["a"], [1.0, 2.0])


def test_correlation_keep_is_greedy_in_column_order():
    corr = np.array([
        [1.0, 0.95, 0.1, -0.97],
        [0.95, 1.0, 0.2, 0.5],
        [0.1, 0.2, 1.0, 0.0],
        [-0.97, 0.5, 0.0, 1.0],
    ])
    assert correlation_keep(["a", "b", "c", "d"], corr, 0.9) == ["a", "c"]
    # b only clashed with a; once a is listed last, b is kept and a is dropped
    order = [1, 2, 3, 0]
    assert correlation_keep(["b", "c", "d", "a"], corr[np.ix_(order, order)], 0.9) == ["b", "c", "d"]
    assert correlation_keep(["a", "b"], np.array([[1.0, np.nan], [np.nan, 1.0]]), 0.5) == ["a", "b"]
    with pytest.raises(ValueError, match="expected"):
        correlation_keep(["a"], corr, 0.9)


def test_mutual_information_matches_sklearn_and_ranks_the_signal():
    rng = np.random.default_rng(2)
    x = np.column_stack([rng.normal(size=500), rng.integers(0, 4, 500), rng.normal(size=500)])
    y_class = ((x[:, 0] > 0) ^ (x[:, 1] == 2)).astype(int)
    discrete = [False, True, False]
    ours = mutual_information(x, y_class, discrete, "classification", seed=3)
    np.testing.assert_allclose(ours, mutual_info_classif(x, y_class, discrete_features=discrete, random_state=3))
    assert ours[0] > ours[2] and ours[1] > ours[2]
    y_reg = x[:, 2] ** 2 + rng.normal(0, 0.1, 500)
    ours = mutual_information(x, y_reg, discrete, "regression", seed=3)
    np.testing.assert_allclose(ours, mutual_info_regression(x, y_reg, discrete_features=discrete, random_state=3))
    assert ours.argmax() == 2
    with pytest.raises(ValueError, match="2 flags for 3 columns"):
        mutual_information(x, y_class, [True, False], "classification", seed=0)
    with pytest.raises(ValueError, match="task must be"):
        mutual_information(x, y_class, discrete, "ranking", seed=0)


def test_model_importance_matches_extra_trees_and_is_seeded():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 4))
    y = (x[:, 1] + 0.5 * x[:, 3] > 0).astype(int)
    ours = model_importance(x, y, "classification", seed=5)
    reference = ExtraTreesClassifier(n_estimators=50, random_state=5, n_jobs=1).fit(x, y).feature_importances_
    np.testing.assert_allclose(ours, reference)
    assert ours.argmax() == 1 and ours.sum() == pytest.approx(1.0)
    y_reg = x[:, 2] * 3 + rng.normal(0, 0.1, 300)
    regression = model_importance(x, y_reg, "regression", seed=5)
    assert regression.argmax() == 2
    np.testing.assert_array_equal(regression, model_importance(x, y_reg, "regression", seed=5))


def test_top_k_breaks_ties_by_name_and_keeps_original_order():
    names = ["d", "b", "a", "c", "e"]
    scores = [0.5, 0.9, 0.5, np.nan, 0.1]
    assert top_k(names, scores, 2) == ["b", "a"]
    assert top_k(names, scores, 3) == ["d", "b", "a"]
    assert top_k(names, scores, 10) == names
    assert top_k(names, scores, 0) == []
    with pytest.raises(ValueError, match="non-negative"):
        top_k(names, scores, -1)
