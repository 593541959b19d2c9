"""What every ledger repository shares: value checks, row-to-record conversion, row lookups
and the audit enqueue that other writes make in their own transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Connection, CursorResult, Engine, Row, Select, select

from powerx_upgrade.ledger import clock
from powerx_upgrade.ledger.engine import insert_ignoring_conflicts
from powerx_upgrade.ledger.errors import (
    IdempotencyConflict,
    InvalidLedgerValue,
    UnknownAction,
    UnknownAudit,
    UnknownRun,
)
from powerx_upgrade.ledger.masking import mask_secrets
from powerx_upgrade.ledger.records import ActionRecord, AuditEntry, AuditRecord, RunRecord
from powerx_upgrade.ledger.schema import actions as actions_table
from powerx_upgrade.ledger.schema import audit_outbox
from powerx_upgrade.ledger.schema import gate_evaluations as gate_table
from powerx_upgrade.ledger.schema import gate_verdicts as verdicts_table
from powerx_upgrade.ledger.schema import runs as runs_table

AUDIT_RETENTION_FLOOR = timedelta(days=365)
"""Audit records are kept at least this long (DESIGN.md: audit retention >= 365 days)."""

RUN_UPDATABLE_FIELDS = frozenset(
    {
        "status",
        "batches",
        "baseline",
        "detail",
        "conf",
        "target_version",
        "artifact_uri",
        "artifact_sha256",
        "triggered_by",
        "reason",
    }
)
_CHUNK = 500  # well under SQLite's bound-parameter limit
_TEXT_LIMIT = 8000  # errors are clipped: a stack trace is not worth megabytes per tenant
_E = TypeVar("_E", bound=StrEnum)
_R = TypeVar("_R")


def aware_utc(field: str, value: datetime | None) -> datetime:
    if value is None:
        return clock.now()
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidLedgerValue(field, value, "a timezone-aware datetime is required")
    return value.astimezone(UTC)


def member_of(field: str, value: object, enum: type[_E]) -> str:
    if not isinstance(value, str):
        raise InvalidLedgerValue(field, value, [member.value for member in enum])
    try:
        return enum(value).value
    except ValueError:
        raise InvalidLedgerValue(field, value, [member.value for member in enum]) from None


def required_text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidLedgerValue(field, value, "a non-empty string is required")
    return value


def clip(text: str | None) -> str | None:
    if text is None or len(text) <= _TEXT_LIMIT:
        return text
    return text[: _TEXT_LIMIT - 20] + " ... [truncated]"


def chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def to_record(cls: type[_R], row: Row[Any], **defaults: Any) -> _R:
    values = dict(row._mapping)
    values.pop("seq", None)
    for name, default in defaults.items():
        if values.get(name) is None:
            values[name] = default
    return cls(**values)


def gate_query() -> Select[Any]:
    """Gate records with their verdict text, when they have one."""
    joined = gate_table.outerjoin(verdicts_table, verdicts_table.c.gate_id == gate_table.c.id)
    return select(gate_table, verdicts_table.c.summary, verdicts_table.c.segment).select_from(
        joined
    )


def run_record(row: Row[Any]) -> RunRecord:
    return to_record(RunRecord, row, conf={}, detail={})


def action_record(row: Row[Any]) -> ActionRecord:
    return to_record(ActionRecord, row, detail={})


def audit_record(row: Row[Any]) -> AuditRecord:
    return to_record(AuditRecord, row, payload={})


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just added."""
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - every ledger table has an integer primary key
        raise RuntimeError("the insert returned no primary key")
    return int(key[0])


class LedgerBase:
    """The engine and the row helpers the repositories share."""

    _engine: Engine

    def _enqueue(self, conn: Connection, entry: AuditEntry, run_id: str | None) -> str:
        row = self._audit_row(entry, run_id)
        insert_ignoring_conflicts(conn, audit_outbox, [row], ["audit_id"])
        return str(row["audit_id"])

    @staticmethod
    def _audit_row(entry: AuditEntry, run_id: str | None) -> dict[str, Any]:
        """The outbox row of an audit entry, checked and with secrets masked."""
        audit_id = entry.audit_id or uuid.uuid4().hex
        if len(required_text("audit_id", audit_id)) > 64:
            raise InvalidLedgerValue("audit_id", audit_id, "at most 64 characters")
        if not isinstance(entry.payload, Mapping):
            raise InvalidLedgerValue("payload", entry.payload, "a dict is required")
        return {
            "audit_id": audit_id,
            "run_id": run_id,
            "event": required_text("event", entry.event),
            "payload": mask_secrets(dict(entry.payload)),
            "created_at": clock.now(),
            "attempts": 0,
        }

    @staticmethod
    def _action_rows(
        conn: Connection, keys: Sequence[str], *, lock: bool = False
    ) -> dict[str, Row[Any]]:
        """Actions by idempotency key (keys unknown to the ledger are left out)."""
        found: dict[str, Row[Any]] = {}
        for chunk in chunks(sorted(set(keys))):
            query = select(actions_table).where(actions_table.c.idempotency_key.in_(chunk))
            for row in conn.execute(query.with_for_update() if lock else query).all():
                found[row.idempotency_key] = row
        return found

    @staticmethod
    def _run_row(conn: Connection, run_id: str, *, lock: bool = False) -> Row[Any] | None:
        query = select(runs_table).where(runs_table.c.run_id == run_id)
        # FOR UPDATE: PostgreSQL's row lock for read-then-write (SQLite holds the whole file)
        return conn.execute(query.with_for_update() if lock else query).one_or_none()

    def _require_run(self, conn: Connection, run_id: str, *, lock: bool = False) -> Row[Any]:
        row = self._run_row(conn, run_id, lock=lock)
        if row is None:
            raise UnknownRun(run_id)
        return row

    @staticmethod
    def _action_row(conn: Connection, key: str, *, lock: bool = False) -> Row[Any] | None:
        query = select(actions_table).where(actions_table.c.idempotency_key == key)
        return conn.execute(query.with_for_update() if lock else query).one_or_none()

    def _require_action(self, conn: Connection, key: str, *, lock: bool = False) -> Row[Any]:
        row = self._action_row(conn, key, lock=lock)
        if row is None:
            raise UnknownAction(key)
        return row

    @staticmethod
    def _require_audit(conn: Connection, audit_id: str) -> None:
        query = select(audit_outbox.c.seq).where(audit_outbox.c.audit_id == audit_id)
        if conn.execute(query).first() is None:
            raise UnknownAudit(audit_id)

    @staticmethod
    def _check_plugin(run: Row[Any], plugin: str) -> None:
        if plugin != run.plugin:
            raise InvalidLedgerValue(
                "plugin", plugin, f"run {run.run_id!r} rolls out plugin {run.plugin!r}"
            )

    @staticmethod
    def _check_same_action(
        existing: Row[Any], run_id: str, plugin: str, tenant_id: str, kind: str
    ) -> None:
        mine = (run_id, plugin, tenant_id, kind)
        theirs = (existing.run_id, existing.plugin, existing.tenant_id, existing.kind)
        if mine != theirs:
            raise IdempotencyConflict(
                existing.idempotency_key,
                "{3} of tenant {2!r} (plugin {1!r}) in run {0!r}".format(*theirs),
                "{3} of tenant {2!r} (plugin {1!r}) in run {0!r}".format(*mine),
            )
