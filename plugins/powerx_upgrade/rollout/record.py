"""Audit and notification from the rollout steps: audit records go through the ledger's outbox
(delivered now if the audit service answers, later otherwise: none is lost); notifications are
best effort and idempotent by id: one the service does not take is audited `notify.failed` and
sent again at the run's end (`notify.resent`), never blocking the run."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger.records import AuditEntry, AuditRecord
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.errors import PowerXRejected

log = logging.getLogger(__name__)

SYSTEM_ACTOR = "powerx-grey-upgrade"
NOTIFY_FAILED = "notify.failed"
"""Audit event of a notification the service did not take (after the hook's retries)."""
NOTIFY_RESENT = "notify.resent"
"""Audit event of a failed notification sent again later (at the run's end)."""
AUDIT_IN_FLIGHT = 8
"""Audit records a flush sends at once (the audit service dedupes by id; order of arrival
within a group is not kept, each record carries its own time)."""


class AuditClient(Protocol):
    def record(self, record: dict[str, Any]) -> dict[str, Any]: ...


class NotifyClient(Protocol):
    def send(self, notification: dict[str, Any]) -> dict[str, Any]: ...


def stable_id(key: str) -> str:
    """A short id derived from a long natural key (run id + step + tenant): the same key gives
    the same id, so a retried task re-enqueues nothing new and the audit service dedupes."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def audit_payload(
    action: str,
    *,
    actor: str | None,
    plugin: str | None = None,
    version: str | None = None,
    run_id: str | None = None,
    tenants: Iterable[str] = (),
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """One audit record in the audit service's shape (`POST /internal/audit/version`: exactly
    these fields; anything else goes under `details`). Every audit writer builds its records
    here: a record the service refuses would stay in the outbox for ever."""
    return {
        "actor": actor or SYSTEM_ACTOR,
        "action": action,
        "at": (at or datetime.now(UTC)).isoformat(),
        "plugin": plugin,
        "version": version,
        "run_id": run_id,
        "tenants": list(tenants),
        "reason": reason,
        "details": details or {},
    }


def audit_entry(
    ctx: RunContext,
    action: str,
    *,
    tenants: Iterable[str] = (),
    details: dict[str, Any] | None = None,
    actor: str | None = None,
    reason: str | None = None,
    audit_id: str | None = None,
) -> AuditEntry:
    """One audit record of the run, for a ledger write that enqueues it in its own transaction
    (`Recorder.audit` queues it alone)."""
    payload = audit_payload(
        action,
        actor=actor or ctx.triggered_by,
        plugin=ctx.plugin,
        version=ctx.target_version,
        run_id=ctx.run_id,
        tenants=tenants,
        reason=reason or ctx.reason,
        details=details,
    )
    return AuditEntry(action, payload, stable_id(audit_id) if audit_id else None)


class Recorder:
    """Writes audit records to the ledger's outbox and delivers them; sends notifications.

    :param ledger: the run ledger (its outbox keeps undelivered audit records).
    :param audit: the audit service client; None only queues.
    :param notify: the notification service client; None sends nothing.
    """

    def __init__(
        self, ledger: Ledger, audit: AuditClient | None = None, notify: NotifyClient | None = None
    ) -> None:
        self.ledger = ledger
        self.audit_client = audit
        self.notify_client = notify

    def audit(
        self,
        ctx: RunContext,
        action: str,
        *,
        tenants: Iterable[str] = (),
        details: dict[str, Any] | None = None,
        actor: str | None = None,
        reason: str | None = None,
        audit_id: str | None = None,
    ) -> str:
        """Queue one audit record (deterministic id when given, so a retried task does not
        duplicate it)."""
        entry = audit_entry(
            ctx,
            action,
            tenants=tenants,
            details=details,
            actor=actor,
            reason=reason,
            audit_id=audit_id,
        )
        return self.ledger.enqueue_audit(
            run_id=ctx.run_id, event=entry.event, payload=entry.payload, audit_id=entry.audit_id
        )

    def flush(self, limit: int = 1000, *, ids: Sequence[str] | None = None) -> tuple[int, int]:
        """Deliver queued audit records, oldest first, AUDIT_IN_FLIGHT at a time; stop after
        the first failure (the service is down: the rest waits). A record the service refuses
        as invalid (a 4xx other than 404/409/429) stays queued with its error, for reconcile to
        report, and does not hold up the records behind it. With `ids`: every pending one of
        those (a shard's own records), whatever `limit`. Returns (delivered, still pending) of
        the records this call took up."""
        if self.audit_client is None:
            return 0, self.ledger.count_pending_audit()
        if ids is not None:
            pending = self.ledger.pending_audit(max(len(ids), 1), audit_ids=ids)
        else:
            pending = self.ledger.pending_audit(limit)
        delivered: list[str] = []
        refused = 0
        try:
            for start in range(0, len(pending), AUDIT_IN_FLIGHT):
                group = pending[start : start + AUDIT_IN_FLIGHT]
                answers = self._deliver(group)
                down: Exception | None = None
                for record, error in zip(group, answers, strict=True):
                    if error is None:
                        delivered.append(record.audit_id)
                    elif isinstance(error, PowerXRejected):  # this record is wrong
                        self.ledger.mark_audit_failed(record.audit_id, str(error)[:500])
                        log.error("audit service refused record %s: %s", record.audit_id, error)
                        refused += 1
                    else:  # any other failure: keep it queued, try again later
                        self.ledger.mark_audit_failed(record.audit_id, str(error)[:500])
                        down = down or error
                if down is not None:
                    waiting = len(pending) - len(delivered) - refused
                    log.warning(
                        "audit service unavailable, %d record(s) wait in the outbox: %s",
                        waiting,
                        down,
                    )
                    return len(delivered), waiting
        finally:
            # one transaction for the delivered ones; a crash before it re-delivers them
            # later, which the audit service answers from its record (ids are stable)
            self.ledger.mark_audits_delivered(delivered)
        return len(delivered), refused

    def _deliver(self, group: Sequence[AuditRecord]) -> list[Exception | None]:
        """Send a group of records at once; each one's error, or None when it was taken."""
        client = self.audit_client
        assert client is not None

        def send(record: AuditRecord) -> Exception | None:
            try:
                client.record({**record.payload, "id": record.audit_id})
            except Exception as exc:  # returned, sorted by kind in flush: nothing is dropped
                return exc
            return None

        if len(group) == 1:
            return [send(group[0])]
        with ThreadPoolExecutor(len(group)) as pool:
            return list(pool.map(send, group))

    def drain(self) -> tuple[int, int]:
        """`flush` until nothing delivers any more (all delivered, or the service is down):
        the run's end, so that no record of a large run waits for the next run's tasks.
        Returns (delivered, still pending in the outbox)."""
        total = 0
        while True:
            delivered, _ = self.flush()
            total += delivered
            if delivered == 0:
                return total, self.ledger.count_pending_audit()

    def notify(
        self,
        ctx: RunContext,
        event: str,
        *,
        key: str,
        title: str,
        message: str = "",
        severity: str = "info",
        channels: Iterable[str] = (),
        context: dict[str, Any] | None = None,
    ) -> bool:
        """Send one notification (id `<run>:<key>`, so a retry is not a second message)."""
        if self.notify_client is None:
            return False
        body = {
            "id": stable_id(f"{ctx.run_id}:{key}"),
            "event": event,
            "severity": severity,
            "plugin": ctx.plugin,
            "version": ctx.target_version,
            "run_id": ctx.run_id,
            "title": title,
            "message": message,
            "channels": list(channels),
            "context": context or {},
        }
        try:
            self.notify_client.send(body)
        except Exception as exc:  # notifications never stop a rollout
            log.warning("notification %s not sent: %s", body["id"], exc)
            # Kept in the audit trail (surfaced, counted) with the whole body, so the run's end
            # can send it again once the service answers (`resend_failed_notifications`).
            self.audit(
                ctx,
                NOTIFY_FAILED,
                audit_id=f"{ctx.run_id}:{NOTIFY_FAILED}:{key}",
                details={"key": key, "notification": body, "error": str(exc)[:300]},
            )
            return False
        return True

    def resend_failed_notifications(self, ctx: RunContext) -> tuple[list[str], list[str]]:
        """Send again every notification of the run that failed (`notify.failed`) and was not
        resent yet; each one resent is audited `notify.resent` (so it is sent once more at most:
        the service also dedupes by id). Returns (keys resent now, keys still not delivered)."""
        if self.notify_client is None:
            return [], []
        records = self.ledger.audit_records(ctx.run_id)
        done = {r.audit_id for r in records if r.event == NOTIFY_RESENT}
        resent: list[str] = []
        failed: list[str] = []
        for record in records:
            if record.event != NOTIFY_FAILED:
                continue
            details = record.payload.get("details") or {}
            key = str(details.get("key"))
            resent_id = f"{ctx.run_id}:{NOTIFY_RESENT}:{key}"
            if stable_id(resent_id) in done:
                continue
            try:
                self.notify_client.send(dict(details.get("notification") or {}))
            except Exception as exc:
                log.warning("notification %s still not sent: %s", key, exc)
                failed.append(key)
                continue
            self.audit(ctx, NOTIFY_RESENT, audit_id=resent_id, details={"key": key})
            resent.append(key)
        return resent, failed
