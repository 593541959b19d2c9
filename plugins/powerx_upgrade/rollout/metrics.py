"""The rollout's metric names, and the sink the rollout steps send them to (StatsD in Airflow)."""

from __future__ import annotations

from typing import Protocol

SUCCESS_RATE = "version.upgrade.success_rate"
BATCH_DURATION = "version.upgrade.batch_duration_minutes"
ROLLBACK_DURATION = "version.rollback.duration_ms"
ALERT_TOTAL = "version.upgrade.alert_total"
PAUSED_TOTAL = "version.upgrade.paused_total"
EXPOSURE = "version.upgrade.exposure_tenant_minutes"
ALL = (SUCCESS_RATE, BATCH_DURATION, ROLLBACK_DURATION, ALERT_TOTAL, PAUSED_TOTAL, EXPOSURE)


class Metrics(Protocol):
    """Where the steps send metrics; never raises (metrics never break a rollout)."""

    def count(self, name: str, tags: dict[str, str]) -> None: ...

    def gauge(self, name: str, value: float, tags: dict[str, str]) -> None: ...

    def timing(self, name: str, milliseconds: float, tags: dict[str, str]) -> None: ...


class NoMetrics:
    """A sink that drops every metric (tests, tools outside Airflow)."""

    def count(self, name: str, tags: dict[str, str]) -> None:
        return None

    def gauge(self, name: str, value: float, tags: dict[str, str]) -> None:
        return None

    def timing(self, name: str, milliseconds: float, tags: dict[str, str]) -> None:
        return None
