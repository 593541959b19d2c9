"""Monitoring: the per-tenant query, the Prometheus exposition and subscriptions."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from powerx_dev.sandbox.contract import (
    MonitoringQuery,
    MonitoringResult,
    SubscribeRequest,
    Subscription,
)
from powerx_dev.sandbox.encoding import fingerprint, iso, to_ms
from powerx_dev.sandbox.exposition import CONTENT_TYPE as EXPOSITION_CONTENT_TYPE
from powerx_dev.sandbox.http import (
    MONITORING,
    async_value,
    error_docs,
    guarded,
    state_of,
)

router = APIRouter()


@router.post(
    "/internal/monitoring/query",
    response_model=MonitoringResult,
    response_model_exclude_none=True,
    responses=error_docs(404, 422, 503, 504),
    tags=[MONITORING],
    summary="Per-tenant requests, errors, p95 latency and sample count for an interval",
)
async def query(body: MonitoringQuery, request: Request) -> JSONResponse:
    state = state_of(request)
    request.state.plugin = body.plugin
    decision = state.request_faults("monitoring_query", fingerprint(body))
    series, start, end, now, faults, metrics = state.prepare_query(body)

    async def compute() -> dict[str, Any]:
        return await asyncio.to_thread(state.engine.query, series, start, end, now, faults, metrics)

    found = await guarded(state, decision, "monitoring_query", compute)
    return JSONResponse(
        {
            "plugin": body.plugin,
            "start": iso(to_ms(body.start)),
            "end": iso(to_ms(body.end)),
            "bucket_seconds": state.engine.bucket,
            "metrics": metrics,
            "tenants": found,
            "no_data": [s.id for s in series if s.id not in found],
        }
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    tags=[MONITORING],
    summary="Prometheus text exposition: request and error counters and a latency histogram "
    "per tenant, plugin and version, cumulative since the sandbox started",
)
async def metrics(request: Request) -> PlainTextResponse:
    state = state_of(request)
    series, now, faults = state.prepare_scrape()
    text = await asyncio.to_thread(state.exposition.render, series, now, faults)
    return PlainTextResponse(text, media_type=EXPOSITION_CONTENT_TYPE)


@router.post(
    "/internal/monitoring/subscribe",
    response_model=Subscription,
    status_code=201,
    responses={200: {"model": Subscription}, **error_docs(404, 422, 503, 504)},
    tags=[MONITORING],
    summary="Ask monitoring to watch a rollout (recorded; idempotent by id)",
)
async def subscribe(body: SubscribeRequest, request: Request) -> JSONResponse:
    state = state_of(request)
    request.state.plugin = body.plugin
    decision = state.request_faults("monitoring_subscribe", body.id or fingerprint(body))
    record, duplicate = await guarded(
        state, decision, "monitoring_subscribe", async_value(lambda: state.subscribe(body))
    )
    return JSONResponse(record, status_code=200 if duplicate else 201)
