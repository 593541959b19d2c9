"""The ledger's audit outbox: enqueue, deliver, retry and prune audit events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, func, select, update

from powerx_upgrade.ledger.base import (
    AUDIT_RETENTION_FLOOR,
    LedgerBase,
    audit_record,
    aware_utc,
    chunks,
    clip,
)
from powerx_upgrade.ledger.engine import read_transaction, write_transaction
from powerx_upgrade.ledger.errors import RetentionTooShort, UnknownAudit
from powerx_upgrade.ledger.records import AuditEntry, AuditRecord
from powerx_upgrade.ledger.schema import audit_outbox


class AuditRepository(LedgerBase):
    """The audit outbox (`powerx_ledger_audit_outbox`)."""

    def enqueue_audit(
        self,
        *,
        run_id: str | None,
        event: str,
        payload: dict[str, Any],
        audit_id: str | None = None,
    ) -> str:
        """Put an audit event in the outbox; returns its id (a new uuid4 hex unless given).

        Enqueueing an id that is already there is a no-op. Secret-named keys in the payload
        are masked before it is stored.
        """
        entry = AuditEntry(event=event, payload=payload, audit_id=audit_id)
        with write_transaction(self._engine) as conn:
            return self._enqueue(conn, entry, run_id)

    def pending_audit(
        self, limit: int = 500, *, audit_ids: Sequence[str] | None = None
    ) -> list[AuditRecord]:
        """Undelivered audit records, oldest first; with `audit_ids`, only those of them (a
        deploy shard delivers the records it wrote, not its neighbours')."""
        if audit_ids is None:
            query = (
                select(audit_outbox)
                .where(audit_outbox.c.delivered_at.is_(None))
                .order_by(audit_outbox.c.seq)
                .limit(limit)
            )
            with read_transaction(self._engine) as conn:
                return [audit_record(row) for row in conn.execute(query).all()]
        rows: list[Row[Any]] = []
        with read_transaction(self._engine) as conn:
            for chunk in chunks(sorted(set(audit_ids))):
                query = select(audit_outbox).where(
                    audit_outbox.c.audit_id.in_(chunk), audit_outbox.c.delivered_at.is_(None)
                )
                rows += conn.execute(query).all()
        rows.sort(key=lambda row: row.seq)
        return [audit_record(row) for row in rows[:limit]]

    def mark_audit_delivered(self, audit_id: str, delivered_at: datetime | None = None) -> None:
        """Mark a record delivered; marking it again keeps the first delivery time."""
        when = aware_utc("delivered_at", delivered_at)
        with write_transaction(self._engine) as conn:
            self._require_audit(conn, audit_id)
            conn.execute(
                update(audit_outbox)
                .where(audit_outbox.c.audit_id == audit_id, audit_outbox.c.delivered_at.is_(None))
                .values(delivered_at=when)
            )

    def count_pending_audit(self) -> int:
        """How many audit records wait for delivery (without reading them)."""
        query = select(func.count()).select_from(audit_outbox)
        query = query.where(audit_outbox.c.delivered_at.is_(None))
        with read_transaction(self._engine) as conn:
            return int(conn.execute(query).scalar_one())

    def mark_audits_delivered(
        self, audit_ids: Sequence[str], delivered_at: datetime | None = None
    ) -> int:
        """`mark_audit_delivered` for many records in one transaction; returns how many were
        newly marked. Unknown ids raise `UnknownAudit` (nothing is marked then)."""
        when = aware_utc("delivered_at", delivered_at)
        ids = sorted(set(audit_ids))
        if not ids:
            return 0
        marked = 0
        with write_transaction(self._engine) as conn:
            for chunk in chunks(ids):
                known = select(audit_outbox.c.audit_id).where(audit_outbox.c.audit_id.in_(chunk))
                missing = set(chunk) - set(conn.execute(known).scalars())
                if missing:
                    raise UnknownAudit(min(missing))
                marked += conn.execute(
                    update(audit_outbox)
                    .where(
                        audit_outbox.c.audit_id.in_(chunk), audit_outbox.c.delivered_at.is_(None)
                    )
                    .values(delivered_at=when)
                ).rowcount
        return marked

    def mark_audit_failed(self, audit_id: str, error: str) -> None:
        """Count a failed delivery attempt and keep its error; the record stays pending."""
        with write_transaction(self._engine) as conn:
            self._require_audit(conn, audit_id)
            conn.execute(
                update(audit_outbox)
                .where(audit_outbox.c.audit_id == audit_id, audit_outbox.c.delivered_at.is_(None))
                .values(attempts=audit_outbox.c.attempts + 1, last_error=clip(error))
            )

    def audit_records(self, run_id: str | None = None) -> list[AuditRecord]:
        """Every audit record (of one run, when given), oldest first."""
        query = select(audit_outbox)
        if run_id is not None:
            query = query.where(audit_outbox.c.run_id == run_id)
        with read_transaction(self._engine) as conn:
            return [audit_record(row) for row in conn.execute(query.order_by(audit_outbox.c.seq))]

    def prune_audit(
        self, older_than: timedelta = AUDIT_RETENTION_FLOOR, *, now: datetime | None = None
    ) -> int:
        """Delete delivered audit records created more than `older_than` ago; returns how many.

        Undelivered records are never pruned, whatever their age. A retention shorter than
        `AUDIT_RETENTION_FLOOR` (365 days) raises `RetentionTooShort`.
        """
        if older_than < AUDIT_RETENTION_FLOOR:
            raise RetentionTooShort(older_than, AUDIT_RETENTION_FLOOR)
        cutoff = aware_utc("now", now) - older_than
        with write_transaction(self._engine) as conn:
            result = conn.execute(
                delete(audit_outbox).where(
                    audit_outbox.c.delivered_at.is_not(None), audit_outbox.c.created_at < cutoff
                )
            )
            return result.rowcount
