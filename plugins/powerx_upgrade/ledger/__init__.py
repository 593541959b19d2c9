"""The ledger: durable records of every rollout (runs, tenant claims, tenant actions, gate
evaluations, decisions) and the audit outbox, on SQLAlchemy; no Airflow import.

Usage::

    ledger = Ledger(url)  # None: SQLite file powerx_ledger.db under $AIRFLOW_HOME
    ledger.start_run(run_id, dag_id=..., plan_id=..., plugin=..., target_version=...)
"""

from powerx_upgrade.ledger.engine import default_ledger_url, normalize_url
from powerx_upgrade.ledger.errors import (
    ApprovalReplayed,
    IdempotencyConflict,
    InvalidLedgerValue,
    LedgerError,
    LedgerNotMigrated,
    RetentionTooShort,
    RunNotActive,
    RunStillActive,
    SchemaMismatch,
    TenantHeld,
    UnknownAction,
    UnknownAudit,
    UnknownControl,
    UnknownRun,
)
from powerx_upgrade.ledger.masking import mask_secrets
from powerx_upgrade.ledger.records import (
    FINISHED_ACTION_STATES,
    ActionKind,
    ActionOutcome,
    ActionRecord,
    ActionStart,
    ActionState,
    ApprovalRecord,
    AuditEntry,
    AuditRecord,
    ControlKind,
    ControlOutcome,
    ControlRecord,
    DecisionKind,
    DecisionRecord,
    DecisionVia,
    GateRecord,
    RunOutcome,
    RunRecord,
    RunStatus,
)
from powerx_upgrade.ledger.store import AUDIT_RETENTION_FLOOR, RUN_UPDATABLE_FIELDS, Ledger

__all__ = [
    "AUDIT_RETENTION_FLOOR",
    "FINISHED_ACTION_STATES",
    "RUN_UPDATABLE_FIELDS",
    "ActionKind",
    "ActionOutcome",
    "ActionRecord",
    "ActionStart",
    "ActionState",
    "ApprovalRecord",
    "ApprovalReplayed",
    "AuditEntry",
    "AuditRecord",
    "ControlKind",
    "ControlOutcome",
    "ControlRecord",
    "DecisionKind",
    "DecisionRecord",
    "DecisionVia",
    "GateRecord",
    "IdempotencyConflict",
    "InvalidLedgerValue",
    "Ledger",
    "LedgerError",
    "LedgerNotMigrated",
    "RetentionTooShort",
    "RunNotActive",
    "RunOutcome",
    "RunRecord",
    "RunStatus",
    "RunStillActive",
    "SchemaMismatch",
    "TenantHeld",
    "UnknownAction",
    "UnknownAudit",
    "UnknownControl",
    "UnknownRun",
    "default_ledger_url",
    "mask_secrets",
    "normalize_url",
]
