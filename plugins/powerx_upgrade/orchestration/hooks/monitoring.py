"""The monitoring service: per-tenant request/error counts and latency, and run subscriptions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp
from airflow.providers.http.hooks.http import HttpAsyncHook

from powerx_upgrade.orchestration.hooks.base import PowerXHttpHook
from powerx_upgrade.rollout.errors import PowerXUnavailable, error_for

QUERY_ENDPOINT = "internal/monitoring/query"


def query_body(
    plugin: str, tenants: list[str], start: datetime, end: datetime, metrics: list[str] | None
) -> dict[str, Any]:
    return {
        "plugin": plugin,
        "tenants": tenants,
        "metrics": metrics,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }


class PowerXMonitoringHook(PowerXHttpHook):
    """Synchronous monitoring calls: query (baseline snapshots) and subscribe."""

    default_conn_name = "powerx_monitoring"
    hook_name = "PowerX monitoring"

    def query(
        self,
        plugin: str,
        tenants: list[str],
        start: datetime,
        end: datetime,
        metrics: list[str] | None = None,
    ) -> dict[str, Any]:
        return self.call("POST", QUERY_ENDPOINT, query_body(plugin, tenants, start, end, metrics))

    def subscribe(self, **subscription: Any) -> dict[str, Any]:
        return self.call("POST", "internal/monitoring/subscribe", subscription)


class PowerXMonitoringAsyncHook(HttpAsyncHook):
    """The gate trigger's monitoring queries, on the triggerer's event loop.

    :param conn_id: the monitoring connection (default `powerx_monitoring`).
    :param timeout: seconds per query.
    """

    conn_name_attr = "powerx_conn_id"
    default_conn_name = "powerx_monitoring"
    conn_type = "http"
    hook_name = "PowerX monitoring (async)"

    def __init__(self, conn_id: str | None = None, *, timeout: float = 30.0) -> None:
        super().__init__(
            method="POST", http_conn_id=conn_id or self.default_conn_name, retry_limit=1
        )
        self.powerx_conn_id = self.http_conn_id
        self.timeout = timeout

    async def query(
        self,
        plugin: str,
        tenants: list[str],
        start: datetime,
        end: datetime,
        metrics: list[str] | None = None,
    ) -> dict[str, Any]:
        body = query_body(plugin, tenants, start, end, metrics)
        try:
            async with self.session() as http:
                response = await http.run(
                    endpoint=QUERY_ENDPOINT,
                    json=body,
                    extra_options={
                        "check_response": False,
                        "timeout": aiohttp.ClientTimeout(total=self.timeout),
                    },
                )
                payload = await response.json(content_type=None)
                if response.status >= 300:
                    raise error_for(response.status, payload, "POST", QUERY_ENDPOINT)
                return payload
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PowerXUnavailable(
                f"no answer: {type(exc).__name__}", method="POST", endpoint=QUERY_ENDPOINT
            ) from exc
