"""Errors the HTTP layer maps to status codes (`error` code, message, optional headers)."""

from __future__ import annotations


class SandboxError(Exception):
    """A request the platform refuses; `status` and `code` become the HTTP answer."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class UnknownPlugin(SandboxError):
    status, code = 404, "unknown_plugin"


class UnknownTenant(SandboxError):
    status, code = 404, "unknown_tenant"


class OperationInFlight(SandboxError):
    status, code = 409, "operation_in_flight"


class RollbackUnavailable(SandboxError):
    status, code = 409, "rollback_unavailable"


class IdempotencyMismatch(SandboxError):
    status, code = 422, "idempotency_mismatch"


class InvalidQuery(SandboxError):
    status, code = 422, "invalid_query"


class InvalidFault(SandboxError):
    status, code = 422, "invalid_fault"


class InjectedHttpError(SandboxError):
    code = "injected_fault"

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message, headers)
        self.status = status


class AuditUnavailable(SandboxError):
    status, code = 503, "audit_unavailable"
