"""The shipped Prometheus config, alert rules and Grafana dashboard: valid for promtool, the alerts
fire on the series that should raise them (promtool's rule tests), and every metric they query is
one raymlp exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "clusters" / "monitoring"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool: scripts/install_prometheus.sh")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)


@pytest.mark.prometheus
@needs_promtool
def test_the_config_and_rules_pass_promtool_checks(tmp_path):
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    discovery = tmp_path / "prom_metrics_service_discovery.json"
    discovery.write_text("[]")
    config["scrape_configs"][0]["file_sd_configs"][0]["files"] = [str(discovery)]
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "6 rules found" in checked.stdout


@pytest.mark.prometheus
@needs_promtool
def test_alerts_fire_on_unhealthy_series_and_not_on_healthy_ones():
    tested = promtool("test", "rules", "alerts_test.yml", "alerts_stale_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def exported_metrics() -> set[str]:
    """Every name raymlp's metrics module declares, histograms with Prometheus's series suffixes."""
    source = (REPO / "raymlp" / "monitor" / "metrics.py").read_text()
    names = set()
    for kind, name in re.findall(r'metrics\.(Counter|Gauge|Histogram)\(\s*"(raymlp_\w+)"', source):
        names |= {name + s for s in HISTOGRAM_SUFFIXES} if kind == "Histogram" else {name}
    return names


def queried_metrics(text: str) -> set[str]:
    return set(re.findall(r"\braymlp_\w+", text))


def test_every_metric_the_alerts_and_the_dashboard_query_is_exported():
    exported = exported_metrics()
    assert {"raymlp_drift_psi", "raymlp_http_latency_seconds_bucket", "raymlp_model_registered_timestamp_seconds"} <= exported
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    expressions = " ".join(rule["expr"] for group in rules["groups"] for rule in group["rules"])
    assert queried_metrics(expressions) - exported == set()
    dashboard = json.loads((MONITORING / "grafana" / "raymlp-dashboard.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    assert queried_metrics(queries) - exported == set()
    assert {"raymlp_drift_psi", "raymlp_prediction_drift_psi", "raymlp_http_requests_total"} <= queried_metrics(queries)
