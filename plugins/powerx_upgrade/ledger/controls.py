"""The ledger's operator controls of runs, late rollbacks, and used approval tokens."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from powerx_upgrade.ledger import clock
from powerx_upgrade.ledger.base import (
    LedgerBase,
    aware_utc,
    clip,
    inserted_id,
    member_of,
    required_text,
    run_record,
    to_record,
)
from powerx_upgrade.ledger.engine import read_transaction, serialize_on, write_transaction
from powerx_upgrade.ledger.errors import (
    ApprovalReplayed,
    InvalidLedgerValue,
    RunNotActive,
    RunStillActive,
    UnknownControl,
)
from powerx_upgrade.ledger.records import (
    CONTROL_VIAS,
    ApprovalRecord,
    AuditEntry,
    ControlKind,
    ControlOutcome,
    ControlRecord,
    DecisionVia,
    RunOutcome,
    RunRecord,
    RunStatus,
)
from powerx_upgrade.ledger.schema import approvals as approvals_table
from powerx_upgrade.ledger.schema import controls as controls_table
from powerx_upgrade.ledger.schema import runs as runs_table


class ControlRepository(LedgerBase):
    """Controls (`powerx_ledger_controls`) and approvals (`powerx_ledger_approvals`)."""

    def request_control(
        self,
        run_id: str,
        kind: str,
        *,
        payload: dict[str, Any] | None = None,
        batch_index: int | None = None,
        actor: str | None = None,
        via: str | None = None,
        approval_jti: str | None = None,
        audit: AuditEntry | None = None,
    ) -> ControlRecord:
        """Record an operator's request to a run (pending until the run settles it).

        Every kind needs an active run (`RunNotActive` otherwise), except `rollback`: a
        finished run is rolled back by the `plugin_upgrade_rollback` DAG, which settles the
        request it was triggered for. An `answer` names its HITL task in `payload["task_id"]`.
        `audit` is enqueued in the same transaction.
        """
        kind = member_of("kind", kind, ControlKind)
        if via is not None and via not in CONTROL_VIAS:
            raise InvalidLedgerValue("via", via, CONTROL_VIAS)
        if payload is not None and not isinstance(payload, Mapping):
            raise InvalidLedgerValue("payload", payload, "a dict is required")
        if kind == ControlKind.ANSWER and not (payload or {}).get("task_id"):
            raise InvalidLedgerValue("payload", payload, "an answer names its task_id")
        if batch_index is not None and (not isinstance(batch_index, int) or batch_index < 1):
            raise InvalidLedgerValue("batch_index", batch_index, "a batch number from 1")
        with write_transaction(self._engine) as conn:
            run = self._require_run(conn, run_id)
            if run.status == RunStatus.FINISHED and kind != ControlKind.ROLLBACK:
                raise RunNotActive(run_id, run.outcome, f"take a {kind} request")
            values = {
                "run_id": run_id,
                "kind": kind,
                "batch_index": batch_index,
                "payload": dict(payload or {}),
                "actor": actor,
                "via": via,
                "approval_jti": approval_jti,
                "requested_at": clock.now(),
            }
            new_id = inserted_id(conn.execute(controls_table.insert().values(**values)))
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            return self._control(conn, new_id)

    def controls(
        self, run_id: str, *, kind: str | None = None, pending: bool | None = None
    ) -> list[ControlRecord]:
        """The run's controls in the order they were requested; `pending` True: not settled
        yet, False: settled only."""
        table = controls_table
        query = select(table).where(table.c.run_id == run_id)
        if kind is not None:
            query = query.where(table.c.kind == member_of("kind", kind, ControlKind))
        if pending is True:
            query = query.where(table.c.applied_at.is_(None))
        elif pending is False:
            query = query.where(table.c.applied_at.is_not(None))
        with read_transaction(self._engine) as conn:
            return [
                to_record(ControlRecord, row, payload={})
                for row in conn.execute(query.order_by(table.c.id))
            ]

    def get_control(self, control_id: int) -> ControlRecord | None:
        with read_transaction(self._engine) as conn:
            row = conn.execute(
                select(controls_table).where(controls_table.c.id == control_id)
            ).one_or_none()
        return None if row is None else to_record(ControlRecord, row, payload={})

    def settle_control(
        self,
        control_id: int,
        *,
        outcome: str,
        note: str | None = None,
        applied_at: datetime | None = None,
        audit: AuditEntry | None = None,
    ) -> bool:
        """Record how the run settled a request (applied, refused, expired) and when.

        Only the first settlement counts: settling again changes nothing and returns False
        (two tasks may race to apply the same request); `audit` is enqueued only by the call
        that settles it. Unknown ids raise `UnknownControl`.
        """
        outcome = member_of("outcome", outcome, ControlOutcome)
        when = aware_utc("applied_at", applied_at)
        with write_transaction(self._engine) as conn:
            row = conn.execute(
                select(controls_table).where(controls_table.c.id == control_id).with_for_update()
            ).one_or_none()
            if row is None:
                raise UnknownControl(control_id)
            if row.applied_at is not None:
                return False
            conn.execute(
                update(controls_table)
                .where(controls_table.c.id == control_id, controls_table.c.applied_at.is_(None))
                .values(applied_at=when, outcome=outcome, note=clip(note))
            )
            if audit is not None:
                self._enqueue(conn, audit, row.run_id)
            return True

    def late_rollback(
        self,
        run_id: str,
        *,
        outcome: str = RunOutcome.ROLLED_BACK.value,
        detail: dict[str, Any] | None = None,
        audit: AuditEntry | None = None,
    ) -> RunRecord:
        """A finished run was rolled back afterwards (the `plugin_upgrade_rollback` DAG): its
        outcome becomes `outcome` (rolled_back, or rollback_failed), `detail` is merged into the
        run's detail with the outcome it had before under `outcome_before_rollback`. The run's
        end time stays. `RunStillActive` for a run that has not finished."""
        outcome = member_of("outcome", outcome, RunOutcome)
        if outcome not in (RunOutcome.ROLLED_BACK, RunOutcome.ROLLBACK_FAILED):
            raise InvalidLedgerValue("outcome", outcome, ["rolled_back", "rollback_failed"])
        with write_transaction(self._engine) as conn:
            row = self._require_run(conn, run_id, lock=True)
            if row.status != RunStatus.FINISHED:
                raise RunStillActive(run_id, row.status, "record a late rollback")
            merged = {**(row.detail or {}), **(detail or {})}
            merged.setdefault("outcome_before_rollback", row.outcome)
            conn.execute(
                update(runs_table)
                .where(runs_table.c.run_id == run_id)
                .values(outcome=outcome, detail=merged)
            )
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            return run_record(self._require_run(conn, run_id))

    @staticmethod
    def _control(conn: Connection, control_id: int) -> ControlRecord:
        row = conn.execute(select(controls_table).where(controls_table.c.id == control_id)).one()
        return to_record(ControlRecord, row, payload={})

    # -- approvals ----------------------------------------------------------------------------

    def use_approval(
        self,
        *,
        jti: str,
        action: str,
        plan_id: str,
        run_id: str | None,
        subject: str,
        via: str | None,
        mfa: bool,
        issued_at: datetime | None,
        expires_at: datetime,
        detail: dict[str, Any] | None = None,
        used_at: datetime | None = None,
        audit: AuditEntry | None = None,
    ) -> ApprovalRecord:
        """Use up an accepted approval token (by its id, `jti`): record who approved what.

        A token is single use: a jti used before raises `ApprovalReplayed`, whichever process
        used it (the table's primary key is the guard). `audit` is enqueued in the same
        transaction, so only a use that counted is audited as accepted.
        """
        values: dict[str, Any] = {
            "jti": required_text("jti", jti),
            "action": required_text("action", action),
            "plan_id": required_text("plan_id", plan_id),
            "run_id": run_id,
            "subject": required_text("subject", subject),
            "via": None if via is None else member_of("via", via, DecisionVia),
            "mfa": bool(mfa),
            "issued_at": None if issued_at is None else aware_utc("issued_at", issued_at),
            "expires_at": aware_utc("expires_at", expires_at),
            "used_at": aware_utc("used_at", used_at),
            "detail": dict(detail or {}),
        }
        for field in ("jti", "subject"):
            if len(values[field]) > 250:
                raise InvalidLedgerValue(field, values[field][:40] + "...", "at most 250 chars")
        table = approvals_table
        try:
            with write_transaction(self._engine) as conn:
                serialize_on(conn, f"powerx_ledger_approval:{jti}")
                used = conn.execute(
                    select(table.c.used_at).where(table.c.jti == jti)
                ).scalar_one_or_none()
                if used is not None:
                    raise ApprovalReplayed(jti, used.isoformat())
                conn.execute(table.insert().values(**values))
                if audit is not None:
                    self._enqueue(conn, audit, run_id)
                row = conn.execute(select(table).where(table.c.jti == jti)).one()
        except IntegrityError:
            # another process inserted the same jti between our read and our write
            raise ApprovalReplayed(jti) from None
        return to_record(ApprovalRecord, row, detail={})

    def approvals(
        self, run_id: str | None = None, plan_id: str | None = None
    ) -> list[ApprovalRecord]:
        """Used approval tokens (of a run, of a plan), in the order they were used."""
        table = approvals_table
        query = select(table)
        if run_id is not None:
            query = query.where(table.c.run_id == run_id)
        if plan_id is not None:
            query = query.where(table.c.plan_id == plan_id)
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query.order_by(table.c.used_at, table.c.jti)).all()
        return [to_record(ApprovalRecord, row, detail={}) for row in rows]
