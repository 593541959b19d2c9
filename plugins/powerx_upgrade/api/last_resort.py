"""The last resort: an exception no handler took answers 500 with the documented error body
(`internal_error` and an id to find the traceback in the api-server's log) and is audited.
Input never reaches it (the body checks, the parser's and router's refusals, the routes'
`Refused` answer first); it exists so that a fault still answers JSON and leaves a record."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from powerx_upgrade.api.audit import audit_refusal
from powerx_upgrade.api.deps import settings_or_none
from powerx_upgrade.api.errors import Refused, SafeJSONResponse

log = logging.getLogger(__name__)


class LastResort:
    """ASGI middleware around the app's routes and handlers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:  # part of an answer is out: nothing better than closing it
                raise
            await self._answer(scope, receive, send, exc)

    async def _answer(self, scope: dict[str, Any], receive: Any, send: Any, exc: Exception) -> None:
        error_id = uuid.uuid4().hex[:12]
        request = Request(scope)
        log.error(
            "internal error %s answering %s %s",
            error_id,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        refused = Refused(
            500,
            "internal_error",
            f"the control plane failed ({type(exc).__name__}); nothing was changed by this "
            f"answer; the api-server's log has the traceback under error id {error_id}",
        )
        caller = getattr(request.state, "powerx_caller", None)
        settings = settings_or_none(request)
        await run_in_threadpool(
            audit_refusal, settings, request, refused, caller.name if caller else None
        )
        response = SafeJSONResponse(refused.body(), status_code=500)
        await response(scope, receive, send)
