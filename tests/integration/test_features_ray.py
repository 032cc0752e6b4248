"""The fitted transform: distributed statistics match numpy, and the Ray Dataset path and the
single-request path give identical numbers."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray.data

from raymlp.config.schema import FeaturesConfig
from raymlp.data.features import fit_feature_pipeline, label_classes, select_columns

pytestmark = pytest.mark.integration


def test_fit_matches_numpy_and_batch_equals_per_request_transform(ray_session, quickstart_data):
    ds = ray.data.read_parquet(str(quickstart_data))
    numeric, categorical = select_columns(ds.schema().base_schema, "churned", FeaturesConfig())
    assert numeric == ["tenure_months", "monthly_charges", "support_calls", "age"]
    assert categorical == ["plan", "region"]
    pipeline = fit_feature_pipeline(ds, label_classes(ds, "churned"), "churned", numeric, categorical, 2)

    table = pq.read_table(quickstart_data).to_pandas()
    for f in pipeline.numeric:
        assert f.mean == pytest.approx(table[f.name].mean())
        assert f.std == pytest.approx(table[f.name].std(ddof=0))
    plan = next(f for f in pipeline.categorical if f.name == "plan")
    assert plan.categories == sorted(table["plan"].value_counts().index[:2])  # max_categories keeps the top 2
    assert pipeline.classes == [0, 1]

    batched = np.concatenate([b["x"] for b in ds.map_batches(pipeline.transform_xy, batch_format="numpy").iter_batches(batch_size=None)])
    rows = table.to_dict("records")
    one_by_one = np.vstack([pipeline.transform({k: [row[k]] for k in pipeline.input_columns}) for row in rows])
    np.testing.assert_array_equal(np.sort(batched, axis=0), np.sort(one_by_one, axis=0))
