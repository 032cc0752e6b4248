"""The drift example end to end at small size: drift seen in the served gauges, live AUC past its
threshold from labels sent later, a better model promoted and served, a worse one refused."""

import importlib.util

import pytest
from ray import serve

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_drift_example_detects_retrains_promotes_and_refuses(ray_session, tmp_path):
    serve.shutdown()  # earlier tests' proxies keep their ports
    spec = importlib.util.spec_from_file_location("drift_demo", REPO / "examples" / "drift" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    try:
        out = demo.main(["--rows", "4000", "--work", str(tmp_path)])
    finally:
        serve.shutdown()
    assert out["calm"]["raymlp_drifted_features"] == 0
    assert out["drifted"]["raymlp_drift_psi[monthly_charges]"] > 0.2
    assert out["live"]["degraded"] == {out["first"].model_version: ["auc"]}
    better = out["better"]
    assert better.ran and "drift in monthly_charges" in better.reason and "live auc" in better.reason
    assert better.result.promotion.promote and better.redeployed
    assert out["worse"].ran and not out["worse"].result.promotion.promote
