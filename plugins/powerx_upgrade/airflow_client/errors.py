"""Typed failures of a REST call: which request, the HTTP status (None when no answer came) and
the server's own detail, read from FastAPI's error shapes."""

from __future__ import annotations

import json
from typing import Any

import httpx


class ApiError(Exception):
    """A request failed: which one, the HTTP status (None when no answer came) and the
    server's detail.

    :param method: the HTTP method.
    :param url: the full URL.
    :param status: the HTTP status, None when the server could not be reached.
    :param detail: what the server (or the transport) said.
    :param code: a machine-readable reason when the server gave one (approval refusals).
    """

    def __init__(
        self, method: str, url: str, status: int | None, detail: str, *, code: str | None = None
    ):
        self.method, self.url, self.status, self.detail, self.code = (
            method,
            url,
            status,
            detail,
            code,
        )
        answered = f"answered {status}" if status is not None else "failed"
        super().__init__(f"{method} {url} {answered}: {detail}")


class Unreachable(ApiError):
    """No HTTP answer at all (connection refused, DNS, timeout)."""


class NotAuthenticated(ApiError):
    """401: no token, a bad login or an expired token."""


class Forbidden(ApiError):
    """403: the user lacks the permission (or, with `code`, an approval token was refused)."""


class NotFound(ApiError):
    """404: no such DAG, run, task or route."""


class Conflict(ApiError):
    """409 / 412 / 428: the request clashes with the current state."""


class Invalid(ApiError):
    """400 / 413 / 422: the request itself was refused as malformed."""


class ServerError(ApiError):
    """5xx."""


class ControlPlaneMissing(ApiError):
    """The Airflow at this URL does not serve the control-plane API (the plugin is not
    installed): its routes answer Starlette's bare `404 Not Found`."""


class AlreadyAnswered(Exception):
    """A human-in-the-loop request was answered before us."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: Invalid,
    401: NotAuthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: Conflict,
    413: Invalid,
    422: Invalid,
    428: Conflict,
}


def error_detail(response: httpx.Response) -> tuple[str, str | None]:
    """The server's detail of an error answer, readable, and its code if it gave one.

    Handles FastAPI's shapes: `{"detail": "text"}`, `{"detail": {"code", "message"}}`,
    `{"detail": [{"loc"|"path", "msg"|"message"}, ...]}` (validation errors).
    """
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip()[:500] or response.reason_phrase), None
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, dict):
        message = detail.get("message") or detail.get("msg") or json.dumps(detail)
        return str(message), detail.get("code")
    if isinstance(detail, list):
        return "; ".join(_problem(item) for item in detail), None
    return json.dumps(detail)[:500], None


def _problem(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    where = item.get("path") or ".".join(str(p) for p in item.get("loc") or ())
    message = item.get("message") or item.get("msg") or json.dumps(item)
    line = f" (line {item['line']})" if item.get("line") else ""
    return f"{where}: {message}{line}" if where else f"{message}{line}"


def raise_for(method: str, response: httpx.Response) -> None:
    """Raise the typed ApiError of an error answer; nothing for a success."""
    if not response.is_error:
        return
    detail, code = error_detail(response)
    kind = _BY_STATUS.get(response.status_code)
    if kind is None:
        kind = ServerError if response.status_code >= 500 else ApiError
    raise kind(method, str(response.request.url), response.status_code, detail, code=code)
