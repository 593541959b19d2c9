"""The request body limit: 413, audited, before the app reads a byte too many."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from powerx_upgrade.api.audit import audit_refusal, user_for_audit
from powerx_upgrade.api.deps import settings_or_none
from powerx_upgrade.api.errors import Refused, SafeJSONResponse
from powerx_upgrade.api.settings import ApiSettings

log = logging.getLogger(__name__)


class BodyLimit:
    """413 for a body over the limit, by its Content-Length or by what actually streams in
    (chunked bodies have no length); the app never sees such a request.

    The body (at most the limit) is read here and replayed to the app."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        settings = settings_or_none(request)
        limit = settings.body_limit if settings else 64 * 1024
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, settings, limit, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, settings, limit, size)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        settings: ApiSettings | None,
        limit: int,
        size: int,
    ) -> None:
        request = Request(scope)
        refused = Refused(
            413,
            "body_too_large",
            f"the request body is over {limit} bytes ({size}{'+' if size > limit else ''} "
            f"read or declared); nothing was read further or changed",
        )
        user = await user_for_audit(request, settings)
        await run_in_threadpool(audit_refusal, settings, request, refused, user)
        headers = {"Connection": "close"}
        response = SafeJSONResponse(refused.body(), status_code=413, headers=headers)
        await response(scope, receive, send)
