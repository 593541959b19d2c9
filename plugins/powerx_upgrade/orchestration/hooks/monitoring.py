"""The monitoring service: per-tenant request/error counts and latency, and run subscriptions."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import aiohttp
from airflow.providers.http.hooks.http import HttpAsyncHook

from powerx_upgrade.domain.monitoring import merge_answers, query_pages
from powerx_upgrade.orchestration.hooks.base import PowerXHttpHook
from powerx_upgrade.rollout.errors import PowerXUnavailable, error_for

QUERY_ENDPOINT = "internal/monitoring/query"

TENANTS_PER_QUERY = 200
"""Tenants one query asks for (the plan's `monitoring.tenants_per_query`); longer lists are
paged, and a page is smaller still when a long interval would exceed the service's point limit."""

PAGES_AT_ONCE = 4
"""Pages of one query the trigger has in flight at once."""


def query_body(
    plugin: str,
    tenants: list[str],
    start: datetime,
    end: datetime,
    metrics: list[str] | None,
) -> dict[str, Any]:
    return {
        "plugin": plugin,
        "tenants": tenants,
        "metrics": metrics,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }


class PowerXMonitoringHook(PowerXHttpHook):
    """Synchronous monitoring calls: query (baseline snapshots) and subscribe.

    :param names: canonical metric -> the provider's name (`config.monitoring_names()`);
        None asks for the provider's defaults under the canonical names.
    :param tenants_per_query: tenants per query; longer lists are paged (`query_pages`).
    """

    default_conn_name = "powerx_monitoring"
    hook_name = "PowerX monitoring"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        names: dict[str, str] | None = None,
        tenants_per_query: int = TENANTS_PER_QUERY,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id, **kwargs)
        self.names = names
        self.tenants_per_query = tenants_per_query

    def query(
        self,
        plugin: str,
        tenants: list[str],
        start: datetime,
        end: datetime,
        metrics: list[str] | None = None,
    ) -> dict[str, Any]:
        """One answer for every tenant asked, page by page; any page failing fails the query
        (a partial answer would read as silence from the tenants of the missing pages)."""
        asked = metrics or provider_query(self.names)
        answers = [
            self.call("POST", QUERY_ENDPOINT, query_body(plugin, page, start, end, asked))
            for page in query_pages(tenants, start, end, self.tenants_per_query)
        ]
        return canonical_answer(merge_answers(answers), self.names)

    def subscribe(self, **subscription: Any) -> dict[str, Any]:
        return self.call("POST", "internal/monitoring/subscribe", subscription)


class PowerXMonitoringAsyncHook(HttpAsyncHook):
    """The gate trigger's monitoring queries, on the triggerer's event loop.

    :param conn_id: the monitoring connection (default `powerx_monitoring`).
    :param timeout: seconds per query (per page).
    :param names: canonical metric -> the provider's name (None: the provider's defaults).
    :param tenants_per_query: tenants per query; longer lists are paged, PAGES_AT_ONCE pages
        in flight.
    """

    conn_name_attr = "powerx_conn_id"
    default_conn_name = "powerx_monitoring"
    conn_type = "http"
    hook_name = "PowerX monitoring (async)"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        timeout: float = 30.0,
        names: dict[str, str] | None = None,
        tenants_per_query: int = TENANTS_PER_QUERY,
    ) -> None:
        super().__init__(
            method="POST", http_conn_id=conn_id or self.default_conn_name, retry_limit=1
        )
        self.powerx_conn_id = self.http_conn_id
        self.timeout = timeout
        self.names = names
        self.tenants_per_query = tenants_per_query

    async def query(
        self,
        plugin: str,
        tenants: list[str],
        start: datetime,
        end: datetime,
        metrics: list[str] | None = None,
    ) -> dict[str, Any]:
        """One answer for every tenant asked, page by page (PAGES_AT_ONCE in flight); any page
        failing fails the query."""
        asked = metrics or provider_query(self.names)
        pages = query_pages(tenants, start, end, self.tenants_per_query)
        limit = asyncio.Semaphore(PAGES_AT_ONCE)

        async def one(page: list[str]) -> dict[str, Any]:
            async with limit:
                return await self._query_page(query_body(plugin, page, start, end, asked))

        answers = await asyncio.gather(*(one(page) for page in pages))
        return canonical_answer(merge_answers(answers), self.names)

    async def _query_page(self, body: dict[str, Any]) -> dict[str, Any]:
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


def provider_query(names: dict[str, str] | None) -> list[str] | None:
    """The metric names to ask the provider for (None: its defaults)."""
    return list(names.values()) if names else None


def canonical_answer(answer: dict[str, Any], names: dict[str, str] | None) -> dict[str, Any]:
    """The provider's answer with per-tenant metric names mapped back to the gate's names."""
    if not names:
        return answer
    back = {theirs: ours for ours, theirs in names.items()}
    tenants = {
        tenant: {back.get(k, k): v for k, v in metrics.items()}
        for tenant, metrics in (answer.get("tenants") or {}).items()
    }
    return {**answer, "tenants": tenants}
