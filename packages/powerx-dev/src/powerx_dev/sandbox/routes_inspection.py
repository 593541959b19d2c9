"""`/sandbox/*`: what only the simulator has: history, records, events, faults, reset."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from powerx_dev.sandbox.clock import parse_offset
from powerx_dev.sandbox.contract import (
    AuditRecord,
    EventList,
    FaultList,
    InjectFaults,
    NotificationRecord,
    SandboxInfo,
    SandboxTenantList,
    Subscription,
)
from powerx_dev.sandbox.encoding import iso
from powerx_dev.sandbox.http import (
    SANDBOX,
    Holder,
    error_docs,
    error_response,
    state_of,
)

router = APIRouter()


@router.get("/sandbox/info", response_model=SandboxInfo, tags=[SANDBOX])
async def info(request: Request) -> dict[str, Any]:
    state = state_of(request)
    return {
        "name": state.scenario.name,
        "seed": state.seed,
        "plugin": state.plugin,
        "tenants": len(state.tenants),
        "now": iso(state.now_ms()),
        "first_upgrade_at": iso(state.first_upgrade_at),
    }


@router.get(
    "/sandbox/tenants",
    response_model=SandboxTenantList,
    responses=error_docs(404),
    tags=[SANDBOX],
    summary="Every tenant with version history, operations and resources held",
)
async def sandbox_tenants(request: Request, plugin: str | None = None) -> JSONResponse:
    state = state_of(request)
    state.check_plugin(plugin or state.plugin)
    return JSONResponse(
        {
            "plugin": state.plugin,
            "tenants": [record.sandbox_view() for record in state.tenants.values()],
            "resources": state.resource_totals(),
        }
    )


@router.get("/sandbox/audit", response_model=dict[str, list[AuditRecord]], tags=[SANDBOX])
async def sandbox_audit(request: Request) -> JSONResponse:
    records = [record for _, record in state_of(request).audit.values()]
    return JSONResponse({"records": records})


@router.get(
    "/sandbox/notifications",
    response_model=dict[str, list[NotificationRecord]],
    tags=[SANDBOX],
)
async def sandbox_notifications(request: Request) -> JSONResponse:
    records = [record for _, record in state_of(request).notifications.values()]
    return JSONResponse({"notifications": records})


@router.get("/sandbox/subscriptions", response_model=dict[str, list[Subscription]], tags=[SANDBOX])
async def sandbox_subscriptions(request: Request) -> JSONResponse:
    records = [record for _, record in state_of(request).subscriptions.values()]
    return JSONResponse({"subscriptions": records})


@router.get("/sandbox/events", response_model=EventList, tags=[SANDBOX])
async def sandbox_events(
    request: Request,
    since: int = Query(default=0, ge=0, description="only events with seq > since"),
    prefix: str | None = Query(default=None, description="only paths starting with this"),
    tenant: str | None = None,
) -> JSONResponse:
    state = state_of(request)
    events = [
        event
        for event in state.events
        if event["seq"] > since
        and (prefix is None or event["path"].startswith(prefix))
        and (tenant is None or event["tenant"] == tenant)
    ]
    return JSONResponse({"events": events, "dropped": state.events_dropped})


@router.get("/sandbox/faults", response_model=FaultList, tags=[SANDBOX])
async def list_faults(request: Request) -> JSONResponse:
    return JSONResponse({"faults": state_of(request).fault_views()})


@router.post(
    "/sandbox/faults",
    response_model=FaultList,
    status_code=201,
    responses=error_docs(422),
    tags=[SANDBOX],
    summary="Inject faults now; their after/duration count from this moment",
)
async def inject_faults(body: InjectFaults, request: Request) -> JSONResponse:
    state = state_of(request)
    added = {fault.id for fault in state.inject(body.faults)}
    views = [view for view in state.fault_views() if view["id"] in added]
    return JSONResponse({"faults": views}, status_code=201)


@router.delete(
    "/sandbox/faults/{fault_id}",
    status_code=204,
    response_class=Response,
    responses=error_docs(404),
    tags=[SANDBOX],
)
async def remove_fault(fault_id: str, request: Request) -> Response:
    if not state_of(request).remove_fault(fault_id):
        return error_response(404, "unknown_fault", f"no fault {fault_id!r}")
    return Response(status_code=204)


@router.post(
    "/sandbox/reset",
    response_model=SandboxInfo,
    tags=[SANDBOX],
    summary="Back to the scenario's initial fleet; records, events and injected faults cleared",
)
async def reset(request: Request) -> dict[str, Any]:
    holder: Holder = request.app.state.sandbox
    holder.state = holder.make()
    return await info(request)


class ClockOffset(BaseModel):
    """`{"offset": "2m"}`: the platform's clock ahead of the real one (`-30s`: behind)."""

    model_config = ConfigDict(extra="forbid")
    offset: str = Field(max_length=32, examples=["2m", "-30s", "0s"])


def _clock_view(request: Request) -> dict[str, Any]:
    state = state_of(request)
    return {"offset_ms": state.clock_offset_ms, "now": iso(state.now_ms())}


@router.get("/sandbox/clock", tags=[SANDBOX], summary="The platform's clock and its offset")
async def get_clock(request: Request) -> dict[str, Any]:
    return _clock_view(request)


@router.post(
    "/sandbox/clock",
    responses=error_docs(422),
    tags=[SANDBOX],
    summary="Skew the platform's clock from now on (POST /sandbox/reset sets it back)",
)
async def set_clock(body: ClockOffset, request: Request) -> Any:
    try:
        offset_ms = parse_offset(body.offset)
    except ValueError as exc:
        return error_response(422, "invalid_offset", str(exc))
    state_of(request).clock_offset_ms = offset_ms
    return _clock_view(request)
