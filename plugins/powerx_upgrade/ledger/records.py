"""Plain, frozen records the ledger returns, and the closed sets of values it stores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """`running` until `finish_run`; other statuses (`paused`, ...) may be set in between."""

    RUNNING = "running"
    FINISHED = "finished"


class RunOutcome(StrEnum):
    PROMOTED = "promoted"
    PARTIALLY_PROMOTED = "partially_promoted"
    """Every batch went through, but some tenants failed to deploy within max_failed."""
    ROLLED_BACK = "rolled_back"
    STOPPED = "stopped"
    ROLLBACK_FAILED = "rollback_failed"
    FAILED = "failed"
    DRY_RUN = "dry_run"


class ActionKind(StrEnum):
    UPGRADE = "upgrade"
    ROLLBACK = "rollback"


class ActionState(StrEnum):
    STARTED = "started"
    """Begun, not finished: the process may have died in between; the platform call is
    idempotent by key, so the caller simply tries again."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    REFUSED = "refused"


FINISHED_ACTION_STATES = frozenset(
    {ActionState.SUCCEEDED, ActionState.FAILED, ActionState.SKIPPED, ActionState.REFUSED}
)


class DecisionKind(StrEnum):
    DECIDE = "decide"
    PAUSE = "pause"
    APPROVAL = "approval"
    ROLLBACK = "rollback"
    STOP = "stop"
    TAKEOVER = "takeover"


class DecisionVia(StrEnum):
    AUTO = "auto"
    UI = "ui"
    API = "api"
    CLI = "cli"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class _Record:
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO 8601 with `+00:00`), e.g. for an XCom."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunRecord(_Record):
    """One DAG run of a plan: what it rolls out, to whom (batches), and how it ended."""

    run_id: str
    dag_id: str
    plan_id: str
    plugin: str
    target_version: str
    artifact_uri: str | None
    artifact_sha256: str | None
    triggered_by: str | None
    reason: str | None
    dry_run: bool
    conf: dict[str, Any]
    status: str
    outcome: str | None
    batches: Any
    baseline: Any
    detail: dict[str, Any]
    started_at: datetime
    ended_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status != RunStatus.FINISHED


@dataclass(frozen=True)
class ActionRecord(_Record):
    """One upgrade or rollback of one tenant, keyed by its idempotency key."""

    id: int
    run_id: str
    plugin: str
    tenant_id: str
    batch_index: int | None
    kind: str
    state: str
    from_version: str | None
    to_version: str
    from_config: str | None
    config_after: str | None
    idempotency_key: str
    attempts: int
    noop: bool
    error: str | None
    detail: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_ACTION_STATES


@dataclass(frozen=True)
class GateRecord(_Record):
    """One gate evaluation of a batch: the phase, why, and every measured value vs its limit."""

    id: int
    run_id: str
    batch_index: int
    phase: str
    reason: str
    measurements: list[dict[str, Any]]
    final: bool
    evaluated_at: datetime
    summary: str | None = None
    """The verdict in words (final verdicts recorded since verdict sentences exist)."""
    segment: dict[str, Any] | None = None
    """Where a failure concentrates across tenant labels (`Segment.as_dict()`), if anywhere."""


@dataclass(frozen=True)
class DecisionRecord(_Record):
    """A decision taken in a run: by the DAG (`via` auto) or by a person (ui, api, cli)."""

    id: int
    run_id: str
    batch_index: int | None
    kind: str
    decision: str
    actor: str | None
    via: str | None
    detail: dict[str, Any]
    decided_at: datetime


@dataclass(frozen=True)
class AuditRecord(_Record):
    """One audit event waiting in (or delivered from) the outbox."""

    audit_id: str
    run_id: str | None
    event: str
    payload: dict[str, Any]
    created_at: datetime
    delivered_at: datetime | None
    attempts: int
    last_error: str | None

    @property
    def delivered(self) -> bool:
        return self.delivered_at is not None


@dataclass(frozen=True)
class AuditEntry:
    """An audit event to enqueue in the same transaction as the change it records.

    Give a deterministic `audit_id` (e.g. derived from an idempotency key) when the call may be
    repeated: re-enqueueing an existing id is a no-op.
    """

    event: str
    payload: dict[str, Any]
    audit_id: str | None = None


@dataclass(frozen=True)
class ActionStart:
    """One tenant action to begin in a batch (`ActionRepository.begin_actions`)."""

    tenant_id: str
    idempotency_key: str
    to_version: str
    batch_index: int | None = None
    from_version: str | None = None
    from_config: str | None = None


@dataclass(frozen=True)
class ActionOutcome:
    """How one tenant action ended, to record in a batch (`ActionRepository.finish_actions`)."""

    idempotency_key: str
    state: str
    to_version: str | None = None
    config_after: str | None = None
    error: str | None = None
    attempts: int | None = None
    noop: bool = False
    detail: dict[str, Any] | None = None
    audit: AuditEntry | None = None


# -- controls ---------------------------------------------------------------------------------


class ControlKind(StrEnum):
    """What an operator asks of a run (docs/control-plane.md, "Run controls")."""

    ROLLBACK = "rollback"
    """Roll the run back: an active run when its gate next reads its controls (every second), a
    finished one through the `plugin_upgrade_rollback` DAG."""
    PAUSE = "pause"
    TAKEOVER = "takeover"
    RELEASE = "release"
    ADJUST = "adjust"
    ANSWER = "answer"
    """A human decision (pause, approval) answered through the API: who, how, which token."""


class ControlOutcome(StrEnum):
    APPLIED = "applied"
    REFUSED = "refused"
    """Not applied: invalid by the time it was read, or the run could not honour it."""
    EXPIRED = "expired"
    """The run ended before the request took effect."""


CONTROL_VIAS = frozenset({"ui", "api", "cli"})


@dataclass(frozen=True)
class ControlRecord(_Record):
    """An operator's request to a run, and how the run settled it (`applied_at`, `outcome`)."""

    id: int
    run_id: str
    kind: str
    batch_index: int | None
    payload: dict[str, Any]
    actor: str | None
    via: str | None
    approval_jti: str | None
    requested_at: datetime
    applied_at: datetime | None
    outcome: str | None
    note: str | None

    @property
    def pending(self) -> bool:
        return self.applied_at is None


@dataclass(frozen=True)
class ApprovalRecord(_Record):
    """An approval token the control plane accepted, and so used up: who approved which action
    on which plan (and run), through which path, and when it was used. Never the token."""

    jti: str
    action: str
    plan_id: str
    run_id: str | None
    subject: str
    via: str | None
    mfa: bool
    issued_at: datetime | None
    expires_at: datetime
    used_at: datetime
    detail: dict[str, Any]
