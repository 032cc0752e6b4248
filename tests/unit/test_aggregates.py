"""The custom Ray Data aggregations, block by block and merged, without a cluster."""

import numpy as np
import pyarrow as pa
import pytest

from raymlp.data.aggregates import CrossMoments, Quantiles, Sample, Summary


def merged(agg, blocks):
    acc = agg.aggregate_block(blocks[0])
    for block in blocks[1:]:
        acc = agg.combine(acc, agg.aggregate_block(block))
    return agg.finalize(acc)


def test_quantiles_merge_across_blocks_within_the_sketch_error_and_skip_nulls():
    values = np.random.default_rng(0).lognormal(0, 1, 30_000)
    blocks = [pa.table({"v": pa.array(part, mask=np.isnan(part))}) for part in np.array_split(values, 7)]
    blocks.append(pa.table({"v": pa.nulls(5, pa.float64())}))
    q = merged(Quantiles("v", [0.1, 0.5, 0.9], alias_name="q"), blocks)
    ranks = [(values <= x).mean() for x in q]
    assert ranks == pytest.approx([0.1, 0.5, 0.9], abs=0.01)


def test_quantiles_are_exact_on_small_columns_and_none_when_empty():
    block = pa.table({"v": [3.0, 1.0, 2.0, None, 4.0]})
    assert merged(Quantiles("v", [0.0, 1.0], alias_name="q"), [block]) == [1.0, 4.0]
    assert merged(Quantiles("v", [0.5], alias_name="q"), [pa.table({"v": pa.nulls(3, pa.float64())})]) is None


def test_sample_is_bounded_uniform_across_unequal_blocks_and_deterministic():
    big, small = pa.table({"v": np.zeros(90_000)}), pa.table({"v": np.ones(10_000)})
    agg = Sample(["v"], rows=2_000, seed=1)
    sample = merged(agg, [big, small])["v"]
    assert len(sample) == 2_000
    assert sample.mean() == pytest.approx(0.1, abs=0.01)  # in proportion to the rows each block stands for
    np.testing.assert_array_equal(sample, merged(Sample(["v"], rows=2_000, seed=1), [big, small])["v"])
    assert len(merged(Sample(["v"], rows=2_000, seed=1), [pa.table({"v": [1.0, 2.0]})])["v"]) == 2


def test_cross_moments_give_the_correlation_matrix_of_the_whole():
    rng = np.random.default_rng(2)
    a = rng.normal(size=5_000)
    x = np.column_stack([a, 2 * a + rng.normal(size=5_000), rng.normal(size=5_000) + 1.7e9])
    blocks = [pa.table({"a": p[:, 0], "b": p[:, 1], "c": p[:, 2]}) for p in np.array_split(x, 4)]
    moments = merged(CrossMoments(["a", "b", "c"]), blocks)
    np.testing.assert_allclose(moments.correlation(), np.corrcoef(x.T), atol=1e-6)


def test_summary_equals_numpy_per_column_with_nulls_nans_and_empty_columns_across_blocks():
    rng = np.random.default_rng(3)
    values = rng.normal(5, 2, 10_000)
    values[rng.random(10_000) < 0.05] = np.nan
    ints = rng.integers(-3, 9, 10_000)
    blocks = [
        pa.table({
            "f": pa.array(part, mask=np.isnan(part) & (i % 2 == 0)),  # missing as null in some blocks, NaN in others
            "i": pa.array(ints_part),
            "e": pa.nulls(len(part), pa.float64()),
        })
        for i, (part, ints_part) in enumerate(zip(np.array_split(values, 5), np.array_split(ints, 5)))
    ]
    stats = merged(Summary(["f", "i", "e"], alias_name="s"), blocks)
    present = values[~np.isnan(values)]
    expected = {"count": len(present), "mean": present.mean(), "std": present.std(), "min": present.min(), "max": present.max()}
    assert stats["f"] == pytest.approx(expected, rel=1e-12)
    assert stats["i"] == pytest.approx({"count": 10_000, "mean": ints.mean(), "std": ints.std(), "min": -3, "max": 8})
    assert stats["e"] == {"count": 0, "mean": None, "std": None, "min": None, "max": None}


def test_summary_keeps_its_precision_far_from_zero():
    """Epoch seconds: raw sums of squares would cancel; merged centred moments do not."""
    values = 1.7e9 + np.random.default_rng(4).normal(0, 3, 9_000)
    blocks = [pa.table({"t": part}) for part in np.array_split(values, 9)]
    assert merged(Summary(["t"], alias_name="s"), blocks)["t"]["std"] == pytest.approx(values.std(), rel=1e-9)
