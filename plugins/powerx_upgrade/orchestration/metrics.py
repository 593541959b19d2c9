"""The rollout's metrics over StatsD, with Airflow's own [metrics] settings (statsd_on, host,
port, prefix; tags when statsd_influxdb_enabled or the Datadog client is on)."""

from __future__ import annotations

import logging

from powerx_upgrade.rollout.metrics import (  # noqa: F401  (the names, re-exported)
    ALERT_TOTAL,
    ALL,
    BATCH_DURATION,
    EXPOSURE,
    PAUSED_TOTAL,
    ROLLBACK_DURATION,
    SUCCESS_RATE,
)

log = logging.getLogger(__name__)


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
