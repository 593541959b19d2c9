"""Typed errors of the ledger; each names the offending id or value."""

from __future__ import annotations

from collections.abc import Iterable


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class UnknownRun(LedgerError, LookupError):
    """No run with this id is in the ledger."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run {run_id!r} in the ledger")


class UnknownAction(LedgerError, LookupError):
    """No tenant action with this idempotency key is in the ledger."""

    def __init__(self, idempotency_key: str) -> None:
        self.idempotency_key = idempotency_key
        super().__init__(f"no action with idempotency key {idempotency_key!r} in the ledger")


class UnknownAudit(LedgerError, LookupError):
    """No audit record with this id is in the outbox."""

    def __init__(self, audit_id: str) -> None:
        self.audit_id = audit_id
        super().__init__(f"no audit record {audit_id!r} in the outbox")


class InvalidLedgerValue(LedgerError, ValueError):
    """A value outside its closed set (outcome, state, kind, ...) or otherwise malformed."""

    def __init__(self, field: str, value: object, allowed: Iterable[str] | str | None = None):
        self.field = field
        self.value = value
        if isinstance(allowed, str):
            hint = f": {allowed}"
        elif allowed is not None:
            hint = f"; expected one of {', '.join(sorted(allowed))}"
        else:
            hint = ""
        super().__init__(f"invalid {field} {value!r}{hint}")


class RunNotActive(LedgerError):
    """The run has finished; it can no longer claim tenants (or take `action`)."""

    def __init__(self, run_id: str, outcome: str | None, action: str = "claim") -> None:
        self.run_id = run_id
        self.outcome = outcome
        super().__init__(f"run {run_id!r} has finished (outcome {outcome!r}); it cannot {action}")


class RunStillActive(LedgerError):
    """The run has not finished; what was asked is only for a finished run."""

    def __init__(self, run_id: str, status: str, action: str) -> None:
        self.run_id = run_id
        self.status = status
        super().__init__(f"run {run_id!r} is still active (status {status!r}); cannot {action}")


class UnknownControl(LedgerError, LookupError):
    """No run control with this id is in the ledger."""

    def __init__(self, control_id: object) -> None:
        self.control_id = control_id
        super().__init__(f"no run control {control_id!r} in the ledger")


class ApprovalReplayed(LedgerError):
    """An approval token's id (`jti`) was used before: approval tokens are single use."""

    def __init__(self, jti: str, used_at: object = None) -> None:
        self.jti = jti
        self.used_at = used_at
        when = f" at {used_at}" if used_at is not None else ""
        super().__init__(f"approval token {jti!r} was already used{when}; tokens are single use")


class TenantHeld(LedgerError):
    """Another active run holds the tenant; this run must not act on it."""

    def __init__(self, plugin: str, tenant_id: str, run_id: str, holder: str) -> None:
        self.plugin = plugin
        self.tenant_id = tenant_id
        self.run_id = run_id
        self.holder = holder
        super().__init__(
            f"tenant {tenant_id!r} of plugin {plugin!r} is held by active run {holder!r};"
            f" run {run_id!r} must not act on it"
        )


class IdempotencyConflict(LedgerError):
    """An idempotency key was reused for a different run, tenant, plugin or kind of action."""

    def __init__(self, idempotency_key: str, existing: str, requested: str) -> None:
        self.idempotency_key = idempotency_key
        super().__init__(
            f"idempotency key {idempotency_key!r} already names {existing}, not {requested}"
        )


class RetentionTooShort(LedgerError, ValueError):
    """A prune would drop audit records younger than the retention floor."""

    def __init__(self, requested: object, floor: object) -> None:
        self.requested = requested
        self.floor = floor
        super().__init__(f"audit retention {requested} is shorter than the floor of {floor}")


class SchemaMismatch(LedgerError):
    """The database holds a ledger schema of another version than this code."""

    def __init__(self, url: str, found: str, expected: str) -> None:
        super().__init__(
            f"ledger at {url} has schema version {found}, this code expects {expected};"
            " migrate the database or point the ledger elsewhere"
        )


class LedgerNotMigrated(SchemaMismatch):
    """The database holds a ledger at another Alembic revision than this code needs (or one made
    before migrations existed): `powerx ledger upgrade` brings it to the code's revision."""

    def __init__(self, url: str, found: str | None, expected: str) -> None:
        self.url, self.found, self.expected = url, found, expected
        shown = found or "none (a ledger created before migrations, no version table)"
        LedgerError.__init__(
            self,
            f"ledger at {url} is at revision {shown}, code needs {expected}: "
            "run powerx ledger upgrade",
        )
