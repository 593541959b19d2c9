"""Prometheus as the gate's metric source: PromQL range queries folded into the monitoring answer.

Every provider answers `{"tenants": {tenant: {requests, errors, latency_p95_ms, samples,
<custom metrics>}}}` for an interval. Here each gate input is a PromQL template evaluated by
`/api/v1/query_range` at `step` resolution over the interval; per tenant, requests and errors
are the sum of the per-step increases, samples the number of steps with data, latency the
request-weighted mean of the per-step p95, a custom metric its steps pooled by its `pool`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import requests
import tenacity
from airflow.providers.http.hooks.http import HttpAsyncHook, HttpHook

from powerx_upgrade.domain.monitoring import expand, promql_duration, tenant_regex
from powerx_upgrade.rollout.errors import (
    PowerXError,
    PowerXRejected,
    PowerXUnavailable,
    error_for,
    is_retryable,
)

QUERY_RANGE = "api/v1/query_range"
DEFAULT_CONN_ID = "powerx_prometheus"
Series = dict[str, dict[float, float]]
"""tenant -> {step timestamp: value} of one query."""

_POOLS = {"max": max, "sum": sum, "mean": lambda v: sum(v) / len(v)}


# ---------------------------------------------------------------------------------------------
# Pure helpers: the requests to send, and the answers folded into the gate's shape
# ---------------------------------------------------------------------------------------------


def range_requests(
    queries: Mapping[str, str],
    *,
    plugin: str,
    version: str | None,
    tenants: Sequence[str],
    start: datetime,
    end: datetime,
    step: timedelta,
    tenants_per_query: int,
) -> list[tuple[str, dict[str, str]]]:
    """(input name, form of one `query_range` call) for every input and page of tenants.

    Step k covers (start + (k-1) step, start + k step]: the first evaluation is at start + step,
    so the summed increases tile the interval; an interval shorter than a step asks nothing.
    """
    first = start + step
    if not tenants or first > end:
        return []
    values = {"plugin": _quoted(plugin), "version": _quoted(version or "")}
    values["step"] = promql_duration(step)
    window = {
        "start": f"{first.timestamp():.3f}",
        "end": f"{end.timestamp():.3f}",
        "step": f"{step.total_seconds():g}",
    }
    return [
        (name, {"query": expand(template, {**values, "tenant": tenant_regex(page)}), **window})
        for page in _pages(sorted(set(tenants)), tenants_per_query)
        for name, template in queries.items()
    ]


def _pages(tenants: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for index in range(0, len(tenants), size):
        yield tenants[index : index + size]


def _quoted(value: str) -> str:
    """A value placed inside a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def matrix_series(name: str, payload: Any) -> Series:
    """A `query_range` answer -> tenant -> {timestamp: value}; NaN and infinite steps dropped.

    An answer that is not a matrix, or a series without a `tenant` label, is a configuration
    error (the PromQL must keep `by (tenant)`), raised rather than read as no data.
    """
    series: Series = {}
    for item in _matrix(name, payload):
        tenant = (item.get("metric") or {}).get("tenant")
        if tenant is None:
            raise _rejected(
                name,
                f"a series has no tenant label ({item.get('metric')}); keep `by (tenant)` in "
                "the PromQL",
                code="no_tenant_label",
            )
        points = series.setdefault(str(tenant), {})
        for timestamp, text in item.get("values") or []:
            value = float(text)
            if math.isfinite(value):
                points[float(timestamp)] = value
    return series


def _matrix(name: str, payload: Any) -> list[dict[str, Any]]:
    """The result list of a successful matrix answer; anything else is refused."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or payload.get("status") != "success":
        raise _rejected(name, f"unexpected answer {str(payload)[:200]}")
    if data.get("resultType") != "matrix":
        raise _rejected(name, f"a range query must give a matrix, got {data.get('resultType')}")
    return list(data.get("result") or [])


def _rejected(name: str, message: str, code: str | None = None) -> PowerXRejected:
    return PowerXRejected(
        f"query {name}: {message}", method="POST", endpoint=QUERY_RANGE, code=code
    )


def fold(results: Mapping[str, Series], pools: Mapping[str, str]) -> dict[str, Any]:
    """Per-input series -> the monitoring answer (`{"tenants": {...}}`)."""
    requests_by_tenant = results.get("requests", {})
    tenants = sorted({t for series in results.values() for t in series})
    answer: dict[str, dict[str, Any]] = {}
    for tenant in tenants:
        per_step = requests_by_tenant.get(tenant, {})
        entry: dict[str, Any] = {
            "requests": round(sum(per_step.values())),
            "errors": round(sum(results.get("errors", {}).get(tenant, {}).values())),
            "latency_p95_ms": weighted_latency(
                results.get("latency_p95_ms", {}).get(tenant, {}), per_step
            ),
            "samples": len(per_step),
        }
        for name, pool in pools.items():
            values = list(results.get(name, {}).get(tenant, {}).values())
            if values:
                entry[name] = float(_POOLS[pool](values))
        answer[tenant] = entry
    return {"tenants": answer}


def weighted_latency(p95: Mapping[float, float], requests: Mapping[float, float]) -> float | None:
    """The request-weighted mean of the per-step p95 (an unweighted mean without traffic)."""
    if not p95:
        return None
    weights = {t: requests.get(t, 0.0) for t in p95}
    total = sum(weights.values())
    if total <= 0:
        return sum(p95.values()) / len(p95)
    return sum(value * weights[t] for t, value in p95.items()) / total


def merge_pages(calls: Iterable[tuple[str, Series]]) -> dict[str, Series]:
    merged: dict[str, Series] = {}
    for name, series in calls:
        merged.setdefault(name, {}).update(series)
    return merged


def answer_error(status: int, body: Any) -> PowerXError:
    """A non-2xx answer as the typed error; Prometheus's own error body (`errorType`, `error`)
    becomes the code and message (a bad PromQL is a 400: a configuration error)."""
    if isinstance(body, dict) and body.get("status") == "error":
        body = {"error": body.get("errorType"), "message": body.get("error")}
    return error_for(status, body, "POST", QUERY_RANGE)


# ---------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------


class _PrometheusQueries:
    """What both hooks share: the queries, step, paging, pools and the run's version."""

    def _setup(
        self,
        queries: Mapping[str, str],
        pools: Mapping[str, str] | None,
        step: float,
        version: str | None,
        tenants_per_query: int,
        timeout: float,
    ) -> None:
        self.queries = dict(queries)
        self.pools = dict(pools or {})
        self.step = timedelta(seconds=step)
        self.version = version
        self.tenants_per_query = tenants_per_query
        self.timeout = timeout

    def requests_for(
        self, plugin: str, tenants: list[str], start: datetime, end: datetime
    ) -> list[tuple[str, dict[str, str]]]:
        return range_requests(
            self.queries,
            plugin=plugin,
            version=self.version,
            tenants=tenants,
            start=start,
            end=end,
            step=self.step,
            tenants_per_query=self.tenants_per_query,
        )


class PrometheusAsyncHook(HttpAsyncHook, _PrometheusQueries):
    """The gate trigger's PromQL range queries, on the triggerer's event loop.

    :param conn_id: the Prometheus HTTP connection (default `powerx_prometheus`): host, port,
        optional path prefix, login/password or headers in the extra.
    :param queries: input name -> PromQL template (`domain.monitoring.queries_of`).
    :param pools: custom metric -> pool (max, mean, sum).
    :param step: range-query resolution in seconds.
    :param version: the run's target version, for `{version}`.
    :param tenants_per_query: tenants per query; longer lists are paged.
    :param timeout: seconds per query.
    """

    conn_name_attr = "powerx_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "http"
    hook_name = "PowerX Prometheus (async)"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        queries: Mapping[str, str],
        pools: Mapping[str, str] | None = None,
        step: float = 10.0,
        version: str | None = None,
        tenants_per_query: int = 200,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(
            method="POST", http_conn_id=conn_id or self.default_conn_name, retry_limit=1
        )
        self.powerx_conn_id = self.http_conn_id
        self._setup(queries, pools, step, version, tenants_per_query, timeout)

    async def query(
        self,
        plugin: str,
        tenants: list[str],
        start: datetime,
        end: datetime,
        metrics: list[str] | None = None,
    ) -> dict[str, Any]:
        calls = self.requests_for(plugin, tenants, start, end)
        if not calls:
            return {"tenants": {}}
        try:
            async with self.session() as http:
                found = await asyncio.gather(*(self._one(http, name, form) for name, form in calls))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PowerXUnavailable(
                f"no answer: {type(exc).__name__}: {exc}", method="POST", endpoint=QUERY_RANGE
            ) from exc
        return fold(merge_pages(found), self.pools)

    async def _one(self, http: Any, name: str, form: dict[str, str]) -> tuple[str, Series]:
        response = await http.run(
            endpoint=QUERY_RANGE,
            data=form,
            extra_options={
                "check_response": False,
                "timeout": aiohttp.ClientTimeout(total=self.timeout),
            },
        )
        try:
            payload = await response.json(content_type=None)
        except ValueError:
            payload = {"message": (await response.text())[:500]}
        if response.status >= 300:
            raise answer_error(response.status, payload)
        return name, matrix_series(name, payload)


class PrometheusHook(HttpHook, _PrometheusQueries):
    """Synchronous PromQL range queries: preflight's pre-upgrade baseline and the gate's first
    poke in the worker. Same parameters as `PrometheusAsyncHook`, plus:

    :param retries: attempts after the first for no answer, timeouts, 5xx and 429.
    """

    conn_name_attr = "powerx_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "http"
    hook_name = "PowerX Prometheus"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        queries: Mapping[str, str],
        pools: Mapping[str, str] | None = None,
        step: float = 10.0,
        version: str | None = None,
        tenants_per_query: int = 200,
        timeout: float = 30.0,
        retries: int = 2,
    ) -> None:
        super().__init__(method="POST", http_conn_id=conn_id or self.default_conn_name)
        self.powerx_conn_id = self.http_conn_id
        self.retries = retries
        self._setup(queries, pools, step, version, tenants_per_query, timeout)

    def query(
        self,
        plugin: str,
        tenants: list[str],
        start: datetime,
        end: datetime,
        metrics: list[str] | None = None,
    ) -> dict[str, Any]:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=0.5, max=5),
            retry=tenacity.retry_if_exception(is_retryable),
            reraise=True,
        )
        found = [
            (name, retrying(self._one, name, form))
            for name, form in self.requests_for(plugin, tenants, start, end)
        ]
        return fold(merge_pages(found), self.pools)

    def _one(self, name: str, form: dict[str, str]) -> Series:
        try:
            response = self.run(
                QUERY_RANGE,
                data=form,
                extra_options={"check_response": False, "timeout": self.timeout},
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise PowerXUnavailable(
                f"no answer: {type(exc).__name__}", method="POST", endpoint=QUERY_RANGE
            ) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = {"message": response.text[:500]}
        if response.status_code >= 300:
            raise answer_error(response.status_code, payload)
        return matrix_series(name, payload)
