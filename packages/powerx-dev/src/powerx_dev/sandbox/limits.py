"""What one request may cost the sandbox: a body of at most `BODY_LIMIT` bytes (413 before the
app parses it, judged by `Content-Length` and by what streams in), and a 422 that lists at most
`MAX_DETAILS` problems and counts the rest. A 7 MB body of 600,000 unknown keys is refused
before any parsing, so `/health` stays responsive."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_LIMIT = 2 * 1024 * 1024
"""Bytes in one request body: the largest real body, a monitoring query for its maximum of
100,000 tenant ids, is about 1.2 MB."""
MAX_KEYS = 1000
"""Members of one JSON object in a body (the widest real object has a dozen): a wider one is
refused before validation, which would otherwise list every unknown key."""
MAX_DETAILS = 20
"""Problems a 422 lists; `details_total` says how many there were."""


class SafeJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: an answer quoting what a client sent (a key with a lone
    surrogate) can always be encoded."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode("ascii")


class BodyLimit:
    """ASGI middleware: 413 `body_too_large` for a body over `limit` bytes; the body (at most
    the limit) is read here and replayed to the app."""

    def __init__(self, app: ASGIApp, limit: int = BODY_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send, int(declared))
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send, size)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        wide = widest_object(body)
        if wide > MAX_KEYS:
            await _answer(
                scope,
                receive,
                send,
                422,
                "invalid_request",
                f"a JSON object of the body has {wide} members; at most {MAX_KEYS} are read",
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        message = (
            f"the request body is over {self.limit} bytes ({size} read or declared); "
            "nothing was parsed or changed"
        )
        await _answer(scope, receive, send, 413, "body_too_large", message, close=True)


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    close: bool = False,
) -> None:
    response = SafeJSONResponse(
        {"error": code, "message": message},
        status_code=status,
        headers={"Connection": "close"} if close else None,
    )
    await response(scope, receive, send)


def widest_object(body: bytes) -> int:
    """The most members of one object in a JSON body; 0 when it is not JSON (the app's parser
    then answers as usual)."""
    widest = 0

    def count(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal widest
        widest = max(widest, len(pairs))
        return {}

    if not body or body.lstrip()[:1] not in (b"{", b"["):
        return 0
    try:
        json.loads(body, object_pairs_hook=count)
    except (ValueError, RecursionError):
        return 0
    return widest


def bounded_details(errors: list[Any]) -> tuple[list[dict[str, Any]], int]:
    """The first `MAX_DETAILS` validation errors as `{loc, msg, type}`, and the total count."""
    details = [
        {
            "loc": [str(p) if not isinstance(p, int) else p for p in error.get("loc", ())],
            "msg": str(error.get("msg")),
            "type": error.get("type"),
        }
        for error in errors[:MAX_DETAILS]
    ]
    return details, len(errors)
