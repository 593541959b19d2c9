"""Typed errors of the PowerX services, shared by the hooks and the rollout steps."""

from __future__ import annotations

from typing import Any

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class PowerXError(Exception):
    """A call to a PowerX service that did not succeed; says which call and what came back."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        endpoint: str,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(f"{method} {endpoint}: {message}")
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.code = code


class PowerXUnavailable(PowerXError):
    """The service did not answer (connection, timeout) or kept answering 5xx/429 after retries."""


class PowerXThrottled(PowerXUnavailable):
    """429 (or 503 with `Retry-After`): the service asks us to slow down, and for how long."""

    def __init__(self, message: str, *, retry_after: float | None = None, **where: Any) -> None:
        super().__init__(message, **where)
        self.retry_after = retry_after


class PowerXNotFound(PowerXError):
    """404: unknown plugin or tenant."""


class PowerXConflict(PowerXError):
    """409: e.g. the tenant has an operation in flight."""


class PowerXRejected(PowerXError):
    """Any other 4xx: the request itself is wrong; retrying will not help."""


def error_for(
    status: int, body: Any, method: str, endpoint: str, *, retry_after: str | None = None
) -> PowerXError:
    """The typed error for a non-2xx answer (by status code, never by parsing message text)."""
    code = body.get("error") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    text = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    kind: type[PowerXError]
    if status == 429 or (status == 503 and retry_after is not None):
        return PowerXThrottled(
            text,
            retry_after=parse_retry_after(retry_after),
            method=method,
            endpoint=endpoint,
            status=status,
            code=code,
        )
    if status == 404:
        kind = PowerXNotFound
    elif status == 409:
        kind = PowerXConflict
    elif status in RETRYABLE_STATUSES or status >= 500:
        kind = PowerXUnavailable
    else:
        kind = PowerXRejected
    return kind(text, method=method, endpoint=endpoint, status=status, code=code)


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, PowerXUnavailable)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header in its delay form; None when absent or a date (an
    HTTP date is not worth a clock comparison here: the caller's own backoff applies)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return max(0.0, seconds)
