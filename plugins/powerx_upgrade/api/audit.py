"""Every answer of the API in the ledger's audit outbox: `api.accepted` for what it did,
`api.refused` for what it refused (never a token); the refusal and validation handlers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from powerx_upgrade.api.auth import Caller, presented_token
from powerx_upgrade.api.deps import settings_or_none
from powerx_upgrade.api.errors import Refused, SafeJSONResponse
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.rollout.record import audit_payload

log = logging.getLogger(__name__)
_AUTH_CODES = ("not_authenticated", "token_expired", "invalid_token")
MAX_PROBLEMS = 20
"""A 422 lists the first 20 problems of a body and counts the rest."""


def accepted(
    settings: ApiSettings,
    request: Request,
    caller: Caller,
    operation: str,
    run_id: str | None,
    detail: dict[str, Any],
) -> None:
    settings.ledger().enqueue_audit(
        run_id=run_id,
        event="api.accepted",
        payload=audit_payload(
            "api.accepted",
            actor=caller.name,
            run_id=run_id,
            details={
                "operation": operation,
                "method": request.method,
                "path": request.url.path,
                "user": caller.name,
                "auth": caller.source,
                **{k: v for k, v in detail.items() if k != "operation"},
            },
        ),
    )


def audit_refusal(
    settings: ApiSettings | None, request: Request, refused: Refused, user: str | None
) -> None:
    """`api.refused` in the outbox: reason, status, path, user; never a token. A ledger that
    cannot be written is logged and does not change the answer."""
    if settings is None:
        return
    payload = audit_payload(
        "api.refused",
        actor=user or "anonymous",
        run_id=refused.run_id,
        reason=refused.code,
        details={
            "reason": refused.code,
            "status": refused.status,
            "method": request.method,
            "path": request.url.path,
            "user": user,
            "message": refused.message,
        },
    )
    try:
        settings.ledger().enqueue_audit(run_id=refused.run_id, event="api.refused", payload=payload)
    except Exception:  # the refusal still answers; the log keeps the reason
        log.exception("could not audit a refused API request: %s", payload)


async def user_for_audit(request: Request, settings: ApiSettings | None) -> str | None:
    """Who sent a request refused before authentication, when their token says (best effort)."""
    token, _ = presented_token(request)
    if settings is None or token is None:
        return None
    try:
        return (await settings.auth.authenticate(request)).name
    except Exception as exc:  # the refusal is audited all the same, without a user
        log.warning("a refused request's user could not be read from its token: %s", exc)
        return None


async def refused_handler(request: Request, exc: Refused) -> JSONResponse:
    caller = getattr(request.state, "powerx_caller", None)
    settings = settings_or_none(request)
    user = caller.name if caller else None
    if caller is None and exc.code not in _AUTH_CODES:
        user = await user_for_audit(request, settings)
    await run_in_threadpool(audit_refusal, settings, request, exc, user)
    return SafeJSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


HTTP_CODES = {
    400: ("malformed_body", "the body is not JSON the API can read"),
    404: ("not_found", "no such route"),
    405: ("method_not_allowed", "the route does not take this method"),
}
"""Refusals FastAPI/Starlette make before a route runs (the JSON parser, the router)."""


async def http_handler(request: Request, exc: HTTPException) -> JSONResponse:
    """The parser's 400 and the router's 404/405 as the API's own refusals: documented body,
    audited (the `Allow` header of a 405 is kept)."""
    code, meaning = HTTP_CODES.get(exc.status_code, ("http_error", "refused"))
    detail = exc.detail if isinstance(exc.detail, str) else meaning
    message = f"{request.method} {request.url.path}: {meaning} ({detail})"
    refused = Refused(exc.status_code, code, message, headers=dict(exc.headers or {}))
    return await refused_handler(request, refused)


async def validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    problems = [_validation_problem(error) for error in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        more = len(errors) - MAX_PROBLEMS
        problems.append({"path": "body", "message": f"... and {more} more problem(s)"})
    refused = Refused(
        422,
        "invalid_body",
        "; ".join(f"{p['path']}: {p['message']}" for p in problems),
        problems=problems,
    )
    return await refused_handler(request, refused)


def _validation_problem(error: Any) -> dict[str, Any]:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
    path = ".".join(loc) or "body"
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        message = f"unknown field '{loc[-1] if loc else ''}'"
    elif error.get("type") == "missing":
        message = "required field is missing"
    return {"path": path, "message": message}
