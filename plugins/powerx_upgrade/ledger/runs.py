"""The ledger's runs: start, update, finish and list the DAG runs of every rollout."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update

from powerx_upgrade.ledger.base import (
    RUN_UPDATABLE_FIELDS,
    LedgerBase,
    aware_utc,
    member_of,
    required_text,
    run_record,
)
from powerx_upgrade.ledger.engine import read_transaction, serialize_on, write_transaction
from powerx_upgrade.ledger.errors import InvalidLedgerValue, UnknownRun
from powerx_upgrade.ledger.records import AuditEntry, RunOutcome, RunRecord, RunStatus
from powerx_upgrade.ledger.schema import claims
from powerx_upgrade.ledger.schema import runs as runs_table


class RunRepository(LedgerBase):
    """Runs (`powerx_ledger_runs`)."""

    def start_run(
        self,
        run_id: str,
        *,
        dag_id: str,
        plan_id: str,
        plugin: str,
        target_version: str,
        artifact_uri: str | None = None,
        artifact_sha256: str | None = None,
        triggered_by: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
        conf: dict[str, Any] | None = None,
        started_at: datetime | None = None,
        audit: AuditEntry | None = None,
        detail: dict[str, Any] | None = None,
    ) -> RunRecord:
        """Record a run's start; for a run id already recorded, return that record unchanged.

        `audit` is enqueued in the same transaction, and only when the run is new. `detail`
        is the run's first detail (e.g. the policy's limits in force, read by every report).
        """
        values = {
            "run_id": required_text("run_id", run_id),
            "dag_id": required_text("dag_id", dag_id),
            "plan_id": required_text("plan_id", plan_id),
            "plugin": required_text("plugin", plugin),
            "target_version": required_text("target_version", target_version),
            "artifact_uri": artifact_uri,
            "artifact_sha256": artifact_sha256,
            "triggered_by": triggered_by,
            "reason": reason,
            "dry_run": bool(dry_run),
            "conf": dict(conf or {}),
            "status": RunStatus.RUNNING.value,
            "detail": dict(detail or {}),
            "started_at": aware_utc("started_at", started_at),
        }
        with write_transaction(self._engine) as conn:
            serialize_on(conn, f"powerx_ledger_run:{run_id}")
            existing = self._run_row(conn, run_id)
            if existing is not None:
                return run_record(existing)
            conn.execute(runs_table.insert().values(**values))
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            return run_record(self._require_run(conn, run_id))

    def get_run(self, run_id: str) -> RunRecord | None:
        with read_transaction(self._engine) as conn:
            row = self._run_row(conn, run_id)
        return None if row is None else run_record(row)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set some of a run's fields (`RUN_UPDATABLE_FIELDS`); values replace the old ones.

        `status` may be any in-between status (`paused`, `rolling_back`, ...), but not
        `finished`: only `finish_run` ends a run, so that it also records the outcome.
        """
        unknown = set(fields) - RUN_UPDATABLE_FIELDS
        if unknown:
            raise InvalidLedgerValue("run field", sorted(unknown)[0], RUN_UPDATABLE_FIELDS)
        if "status" in fields:
            status = required_text("status", fields["status"])
            if status == RunStatus.FINISHED:
                raise InvalidLedgerValue("status", status, "use finish_run() to finish a run")
        if "target_version" in fields:
            required_text("target_version", fields["target_version"])
        if not fields:
            return
        with write_transaction(self._engine) as conn:
            result = conn.execute(
                update(runs_table).where(runs_table.c.run_id == run_id).values(**fields)
            )
            if result.rowcount == 0:
                raise UnknownRun(run_id)

    def merge_run_detail(self, run_id: str, detail: dict[str, Any]) -> None:
        """Merge `detail` into the run's detail in one locked transaction (a key set to None is
        removed), whatever the run's status: a read, change and `update_run` could lose a
        concurrent writer's keys. For what a step hands to later steps by reference (issue 16:
        tenant lists stay in the ledger, not in XCom)."""
        with write_transaction(self._engine) as conn:
            row = self._require_run(conn, run_id, lock=True)
            merged = {**(row.detail or {}), **detail}
            for key in [key for key, value in detail.items() if value is None]:
                del merged[key]
            conn.execute(
                update(runs_table).where(runs_table.c.run_id == run_id).values(detail=merged)
            )

    def finish_run(
        self,
        run_id: str,
        outcome: str,
        *,
        detail: dict[str, Any] | None = None,
        ended_at: datetime | None = None,
        audit: AuditEntry | None = None,
    ) -> RunRecord:
        """End a run with its outcome and release its tenants; `detail` is merged into the
        run's detail. Finishing again overwrites outcome and end time (a retried finalize)."""
        outcome = member_of("outcome", outcome, RunOutcome)
        ended = aware_utc("ended_at", ended_at)
        with write_transaction(self._engine) as conn:
            row = self._require_run(conn, run_id, lock=True)
            merged = {**(row.detail or {}), **(detail or {})}
            conn.execute(
                update(runs_table)
                .where(runs_table.c.run_id == run_id)
                .values(
                    status=RunStatus.FINISHED.value, outcome=outcome, ended_at=ended, detail=merged
                )
            )
            conn.execute(delete(claims).where(claims.c.run_id == run_id))
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            return run_record(self._require_run(conn, run_id))

    def active_runs(self, plugin: str | None = None) -> list[RunRecord]:
        """Runs not finished yet, oldest first."""
        query = select(runs_table).where(runs_table.c.status != RunStatus.FINISHED.value)
        if plugin is not None:
            query = query.where(runs_table.c.plugin == plugin)
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query.order_by(runs_table.c.started_at, runs_table.c.run_id)).all()
        return [run_record(row) for row in rows]

    def runs(
        self, *, plugin: str | None = None, plan_id: str | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs of any status, newest first."""
        query = select(runs_table)
        if plugin is not None:
            query = query.where(runs_table.c.plugin == plugin)
        if plan_id is not None:
            query = query.where(runs_table.c.plan_id == plan_id)
        query = query.order_by(runs_table.c.started_at.desc(), runs_table.c.run_id.desc()).limit(
            limit
        )
        with read_transaction(self._engine) as conn:
            return [run_record(row) for row in conn.execute(query).all()]
