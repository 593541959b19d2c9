"""The platform contract's tenant endpoints: list, read, upgrade and roll back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from powerx_dev.sandbox.contract import (
    Health,
    OperationResult,
    RollbackRequest,
    Tenant,
    TenantList,
    UpgradeRequest,
)
from powerx_dev.sandbox.errors import InvalidQuery
from powerx_dev.sandbox.http import (
    PLATFORM,
    async_value,
    error_docs,
    guarded,
    state_of,
)

router = APIRouter()

TENANT_PATH = "/internal/plugins/{plugin}/tenants/{tenant}"


@router.get("/health", response_model=Health, tags=[PLATFORM])
async def health(request: Request) -> dict[str, Any]:
    state = state_of(request)
    return {"status": "ok", "plugin": state.plugin, "tenants": len(state.tenants)}


@router.get(
    "/internal/plugins/{plugin}/tenants",
    response_model=TenantList,
    responses=error_docs(404, 422),
    tags=[PLATFORM],
    summary="List the plugin's tenants with labels, installed version and config",
)
async def list_tenants(
    plugin: str,
    request: Request,
    version: Annotated[str | None, Query(description="only tenants on this version")] = None,
    label: Annotated[
        list[str] | None,
        Query(description="`key=value` label filter; repeat to AND several"),
    ] = None,
) -> JSONResponse:
    state = state_of(request)
    labels = _parse_labels(label or [])
    state.check_plugin(plugin)
    decision = state.request_faults("tenants", plugin)
    tenants = await guarded(
        state,
        decision,
        "tenants",
        async_value(lambda: state.list_tenants(plugin, labels, version)),
    )
    return JSONResponse({"plugin": plugin, "tenants": tenants})


@router.get(
    TENANT_PATH,
    response_model=Tenant,
    responses=error_docs(404),
    tags=[PLATFORM],
    summary="One tenant's installation",
)
async def get_tenant(plugin: str, tenant: str, request: Request) -> JSONResponse:
    state = state_of(request)
    record = state.tenant(plugin, tenant)
    decision = state.request_faults("tenant", plugin, tenant)
    view = await guarded(state, decision, "tenant", async_value(record.view))
    return JSONResponse(view)


@router.post(
    f"{TENANT_PATH}/upgrade",
    response_model=OperationResult,
    responses=error_docs(404, 409, 422, 503, 504),
    tags=[PLATFORM],
    summary="Install a version on one tenant (idempotent by key)",
)
async def upgrade(plugin: str, tenant: str, body: UpgradeRequest, request: Request) -> JSONResponse:
    state = state_of(request)
    request.state.idempotency_key = body.idempotency_key
    state.note_upgrade_request()
    record = state.tenant(plugin, tenant)
    decision = state.request_faults("upgrade", tenant, body.idempotency_key)
    result, replayed = await guarded(
        state, decision, "upgrade", lambda: state.upgrade(record, body)
    )
    return _operation_response(result, replayed)


@router.post(
    f"{TENANT_PATH}/rollback",
    response_model=OperationResult,
    responses=error_docs(404, 409, 422, 503, 504),
    tags=[PLATFORM],
    summary="Restore a tenant's previous version and config; free the new version's resources",
)
async def rollback(
    plugin: str, tenant: str, body: RollbackRequest, request: Request
) -> JSONResponse:
    state = state_of(request)
    request.state.idempotency_key = body.idempotency_key
    record = state.tenant(plugin, tenant)
    decision = state.request_faults("rollback", tenant, body.idempotency_key)
    result, replayed = await guarded(
        state, decision, "rollback", lambda: state.rollback(record, body)
    )
    return _operation_response(result, replayed)


def _parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or not key:
            raise InvalidQuery(f"label filter {value!r} must look like key=value")
        labels[key] = wanted
    return labels


def _operation_response(result: dict[str, Any], replayed: bool) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true" if replayed else "false"}
    return JSONResponse(result, headers=headers)
