"""The gate's metric source, chosen by the plan's monitoring settings: one small factory.

`monitoring_source()` turns a plan's resolved `monitoring` block into a plain JSON dict (it
travels in the gate trigger's kwargs); `async_query()` and `sync_monitoring()` build the
provider's hook from it: the PowerX monitoring service or Prometheus. Every hook answers the same
shape (`{"tenants": {...}}`) and raises the same typed errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.monitoring import pools, queries_of

Query = Callable[[list[str], datetime, datetime], Awaitable[dict[str, Any]]]


def monitoring_source(
    plan: Plan,
    version: str | None,
    *,
    names: dict[str, str] | None = None,
    powerx_conn_id: str | None = None,
) -> dict[str, Any]:
    """The plan's metric source as JSON.

    :param version: the run's target version (`{version}` in PromQL).
    :param names: the PowerX provider's metric names (`config.monitoring_names()`).
    :param powerx_conn_id: the PowerX connection when the plan names none.
    """
    monitoring = plan.monitoring
    if monitoring.provider == "prometheus":
        return {
            "provider": "prometheus",
            "conn_id": monitoring.connection,
            "queries": queries_of(monitoring),
            "pools": pools(monitoring),
            "step": monitoring.step.total_seconds(),
            "version": version,
            "tenants_per_query": monitoring.tenants_per_query,
        }
    return {
        "provider": "powerx",
        "conn_id": monitoring.conn_id or powerx_conn_id or monitoring.connection,
        "names": names,
        "tenants_per_query": monitoring.tenants_per_query,
    }


def _prometheus_kwargs(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "queries": source["queries"],
        "pools": source.get("pools") or {},
        "step": float(source["step"]),
        "version": source.get("version"),
        "tenants_per_query": int(source.get("tenants_per_query") or 200),
    }


def _powerx_kwargs(source: dict[str, Any]) -> dict[str, Any]:
    """A source recorded before paging (a deferred trigger's kwargs) has no page size: the
    hook's default then."""
    size = source.get("tenants_per_query")
    return {"tenants_per_query": int(size)} if size else {}


def async_query(source: dict[str, Any], plugin: str) -> Query:
    """The trigger's query function for `source` (on the triggerer's event loop)."""
    hook: Any
    if source.get("provider") == "prometheus":
        from powerx_upgrade.orchestration.hooks.prometheus import PrometheusAsyncHook

        hook = PrometheusAsyncHook(source.get("conn_id"), **_prometheus_kwargs(source))
    else:
        from powerx_upgrade.orchestration.hooks.monitoring import PowerXMonitoringAsyncHook

        hook = PowerXMonitoringAsyncHook(
            source.get("conn_id"), names=source.get("names"), **_powerx_kwargs(source)
        )

    async def query(tenants: list[str], start: datetime, end: datetime) -> dict[str, Any]:
        return await hook.query(plugin, tenants, start, end)

    return query


def sync_monitoring(source: dict[str, Any]) -> Any:
    """A blocking hook for `source` with `query(plugin, tenants, start, end)`: preflight's
    baseline and the gate's first poke in the worker."""
    if source.get("provider") == "prometheus":
        from powerx_upgrade.orchestration.hooks.prometheus import PrometheusHook

        return PrometheusHook(source.get("conn_id"), retries=2, **_prometheus_kwargs(source))
    from powerx_upgrade.orchestration.hooks.monitoring import PowerXMonitoringHook

    return PowerXMonitoringHook(
        source.get("conn_id"), retries=2, names=source.get("names"), **_powerx_kwargs(source)
    )


def sync_query(source: dict[str, Any], plugin: str) -> Query:
    """`sync_monitoring(source)` as the gate poller's async query function (blocking inside)."""
    hook = sync_monitoring(source)

    async def query(tenants: list[str], start: datetime, end: datetime) -> dict[str, Any]:
        return hook.query(plugin, tenants, start, end)

    return query
