"""The rollout's metrics over StatsD, with Airflow's own [metrics] settings (statsd_on, host,
port, prefix; tags when statsd_influxdb_enabled or the Datadog client is on)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SUCCESS_RATE = "version.upgrade.success_rate"
BATCH_DURATION = "version.upgrade.batch_duration_minutes"
ROLLBACK_DURATION = "version.rollback.duration_ms"
ALERT_TOTAL = "version.upgrade.alert_total"
PAUSED_TOTAL = "version.upgrade.paused_total"
EXPOSURE = "version.upgrade.exposure_tenant_minutes"
ALL = (SUCCESS_RATE, BATCH_DURATION, ROLLBACK_DURATION, ALERT_TOTAL, PAUSED_TOTAL, EXPOSURE)


def _stats():
    from airflow.sdk.observability.stats import Stats

    return Stats


def count(name: str, tags: dict[str, str]) -> None:
    try:
        _stats().incr(name, tags=tags)
    except Exception as exc:  # metrics never break a rollout
        log.warning("metric %s not sent: %s", name, exc)


def gauge(name: str, value: float, tags: dict[str, str]) -> None:
    try:
        _stats().gauge(name, value, tags=tags)
    except Exception as exc:
        log.warning("metric %s not sent: %s", name, exc)


def timing(name: str, milliseconds: float, tags: dict[str, str]) -> None:
    try:
        _stats().timing(name, milliseconds, tags=tags)
    except Exception as exc:
        log.warning("metric %s not sent: %s", name, exc)
