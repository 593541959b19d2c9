"""The four alert rules on plain values."""

from __future__ import annotations

from datetime import timedelta

import pytest

from powerx_upgrade.domain.alerts import (
    batch_runtime_alert,
    error_rate_alert,
    missing_data_alert,
    rollback_failure_alert,
)

pytestmark = pytest.mark.unit


def test_grey_error_rate_alert_names_the_worst_measurement():
    measurements = [
        {"metric": "error_rate", "value": 0.02, "scope": "batch", "tenant": None},
        {"metric": "error_rate", "value": 0.09, "scope": "per_tenant", "tenant": "t-7"},
        {"metric": "latency_p95_ms", "value": 900.0, "scope": "batch", "tenant": None},
    ]
    alert = error_rate_alert(3, measurements, 0.05)
    assert alert.rule == "grey_error_rate" and alert.severity == "critical" and alert.batch == 3
    assert "9.00% on tenant t-7 is above 5%" in alert.message


def test_no_grey_error_rate_alert_at_or_below_the_limit():
    assert error_rate_alert(1, [{"metric": "error_rate", "value": 0.05}], 0.05) is None
    assert error_rate_alert(1, [{"metric": "error_rate", "value": None}], 0.05) is None


def test_missing_data_alert_after_the_threshold_only():
    assert missing_data_alert(2, timedelta(minutes=5), timedelta(minutes=5)) is None
    alert = missing_data_alert(2, timedelta(minutes=6), timedelta(minutes=5))
    assert alert.rule == "monitoring_data_missing" and "6m" in alert.message


def test_batch_runtime_alert_says_it_is_no_kill():
    alert = batch_runtime_alert(4, timedelta(minutes=31), timedelta(minutes=30))
    assert alert.rule == "batch_runtime" and "no kill" in alert.message
    assert batch_runtime_alert(4, timedelta(minutes=29), timedelta(minutes=30)) is None


def test_rollback_failure_alert_lists_failed_and_unverified_tenants():
    alert = rollback_failure_alert(["t-2"], [{"tenant": "t-9", "problems": ["on 2.5.0"]}])
    assert alert.rule == "rollback_failure" and alert.context["tenants"] == ["t-2", "t-9"]
    assert rollback_failure_alert([], []) is None
