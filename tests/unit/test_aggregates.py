"""The custom Ray Data aggregations, block by block and merged, without a cluster."""

import numpy as np
import pyarrow as pa
import pytest

from raymlp.data.aggregates import CrossMoments, Quantiles, Sample


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
