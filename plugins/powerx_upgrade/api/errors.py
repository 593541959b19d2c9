"""The API's refusals: one exception with the HTTP status, a stable code and a message that
names what was wrong and where; the app turns it into a JSON answer and an audit record."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse


class Refused(Exception):
    """A request the API refuses; nothing was changed.

    :param status: the HTTP status of the answer.
    :param code: a stable, machine-readable reason (`not_authenticated`, `forbidden`,
        `stale_plan`, ...), also the audit record's `reason`.
    :param message: what was wrong, naming the field or value (never a token).
    :param problems: for 422: every problem as `{"path", "message", "line"?}`.
    :param run_id: the run the request was about, when known (the audit record's run).
    :param headers: extra answer headers (`WWW-Authenticate`, `ETag`).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems
        self.run_id = run_id
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON answer: a list of problems for a validation error, else code + message."""
        if self.problems is not None:
            return {"detail": self.problems}
        return {"detail": {"code": self.code, "message": self.message}}


class SafeJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: an answer that quotes what a client sent
    (an unknown key, a path) can always be encoded, whatever that was."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode("ascii")
