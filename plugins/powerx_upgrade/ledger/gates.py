"""The ledger's gate evaluations (with their verdicts) and decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from powerx_upgrade.ledger.base import (
    LedgerBase,
    aware_utc,
    gate_query,
    inserted_id,
    member_of,
    required_text,
    to_record,
)
from powerx_upgrade.ledger.engine import read_transaction, write_transaction
from powerx_upgrade.ledger.records import (
    AuditEntry,
    DecisionKind,
    DecisionRecord,
    DecisionVia,
    GateRecord,
)
from powerx_upgrade.ledger.schema import decisions as decisions_table
from powerx_upgrade.ledger.schema import gate_evaluations as gate_table
from powerx_upgrade.ledger.schema import gate_verdicts as verdicts_table


class GateRepository(LedgerBase):
    """Gate evaluations, verdicts and decisions."""

    def record_gate(
        self,
        run_id: str,
        batch_index: int,
        *,
        phase: str,
        reason: str,
        measurements: list[dict[str, Any]],
        final: bool,
        evaluated_at: datetime | None = None,
        audit: AuditEntry | None = None,
        summary: str | None = None,
        segment: dict[str, Any] | None = None,
    ) -> GateRecord:
        """Record one gate evaluation (a poke, or the final verdict when `final`); `summary` is
        the verdict in words, `segment` where a failure concentrates."""
        values = {
            "run_id": run_id,
            "batch_index": batch_index,
            "phase": required_text("phase", phase),
            "reason": reason,
            "measurements": list(measurements),
            "final": bool(final),
            "evaluated_at": aware_utc("evaluated_at", evaluated_at),
        }
        with write_transaction(self._engine) as conn:
            self._require_run(conn, run_id)
            new_id = inserted_id(conn.execute(gate_table.insert().values(**values)))
            if summary is not None:
                conn.execute(
                    verdicts_table.insert().values(
                        gate_id=new_id, run_id=run_id, summary=summary, segment=segment
                    )
                )
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            row = conn.execute(gate_query().where(gate_table.c.id == new_id)).one()
        return to_record(GateRecord, row, measurements=[])

    def gate_evaluations(
        self, run_id: str, batch_index: int | None = None, *, final_only: bool = False
    ) -> list[GateRecord]:
        """The run's gate evaluations in the order they were recorded."""
        query = gate_query().where(gate_table.c.run_id == run_id)
        if batch_index is not None:
            query = query.where(gate_table.c.batch_index == batch_index)
        if final_only:
            query = query.where(gate_table.c.final.is_(True))
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query.order_by(gate_table.c.id)).all()
        return [to_record(GateRecord, row, measurements=[]) for row in rows]

    def record_decision(
        self,
        run_id: str,
        *,
        batch_index: int | None,
        kind: str,
        decision: str,
        actor: str | None = None,
        via: str | None = None,
        detail: dict[str, Any] | None = None,
        decided_at: datetime | None = None,
        audit: AuditEntry | None = None,
    ) -> DecisionRecord:
        """Record a decision: the DAG's branch (`via` auto) or a person's (ui, api, cli)."""
        values = {
            "run_id": run_id,
            "batch_index": batch_index,
            "kind": member_of("kind", kind, DecisionKind),
            "decision": required_text("decision", decision),
            "actor": actor,
            "via": None if via is None else member_of("via", via, DecisionVia),
            "detail": dict(detail or {}),
            "decided_at": aware_utc("decided_at", decided_at),
        }
        with write_transaction(self._engine) as conn:
            self._require_run(conn, run_id)
            new_id = inserted_id(conn.execute(decisions_table.insert().values(**values)))
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            row = conn.execute(select(decisions_table).where(decisions_table.c.id == new_id)).one()
        return to_record(DecisionRecord, row, detail={})

    def decisions(self, run_id: str) -> list[DecisionRecord]:
        """The run's decisions in the order they were recorded."""
        query = (
            select(decisions_table)
            .where(decisions_table.c.run_id == run_id)
            .order_by(decisions_table.c.id)
        )
        with read_transaction(self._engine) as conn:
            return [to_record(DecisionRecord, row, detail={}) for row in conn.execute(query).all()]
