"""Notify and audit: records kept once per id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from powerx_dev.sandbox.contract import AuditRequest, NotifyRequest, Recorded
from powerx_dev.sandbox.http import (
    RECORDS,
    async_value,
    error_docs,
    guarded,
    state_of,
)

router = APIRouter()


@router.post(
    "/internal/notify/version",
    response_model=Recorded,
    status_code=201,
    responses={200: {"model": Recorded}, **error_docs(422, 503, 504)},
    tags=[RECORDS],
    summary="Send a version notification (recorded; idempotent by id)",
)
async def notify(body: NotifyRequest, request: Request) -> JSONResponse:
    state = state_of(request)
    request.state.plugin = body.plugin
    decision = state.request_faults("notify", body.id)
    record, duplicate = await guarded(
        state, decision, "notify", async_value(lambda: state.record_notification(body))
    )
    return _recorded(record, duplicate)


@router.post(
    "/internal/audit/version",
    response_model=Recorded,
    status_code=201,
    responses={200: {"model": Recorded}, **error_docs(422, 503, 504)},
    tags=[RECORDS],
    summary="Append an audit record (idempotent by id)",
)
async def audit(body: AuditRequest, request: Request) -> JSONResponse:
    state = state_of(request)
    request.state.plugin = body.plugin
    decision = state.request_faults("audit", body.id)
    state.check_audit_outage()
    record, duplicate = await guarded(
        state, decision, "audit", async_value(lambda: state.record_audit(body))
    )
    return _recorded(record, duplicate)


def _recorded(record: dict[str, Any], duplicate: bool) -> JSONResponse:
    body = {"id": record["id"], "received_at": record["received_at"], "duplicate": duplicate}
    return JSONResponse(body, status_code=200 if duplicate else 201)
