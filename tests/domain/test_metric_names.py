"""The metric-name mapping: canonical gate names <-> each monitoring provider's names."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from powerx_upgrade.config import metric_mapping
from powerx_upgrade.domain.metric_names import CANONICAL, MetricMapping
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.unit

DASHBOARDS = CONFIG_DIR / "monitoring" / "version_upgrade_dashboards.json"


def test_shipped_mapping_loads_and_renames_both_ways():
    mapping = metric_mapping(CONFIG_DIR)
    assert mapping.names() == {name: name for name in CANONICAL}
    prom = mapping.names("prometheus-http")
    assert prom["errors"] == "http_requests_errors_total"
    answer = {"t-1": {"http_requests_total": 100, "http_requests_errors_total": 3}}
    assert mapping.from_provider(answer, "prometheus-http") == {
        "t-1": {"requests": 100, "errors": 3}
    }
    assert mapping.to_provider(["errors"], "prometheus-http") == ["http_requests_errors_total"]


def test_unknown_provider_and_bad_mappings_are_named():
    with pytest.raises(KeyError, match="unknown monitoring provider 'datadog'"):
        MetricMapping().names("datadog")
    with pytest.raises(ValidationError, match="unknown canonical metric"):
        MetricMapping(providers={"powerx": {"error_ratio": "x"}})
    with pytest.raises(ValidationError, match="default_provider 'x'"):
        MetricMapping(default_provider="x", providers={"powerx": {}})


def test_a_missing_file_means_the_identity_mapping(tmp_path):
    assert metric_mapping(tmp_path).names() == {name: name for name in CANONICAL}


def test_dashboards_cover_the_five_metrics_as_the_exporter_names_them():
    document = json.loads(DASHBOARDS.read_text())
    titles = [d["title"] for d in document["dashboards"]]
    assert titles == ["Upgrade Strategy Dashboard", "Rollback Drill Monitor"]
    exported = {m["name"] for m in document["statsd_exporter"]["mappings"]}
    assert exported == {
        "powerx_version_upgrade_success_rate",
        "powerx_version_upgrade_batch_duration_minutes",
        "powerx_version_rollback_duration_ms",
        "powerx_version_upgrade_alert_total",
        "powerx_version_upgrade_paused_total",
    }
    expressions = " ".join(
        t["expr"] for d in document["dashboards"] for p in d["panels"] for t in p["targets"]
    )
    assert all(name in expressions for name in exported)
