"""The sandbox's FastAPI app: the platform contract over HTTP, plus `/sandbox/*` inspection."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powerx_dev.sandbox.encoding import iso
from powerx_dev.sandbox.errors import SandboxError
from powerx_dev.sandbox.http import Holder
from powerx_dev.sandbox.limits import BodyLimit, SafeJSONResponse, bounded_details
from powerx_dev.sandbox.routes_inspection import router as inspection
from powerx_dev.sandbox.routes_monitoring import router as monitoring
from powerx_dev.sandbox.routes_platform import router as platform
from powerx_dev.sandbox.routes_records import router as records
from powerx_dev.sandbox.scenario import Scenario
from powerx_dev.sandbox.state import SandboxState
from powerx_upgrade import __version__

log = logging.getLogger("powerx_dev.sandbox")


class _EventRecorder:
    """ASGI middleware: appends every answered call to the sandbox's event log."""

    def __init__(self, app: ASGIApp, holder: Holder):
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


def create_app(
    scenario: Scenario,
    *,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
    clock_offset_ms: int = 0,
) -> FastAPI:
    """An app serving one scenario; `clock` and `sleep` are injectable for tests.
    `clock_offset_ms`: the platform's clock ahead of the host's (kept across resets)."""

    def make() -> SandboxState:
        kwargs: dict[str, Any] = {"clock_offset_ms": clock_offset_ms}
        if clock is not None:
            kwargs["clock"] = clock
        if sleep is not None:
            kwargs["sleep"] = sleep
        return SandboxState(scenario, **kwargs)

    holder = Holder(scenario, make, make())
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
    app.add_middleware(BodyLimit)
    app.add_middleware(_EventRecorder, holder=holder)
    _install_error_handlers(app)
    for router in (platform, monitoring, records, inspection):
        app.include_router(router)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SandboxError)
    async def sandbox_error(request: Request, exc: SandboxError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.code, "message": exc.message}
        details = getattr(exc, "details", None)
        if details:
            body["details"] = details
        return SafeJSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        details, total = bounded_details(list(exc.errors()))
        summary = "; ".join(
            f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5]
        )
        if total > len(details):
            summary += f" (and {total - len(details)} more; {len(details)} listed)"
        return SafeJSONResponse(
            {
                "error": "invalid_request",
                "message": summary or "invalid request",
                "details": details,
                "details_total": total,
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return SafeJSONResponse(
            {"error": codes.get(exc.status_code, "http_error"), "message": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return SafeJSONResponse(
            {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"},
            status_code=500,
        )
