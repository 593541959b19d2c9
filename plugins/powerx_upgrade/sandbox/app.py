"""The sandbox's FastAPI app: the platform contract over HTTP, plus `/sandbox/*` inspection."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powerx_upgrade import __version__
from powerx_upgrade.sandbox.contract import (
    AuditRecord,
    AuditRequest,
    ErrorBody,
    EventList,
    FaultList,
    Health,
    InjectFaults,
    MonitoringQuery,
    MonitoringResult,
    NotificationRecord,
    NotifyRequest,
    OperationResult,
    Recorded,
    RollbackRequest,
    SandboxInfo,
    SandboxTenantList,
    SubscribeRequest,
    Subscription,
    Tenant,
    TenantList,
    UpgradeRequest,
)
from powerx_upgrade.sandbox.exposition import CONTENT_TYPE as EXPOSITION_CONTENT_TYPE
from powerx_upgrade.sandbox.faults import TimeoutFault
from powerx_upgrade.sandbox.scenario import Scenario
from powerx_upgrade.sandbox.state import (
    InjectedHttpError,
    InvalidQuery,
    RequestFaults,
    SandboxError,
    SandboxState,
    fingerprint,
    iso,
    to_ms,
)

log = logging.getLogger("powerx_upgrade.sandbox")

PLATFORM = "platform"
MONITORING = "monitoring"
RECORDS = "notify and audit"
SANDBOX = "sandbox inspection"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


@dataclass
class _Holder:
    """The current fleet; `POST /sandbox/reset` swaps in a fresh one."""

    scenario: Scenario
    make: Callable[[], SandboxState]
    state: SandboxState


def _state(request: Request) -> SandboxState:
    return request.app.state.sandbox.state


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


class _EventRecorder:
    """ASGI middleware: appends every answered call to the sandbox's event log."""

    def __init__(self, app: ASGIApp, holder: _Holder):
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        at = self.holder.state.now_ms()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            params = scope.get("path_params") or {}
            notes = scope.get("state") or {}
            self.holder.state.record_event(
                {
                    "at": iso(at),
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "plugin": params.get("plugin") or notes.get("plugin"),
                    "tenant": params.get("tenant"),
                    "idempotency_key": notes.get("idempotency_key"),
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                }
            )


async def _hold_then_timeout(state: SandboxState, fault: TimeoutFault, endpoint: str) -> None:
    seconds = fault.hold.total_seconds()
    await state.sleep(seconds)
    raise InjectedHttpError(
        504, f"injected timeout fault on {endpoint}: the answer was held for {seconds:g}s"
    )


async def _guarded(
    state: SandboxState,
    decision: RequestFaults,
    endpoint: str,
    work: Callable[[], Awaitable[Any]],
) -> Any:
    """Run the work under a timeout fault decision (applied or dropped) if one fired."""
    fault = decision.timeout
    if fault is not None and not fault.applied:
        await _hold_then_timeout(state, fault, endpoint)
    result = await work()
    if fault is not None:
        await _hold_then_timeout(state, fault, endpoint)
    return result


def _parse_labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or not key:
            raise InvalidQuery(f"label filter {value!r} must look like key=value")
        labels[key] = wanted
    return labels


def create_app(
    scenario: Scenario,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> FastAPI:
    """An app serving one scenario; `clock` and `sleep` are injectable for tests."""

    def make() -> SandboxState:
        kwargs: dict[str, Any] = {}
        if clock is not None:
            kwargs["clock"] = clock
        if sleep is not None:
            kwargs["sleep"] = sleep
        return SandboxState(scenario, **kwargs)

    holder = _Holder(scenario, make, make())
    app = FastAPI(
        title="PowerX platform contract (sandbox)",
        version=__version__,
        description=(
            "The HTTP contract the grey-upgrade orchestrator uses against a PowerX platform: "
            "tenants, per-tenant upgrade and rollback, monitoring, notifications and audit. "
            "`/sandbox/*` endpoints exist only in the simulator. See docs/platform-contract.md."
        ),
    )
    app.state.sandbox = holder
    app.add_middleware(_EventRecorder, holder=holder)
    _install_error_handlers(app)
    _platform_routes(app)
    _monitoring_routes(app)
    _record_routes(app)
    _sandbox_routes(app)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SandboxError)
    async def sandbox_error(request: Request, exc: SandboxError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.code, "message": exc.message}
        details = getattr(exc, "details", None)
        if details:
            body["details"] = details
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "loc": list(error.get("loc", ())),
                "msg": str(error.get("msg")),
                "type": error.get("type"),
            }
            for error in exc.errors()
        ]
        summary = "; ".join(
            f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5]
        )
        return JSONResponse(
            {
                "error": "invalid_request",
                "message": summary or "invalid request",
                "details": details,
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return JSONResponse(
            {"error": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"},
            status_code=500,
        )


def _platform_routes(app: FastAPI) -> None:
    tenant_path = "/internal/plugins/{plugin}/tenants/{tenant}"

    @app.get("/health", response_model=Health, tags=[PLATFORM])
    async def health(request: Request) -> dict[str, Any]:
        state = _state(request)
        return {"status": "ok", "plugin": state.plugin, "tenants": len(state.tenants)}

    @app.get(
        "/internal/plugins/{plugin}/tenants",
        response_model=TenantList,
        responses=_errors(404, 422),
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
        state = _state(request)
        labels = _parse_labels(label or [])
        state.check_plugin(plugin)
        decision = state.request_faults("tenants", plugin)
        tenants = await _guarded(
            state,
            decision,
            "tenants",
            _async_value(lambda: state.list_tenants(plugin, labels, version)),
        )
        return JSONResponse({"plugin": plugin, "tenants": tenants})

    @app.get(
        tenant_path,
        response_model=Tenant,
        responses=_errors(404),
        tags=[PLATFORM],
        summary="One tenant's installation",
    )
    async def get_tenant(plugin: str, tenant: str, request: Request) -> JSONResponse:
        state = _state(request)
        record = state.tenant(plugin, tenant)
        decision = state.request_faults("tenant", plugin, tenant)
        view = await _guarded(state, decision, "tenant", _async_value(record.view))
        return JSONResponse(view)

    @app.post(
        f"{tenant_path}/upgrade",
        response_model=OperationResult,
        responses=_errors(404, 409, 422, 503, 504),
        tags=[PLATFORM],
        summary="Install a version on one tenant (idempotent by key)",
    )
    async def upgrade(
        plugin: str, tenant: str, body: UpgradeRequest, request: Request
    ) -> JSONResponse:
        state = _state(request)
        request.state.idempotency_key = body.idempotency_key
        state.note_upgrade_request()
        record = state.tenant(plugin, tenant)
        decision = state.request_faults("upgrade", tenant, body.idempotency_key)
        result, replayed = await _guarded(
            state, decision, "upgrade", lambda: state.upgrade(record, body)
        )
        return _operation_response(result, replayed)

    @app.post(
        f"{tenant_path}/rollback",
        response_model=OperationResult,
        responses=_errors(404, 409, 422, 503, 504),
        tags=[PLATFORM],
        summary="Restore a tenant's previous version and config; free the new version's resources",
    )
    async def rollback(
        plugin: str, tenant: str, body: RollbackRequest, request: Request
    ) -> JSONResponse:
        state = _state(request)
        request.state.idempotency_key = body.idempotency_key
        record = state.tenant(plugin, tenant)
        decision = state.request_faults("rollback", tenant, body.idempotency_key)
        result, replayed = await _guarded(
            state, decision, "rollback", lambda: state.rollback(record, body)
        )
        return _operation_response(result, replayed)


def _operation_response(result: dict[str, Any], replayed: bool) -> JSONResponse:
    headers = {"Idempotent-Replayed": "true" if replayed else "false"}
    return JSONResponse(result, headers=headers)


def _async_value(compute: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        return compute()

    return run


def _monitoring_routes(app: FastAPI) -> None:
    @app.post(
        "/internal/monitoring/query",
        response_model=MonitoringResult,
        response_model_exclude_none=True,
        responses=_errors(404, 422, 503, 504),
        tags=[MONITORING],
        summary="Per-tenant requests, errors, p95 latency and sample count for an interval",
    )
    async def query(body: MonitoringQuery, request: Request) -> JSONResponse:
        state = _state(request)
        request.state.plugin = body.plugin
        decision = state.request_faults("monitoring_query", fingerprint(body))
        series, start, end, now, faults, metrics = state.prepare_query(body)

        async def compute() -> dict[str, Any]:
            return await asyncio.to_thread(
                state.engine.query, series, start, end, now, faults, metrics
            )

        found = await _guarded(state, decision, "monitoring_query", compute)
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

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=[MONITORING],
        summary="Prometheus text exposition: request and error counters and a latency histogram "
        "per tenant, plugin and version, cumulative since the sandbox started",
    )
    async def metrics(request: Request) -> PlainTextResponse:
        state = _state(request)
        series, now, faults = state.prepare_scrape()
        text = await asyncio.to_thread(state.exposition.render, series, now, faults)
        return PlainTextResponse(text, media_type=EXPOSITION_CONTENT_TYPE)

    @app.post(
        "/internal/monitoring/subscribe",
        response_model=Subscription,
        status_code=201,
        responses={200: {"model": Subscription}, **_errors(404, 422, 503, 504)},
        tags=[MONITORING],
        summary="Ask monitoring to watch a rollout (recorded; idempotent by id)",
    )
    async def subscribe(body: SubscribeRequest, request: Request) -> JSONResponse:
        state = _state(request)
        request.state.plugin = body.plugin
        decision = state.request_faults("monitoring_subscribe", body.id or fingerprint(body))
        record, duplicate = await _guarded(
            state, decision, "monitoring_subscribe", _async_value(lambda: state.subscribe(body))
        )
        return JSONResponse(record, status_code=200 if duplicate else 201)


def _record_routes(app: FastAPI) -> None:
    @app.post(
        "/internal/notify/version",
        response_model=Recorded,
        status_code=201,
        responses={200: {"model": Recorded}, **_errors(422, 503, 504)},
        tags=[RECORDS],
        summary="Send a version notification (recorded; idempotent by id)",
    )
    async def notify(body: NotifyRequest, request: Request) -> JSONResponse:
        state = _state(request)
        request.state.plugin = body.plugin
        decision = state.request_faults("notify", body.id)
        record, duplicate = await _guarded(
            state, decision, "notify", _async_value(lambda: state.record_notification(body))
        )
        return _recorded(record, duplicate)

    @app.post(
        "/internal/audit/version",
        response_model=Recorded,
        status_code=201,
        responses={200: {"model": Recorded}, **_errors(422, 503, 504)},
        tags=[RECORDS],
        summary="Append an audit record (idempotent by id)",
    )
    async def audit(body: AuditRequest, request: Request) -> JSONResponse:
        state = _state(request)
        request.state.plugin = body.plugin
        decision = state.request_faults("audit", body.id)
        state.check_audit_outage()
        record, duplicate = await _guarded(
            state, decision, "audit", _async_value(lambda: state.record_audit(body))
        )
        return _recorded(record, duplicate)


def _recorded(record: dict[str, Any], duplicate: bool) -> JSONResponse:
    body = {"id": record["id"], "received_at": record["received_at"], "duplicate": duplicate}
    return JSONResponse(body, status_code=200 if duplicate else 201)


def _sandbox_routes(app: FastAPI) -> None:
    @app.get("/sandbox/info", response_model=SandboxInfo, tags=[SANDBOX])
    async def info(request: Request) -> dict[str, Any]:
        state = _state(request)
        return {
            "name": state.scenario.name,
            "seed": state.seed,
            "plugin": state.plugin,
            "tenants": len(state.tenants),
            "now": iso(state.now_ms()),
            "first_upgrade_at": iso(state.first_upgrade_at),
        }

    @app.get(
        "/sandbox/tenants",
        response_model=SandboxTenantList,
        responses=_errors(404),
        tags=[SANDBOX],
        summary="Every tenant with version history, operations and resources held",
    )
    async def sandbox_tenants(request: Request, plugin: str | None = None) -> JSONResponse:
        state = _state(request)
        state.check_plugin(plugin or state.plugin)
        return JSONResponse(
            {
                "plugin": state.plugin,
                "tenants": [record.sandbox_view() for record in state.tenants.values()],
                "resources": state.resource_totals(),
            }
        )

    @app.get("/sandbox/audit", response_model=dict[str, list[AuditRecord]], tags=[SANDBOX])
    async def sandbox_audit(request: Request) -> JSONResponse:
        records = [record for _, record in _state(request).audit.values()]
        return JSONResponse({"records": records})

    @app.get(
        "/sandbox/notifications",
        response_model=dict[str, list[NotificationRecord]],
        tags=[SANDBOX],
    )
    async def sandbox_notifications(request: Request) -> JSONResponse:
        records = [record for _, record in _state(request).notifications.values()]
        return JSONResponse({"notifications": records})

    @app.get("/sandbox/subscriptions", response_model=dict[str, list[Subscription]], tags=[SANDBOX])
    async def sandbox_subscriptions(request: Request) -> JSONResponse:
        records = [record for _, record in _state(request).subscriptions.values()]
        return JSONResponse({"subscriptions": records})

    @app.get("/sandbox/events", response_model=EventList, tags=[SANDBOX])
    async def sandbox_events(
        request: Request,
        since: int = Query(default=0, ge=0, description="only events with seq > since"),
        prefix: str | None = Query(default=None, description="only paths starting with this"),
        tenant: str | None = None,
    ) -> JSONResponse:
        state = _state(request)
        events = [
            event
            for event in state.events
            if event["seq"] > since
            and (prefix is None or event["path"].startswith(prefix))
            and (tenant is None or event["tenant"] == tenant)
        ]
        return JSONResponse({"events": events, "dropped": state.events_dropped})

    @app.get("/sandbox/faults", response_model=FaultList, tags=[SANDBOX])
    async def list_faults(request: Request) -> JSONResponse:
        return JSONResponse({"faults": _state(request).fault_views()})

    @app.post(
        "/sandbox/faults",
        response_model=FaultList,
        status_code=201,
        responses=_errors(422),
        tags=[SANDBOX],
        summary="Inject faults now; their after/duration count from this moment",
    )
    async def inject_faults(body: InjectFaults, request: Request) -> JSONResponse:
        state = _state(request)
        added = {fault.id for fault in state.inject(body.faults)}
        views = [view for view in state.fault_views() if view["id"] in added]
        return JSONResponse({"faults": views}, status_code=201)

    @app.delete(
        "/sandbox/faults/{fault_id}",
        status_code=204,
        response_class=Response,
        responses=_errors(404),
        tags=[SANDBOX],
    )
    async def remove_fault(fault_id: str, request: Request) -> Response:
        if not _state(request).remove_fault(fault_id):
            return _error(404, "unknown_fault", f"no fault {fault_id!r}")
        return Response(status_code=204)

    @app.post(
        "/sandbox/reset",
        response_model=SandboxInfo,
        tags=[SANDBOX],
        summary="Back to the scenario's initial fleet; records, events and injected faults cleared",
    )
    async def reset(request: Request) -> dict[str, Any]:
        holder: _Holder = request.app.state.sandbox
        holder.state = holder.make()
        return await info(request)
