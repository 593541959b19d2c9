"""The ledger: runs, tenant claims, per-tenant actions, gate evaluations, decisions and the
audit outbox of every rollout, in one database shared by all of a run's task processes.

Every public method is one short transaction. Writes that read before they write (claims,
idempotent begins) run under `BEGIN IMMEDIATE` on SQLite and an advisory lock on PostgreSQL;
unique keys stay the final guard either way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Self, TypeVar

from sqlalchemy import ColumnElement, Connection, Row, delete, inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from powerx_upgrade.ledger import schema
from powerx_upgrade.ledger.engine import (
    create_ledger_engine,
    default_ledger_url,
    insert_ignoring_conflicts,
    normalize_url,
    read_transaction,
    serialize_on,
    write_transaction,
)
from powerx_upgrade.ledger.errors import (
    ApprovalReplayed,
    IdempotencyConflict,
    InvalidLedgerValue,
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
    CONTROL_VIAS,
    FINISHED_ACTION_STATES,
    ActionKind,
    ActionRecord,
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
from powerx_upgrade.ledger.schema import actions as actions_table
from powerx_upgrade.ledger.schema import approvals as approvals_table
from powerx_upgrade.ledger.schema import audit_outbox, claims
from powerx_upgrade.ledger.schema import controls as controls_table
from powerx_upgrade.ledger.schema import decisions as decisions_table
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


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(field: str, value: datetime | None) -> datetime:
    if value is None:
        return _now()
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidLedgerValue(field, value, "a timezone-aware datetime is required")
    return value.astimezone(UTC)


def _member(field: str, value: object, enum: type[_E]) -> str:
    try:
        return enum(value).value
    except ValueError:
        raise InvalidLedgerValue(field, value, [member.value for member in enum]) from None


def _text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidLedgerValue(field, value, "a non-empty string is required")
    return value


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= _TEXT_LIMIT:
        return text
    return text[: _TEXT_LIMIT - 20] + " ... [truncated]"


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _to(cls: type[_R], row: Row[Any], **defaults: Any) -> _R:
    values = dict(row._mapping)
    values.pop("seq", None)
    for name, default in defaults.items():
        if values.get(name) is None:
            values[name] = default
    return cls(**values)


def _gate_query() -> Any:
    """Gate records with their verdict text, when they have one."""
    joined = gate_table.outerjoin(verdicts_table, verdicts_table.c.gate_id == gate_table.c.id)
    return select(gate_table, verdicts_table.c.summary, verdicts_table.c.segment).select_from(
        joined
    )


def _run(row: Row[Any]) -> RunRecord:
    return _to(RunRecord, row, conf={}, detail={})


def _action(row: Row[Any]) -> ActionRecord:
    return _to(ActionRecord, row, detail={})


def _audit(row: Row[Any]) -> AuditRecord:
    return _to(AuditRecord, row, payload={})


class Ledger:
    """The durable record of every rollout; one instance per process, safe to share by threads.

    :param url: an SQLAlchemy URL (`postgresql+psycopg2://...`, `sqlite:////abs/path.db`);
        Airflow's `postgres://` form is accepted. Default: `default_ledger_url()`.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = normalize_url(url) if url else default_ledger_url()
        self._engine = create_ledger_engine(self.url)
        self._ensure_schema()

    def __repr__(self) -> str:
        return f"Ledger({self._engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections (the ledger reconnects if used again)."""
        self._engine.dispose()

    # -- schema -------------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        wanted = set(schema.metadata.tables)
        with read_transaction(self._engine) as conn:
            missing = wanted - set(inspect(conn).get_table_names())
            version = None if missing else self._schema_version(conn)
        if missing or version is None:
            # tables are created once, under the write lock, so that processes racing to
            # open a fresh database do not trip over each other's CREATE TABLE
            with write_transaction(self._engine) as conn:
                serialize_on(conn, "powerx_ledger_schema")
                schema.metadata.create_all(conn)
                insert_ignoring_conflicts(
                    conn,
                    schema.meta,
                    [{"key": "schema_version", "value": schema.SCHEMA_VERSION}],
                    ["key"],
                )
                version = self._schema_version(conn)
        if version != schema.SCHEMA_VERSION:
            shown = self._engine.url.render_as_string(hide_password=True)
            raise SchemaMismatch(shown, str(version), schema.SCHEMA_VERSION)

    @staticmethod
    def _schema_version(conn: Connection) -> str | None:
        try:
            query = select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            return conn.execute(query).scalar_one_or_none()
        except (OperationalError, ProgrammingError):  # pragma: no cover - a foreign table
            return None

    # -- runs ---------------------------------------------------------------------------------

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
    ) -> RunRecord:
        """Record a run's start; for a run id already recorded, return that record unchanged.

        `audit` is enqueued in the same transaction, and only when the run is new.
        """
        values = {
            "run_id": _text("run_id", run_id),
            "dag_id": _text("dag_id", dag_id),
            "plan_id": _text("plan_id", plan_id),
            "plugin": _text("plugin", plugin),
            "target_version": _text("target_version", target_version),
            "artifact_uri": artifact_uri,
            "artifact_sha256": artifact_sha256,
            "triggered_by": triggered_by,
            "reason": reason,
            "dry_run": bool(dry_run),
            "conf": dict(conf or {}),
            "status": RunStatus.RUNNING.value,
            "detail": {},
            "started_at": _aware("started_at", started_at),
        }
        with write_transaction(self._engine) as conn:
            serialize_on(conn, f"powerx_ledger_run:{run_id}")
            existing = self._run_row(conn, run_id)
            if existing is not None:
                return _run(existing)
            conn.execute(runs_table.insert().values(**values))
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            return _run(self._require_run(conn, run_id))

    def get_run(self, run_id: str) -> RunRecord | None:
        with read_transaction(self._engine) as conn:
            row = self._run_row(conn, run_id)
        return None if row is None else _run(row)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set some of a run's fields (`RUN_UPDATABLE_FIELDS`); values replace the old ones.

        `status` may be any in-between status (`paused`, `rolling_back`, ...), but not
        `finished`: only `finish_run` ends a run, so that it also records the outcome.
        """
        unknown = set(fields) - RUN_UPDATABLE_FIELDS
        if unknown:
            raise InvalidLedgerValue("run field", sorted(unknown)[0], RUN_UPDATABLE_FIELDS)
        if "status" in fields:
            status = _text("status", fields["status"])
            if status == RunStatus.FINISHED:
                raise InvalidLedgerValue("status", status, "use finish_run() to finish a run")
        if "target_version" in fields:
            _text("target_version", fields["target_version"])
        if not fields:
            return
        with write_transaction(self._engine) as conn:
            result = conn.execute(
                update(runs_table).where(runs_table.c.run_id == run_id).values(**fields)
            )
            if result.rowcount == 0:
                raise UnknownRun(run_id)

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
        outcome = _member("outcome", outcome, RunOutcome)
        ended = _aware("ended_at", ended_at)
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
            return _run(self._require_run(conn, run_id))

    def active_runs(self, plugin: str | None = None) -> list[RunRecord]:
        """Runs not finished yet, oldest first."""
        query = select(runs_table).where(runs_table.c.status != RunStatus.FINISHED.value)
        if plugin is not None:
            query = query.where(runs_table.c.plugin == plugin)
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query.order_by(runs_table.c.started_at, runs_table.c.run_id)).all()
        return [_run(row) for row in rows]

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
            return [_run(row) for row in conn.execute(query).all()]

    # -- tenant claims ------------------------------------------------------------------------

    def claim_tenants(self, run_id: str, plugin: str, tenant_ids: Iterable[str]) -> dict[str, str]:
        """Claim for `run_id` every tenant that no other active run holds.

        Returns `{refused tenant: holding run id}`. Claiming a tenant the run already holds is
        fine. Atomic against concurrent claimers: each tenant ends up with exactly one holder.
        """
        tenants = sorted({_text("tenant_id", tenant) for tenant in tenant_ids})
        with write_transaction(self._engine) as conn:
            run = self._require_run(conn, run_id)
            self._check_plugin(run, plugin)
            if run.status == RunStatus.FINISHED:
                raise RunNotActive(run_id, run.outcome)
            serialize_on(conn, f"powerx_ledger_claims:{plugin}")
            return self._claim(conn, run_id, plugin, tenants)

    def release_tenants(self, run_id: str) -> int:
        """Release every tenant the run holds; returns how many. `finish_run` does this too."""
        with write_transaction(self._engine) as conn:
            return conn.execute(delete(claims).where(claims.c.run_id == run_id)).rowcount

    def claimed_tenants(self, run_id: str) -> list[str]:
        """The tenants the run holds, sorted."""
        query = select(claims.c.tenant_id).where(claims.c.run_id == run_id)
        with read_transaction(self._engine) as conn:
            return sorted(conn.execute(query).scalars())

    def tenant_holder(self, plugin: str, tenant_id: str) -> str | None:
        """The id of the active run holding the tenant, if any."""
        with read_transaction(self._engine) as conn:
            return self._holders(conn, plugin, [tenant_id], exclude_run=None).get(tenant_id)

    def _claim(
        self, conn: Connection, run_id: str, plugin: str, tenants: Sequence[str]
    ) -> dict[str, str]:
        finished = select(runs_table.c.run_id).where(
            runs_table.c.status == RunStatus.FINISHED.value
        )
        claimed_at = _now()
        refused: dict[str, str] = {}
        for chunk in _chunks(tenants):
            # claims of finished runs are normally gone already (finish_run releases them)
            conn.execute(
                delete(claims).where(
                    claims.c.plugin == plugin,
                    claims.c.tenant_id.in_(chunk),
                    claims.c.run_id.in_(finished),
                )
            )
            rows = [
                {"plugin": plugin, "tenant_id": t, "run_id": run_id, "claimed_at": claimed_at}
                for t in chunk
            ]
            insert_ignoring_conflicts(conn, claims, rows, ["plugin", "tenant_id"])
            refused.update(self._holders(conn, plugin, chunk, exclude_run=run_id))
        return refused

    def _guard_tenant(self, conn: Connection, run: Row[Any], tenant_id: str) -> None:
        """Raise `TenantHeld` if another active run holds the tenant; else claim it for an
        active run (a finished run acts on free tenants without claiming them)."""
        query = select(claims.c.run_id).where(
            claims.c.plugin == run.plugin, claims.c.tenant_id == tenant_id
        )
        if conn.execute(query).scalar_one_or_none() == run.run_id:
            return  # the usual case: claim_tenants came first
        if run.status == RunStatus.FINISHED:
            held = self._holders(conn, run.plugin, [tenant_id], exclude_run=run.run_id)
        else:
            held = self._claim(conn, run.run_id, run.plugin, [tenant_id])
        if held:
            raise TenantHeld(run.plugin, tenant_id, run.run_id, held[tenant_id])

    @staticmethod
    def _holders(
        conn: Connection, plugin: str, tenants: Sequence[str], *, exclude_run: str | None
    ) -> dict[str, str]:
        query = (
            select(claims.c.tenant_id, claims.c.run_id)
            .join(runs_table, runs_table.c.run_id == claims.c.run_id)
            .where(
                claims.c.plugin == plugin,
                claims.c.tenant_id.in_(tenants),
                runs_table.c.status != RunStatus.FINISHED.value,
            )
        )
        if exclude_run is not None:
            query = query.where(claims.c.run_id != exclude_run)
        return {tenant: holder for tenant, holder in conn.execute(query).all()}

    # -- tenant actions -----------------------------------------------------------------------

    def begin_action(
        self,
        *,
        run_id: str,
        plugin: str,
        tenant_id: str,
        batch_index: int | None,
        kind: str,
        from_version: str | None,
        to_version: str,
        idempotency_key: str,
        from_config: str | None = None,
    ) -> ActionRecord:
        """Record that an upgrade or rollback of a tenant starts, unless its key is known.

        For a known key the existing record comes back unchanged: its `state` tells whether
        the action already succeeded. A key reused for another run, plugin, tenant or kind
        raises `IdempotencyConflict`. A new action on a tenant that another active run holds
        raises `TenantHeld` (record a refusal instead); an unheld tenant is claimed for the
        run while the run is active.
        """
        kind = _member("kind", kind, ActionKind)
        key = _text("idempotency_key", idempotency_key)
        _text("tenant_id", tenant_id)
        if not isinstance(to_version, str):  # "" is allowed: a rollback to an unknown version
            raise InvalidLedgerValue("to_version", to_version, "a string is required")
        with write_transaction(self._engine) as conn:
            # per tenant: the claim row's unique key already settles races with claim_tenants
            serialize_on(conn, f"powerx_ledger_tenant:{plugin}:{tenant_id}")
            existing = self._action_row(conn, key)
            if existing is not None:
                self._check_same_action(existing, run_id, plugin, tenant_id, kind)
                return _action(existing)
            run = self._require_run(conn, run_id)
            self._check_plugin(run, plugin)
            self._guard_tenant(conn, run, tenant_id)
            row = {
                "run_id": run_id,
                "plugin": plugin,
                "tenant_id": tenant_id,
                "batch_index": batch_index,
                "kind": kind,
                "state": ActionState.STARTED.value,
                "from_version": from_version,
                "to_version": to_version,
                "from_config": from_config,
                "idempotency_key": key,
                "attempts": 0,
                "noop": False,
                "detail": {},
                "started_at": _now(),
            }
            insert_ignoring_conflicts(conn, actions_table, [row], ["idempotency_key"])
            return _action(self._require_action(conn, key))

    def finish_action(
        self,
        idempotency_key: str,
        state: str,
        *,
        to_version: str | None = None,
        config_after: str | None = None,
        error: str | None = None,
        attempts: int | None = None,
        noop: bool = False,
        detail: dict[str, Any] | None = None,
        audit: AuditEntry | None = None,
    ) -> ActionRecord:
        """Record how an action ended (succeeded, failed, skipped, refused) and when.

        `attempts` defaults to one more than before; `detail` is merged into the old detail;
        an earlier error that the new state replaces is kept under `detail["earlier_errors"]`.
        """
        state = _member("state", state, ActionState)
        if state not in FINISHED_ACTION_STATES:
            raise InvalidLedgerValue("state", state, FINISHED_ACTION_STATES)
        if attempts is not None and (not isinstance(attempts, int) or attempts < 0):
            raise InvalidLedgerValue("attempts", attempts, "a non-negative integer")
        with write_transaction(self._engine) as conn:
            row = self._require_action(conn, idempotency_key, lock=True)
            merged = {**(row.detail or {}), **(detail or {})}
            if row.error and row.error != error:
                merged["earlier_errors"] = [*merged.get("earlier_errors", []), row.error]
            values: dict[str, Any] = {
                "state": state,
                "finished_at": _now(),
                "attempts": row.attempts + 1 if attempts is None else attempts,
                "noop": bool(noop),
                "error": _clip(error),
                "detail": merged,
            }
            if to_version is not None:
                values["to_version"] = to_version
            if config_after is not None:
                values["config_after"] = config_after
            conn.execute(
                update(actions_table)
                .where(actions_table.c.idempotency_key == idempotency_key)
                .values(**values)
            )
            if audit is not None:
                self._enqueue(conn, audit, row.run_id)
            return _action(self._require_action(conn, idempotency_key))

    def record_refusal(
        self,
        *,
        run_id: str,
        plugin: str,
        tenant_id: str,
        batch_index: int | None,
        reason: str,
        audit: AuditEntry | None = None,
    ) -> ActionRecord:
        """Record that the run did not touch a tenant because another run holds it.

        An upgrade action in state `refused`, with the reason as its error and the holding run
        (if still active) in `detail["held_by"]`. Recording the same refusal again (same run,
        tenant and batch) returns the first record.
        """
        _text("tenant_id", tenant_id)
        key = f"refused:{run_id}:{plugin}:{tenant_id}:{batch_index}"
        with write_transaction(self._engine) as conn:
            existing = self._action_row(conn, key)
            if existing is not None:
                return _action(existing)
            run = self._require_run(conn, run_id)
            self._check_plugin(run, plugin)
            holder = self._holders(conn, plugin, [tenant_id], exclude_run=run_id).get(tenant_id)
            now = _now()
            row = {
                "run_id": run_id,
                "plugin": plugin,
                "tenant_id": tenant_id,
                "batch_index": batch_index,
                "kind": ActionKind.UPGRADE.value,
                "state": ActionState.REFUSED.value,
                "to_version": run.target_version,
                "idempotency_key": key,
                "attempts": 0,
                "noop": False,
                "error": _clip(_text("reason", reason)),
                "detail": {"held_by": holder} if holder else {},
                "started_at": now,
                "finished_at": now,
            }
            insert_ignoring_conflicts(conn, actions_table, [row], ["idempotency_key"])
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            return _action(self._require_action(conn, key))

    def get_action(self, idempotency_key: str) -> ActionRecord | None:
        with read_transaction(self._engine) as conn:
            row = self._action_row(conn, idempotency_key)
        return None if row is None else _action(row)

    def actions(
        self,
        run_id: str,
        *,
        kind: str | None = None,
        batch_index: int | None = None,
        state: str | None = None,
        tenant_id: str | None = None,
    ) -> list[ActionRecord]:
        """The run's tenant actions, in the order they began (by id)."""
        table = actions_table
        conditions: list[ColumnElement[bool]] = [table.c.run_id == run_id]
        if kind is not None:
            conditions.append(table.c.kind == _member("kind", kind, ActionKind))
        if batch_index is not None:
            conditions.append(table.c.batch_index == batch_index)
        if state is not None:
            conditions.append(table.c.state == _member("state", state, ActionState))
        if tenant_id is not None:
            conditions.append(table.c.tenant_id == tenant_id)
        query = select(table).where(*conditions).order_by(table.c.id)
        with read_transaction(self._engine) as conn:
            return [_action(row) for row in conn.execute(query).all()]

    # -- gates and decisions ------------------------------------------------------------------

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
            "phase": _text("phase", phase),
            "reason": reason,
            "measurements": list(measurements),
            "final": bool(final),
            "evaluated_at": _aware("evaluated_at", evaluated_at),
        }
        with write_transaction(self._engine) as conn:
            self._require_run(conn, run_id)
            new_id = conn.execute(gate_table.insert().values(**values)).inserted_primary_key[0]
            if summary is not None:
                conn.execute(
                    verdicts_table.insert().values(
                        gate_id=new_id, run_id=run_id, summary=summary, segment=segment
                    )
                )
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            row = conn.execute(_gate_query().where(gate_table.c.id == new_id)).one()
        return _to(GateRecord, row, measurements=[])

    def gate_evaluations(
        self, run_id: str, batch_index: int | None = None, *, final_only: bool = False
    ) -> list[GateRecord]:
        """The run's gate evaluations in the order they were recorded."""
        query = _gate_query().where(gate_table.c.run_id == run_id)
        if batch_index is not None:
            query = query.where(gate_table.c.batch_index == batch_index)
        if final_only:
            query = query.where(gate_table.c.final.is_(True))
        with read_transaction(self._engine) as conn:
            rows = conn.execute(query.order_by(gate_table.c.id)).all()
        return [_to(GateRecord, row, measurements=[]) for row in rows]

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
            "kind": _member("kind", kind, DecisionKind),
            "decision": _text("decision", decision),
            "actor": actor,
            "via": None if via is None else _member("via", via, DecisionVia),
            "detail": dict(detail or {}),
            "decided_at": _aware("decided_at", decided_at),
        }
        with write_transaction(self._engine) as conn:
            self._require_run(conn, run_id)
            new_id = conn.execute(decisions_table.insert().values(**values)).inserted_primary_key[0]
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            row = conn.execute(select(decisions_table).where(decisions_table.c.id == new_id)).one()
        return _to(DecisionRecord, row, detail={})

    def decisions(self, run_id: str) -> list[DecisionRecord]:
        """The run's decisions in the order they were recorded."""
        query = (
            select(decisions_table)
            .where(decisions_table.c.run_id == run_id)
            .order_by(decisions_table.c.id)
        )
        with read_transaction(self._engine) as conn:
            return [_to(DecisionRecord, row, detail={}) for row in conn.execute(query).all()]

    # -- audit outbox -------------------------------------------------------------------------

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

    def pending_audit(self, limit: int = 500) -> list[AuditRecord]:
        """Undelivered audit records, oldest first."""
        query = (
            select(audit_outbox)
            .where(audit_outbox.c.delivered_at.is_(None))
            .order_by(audit_outbox.c.seq)
            .limit(limit)
        )
        with read_transaction(self._engine) as conn:
            return [_audit(row) for row in conn.execute(query).all()]

    def mark_audit_delivered(self, audit_id: str, delivered_at: datetime | None = None) -> None:
        """Mark a record delivered; marking it again keeps the first delivery time."""
        when = _aware("delivered_at", delivered_at)
        with write_transaction(self._engine) as conn:
            self._require_audit(conn, audit_id)
            conn.execute(
                update(audit_outbox)
                .where(audit_outbox.c.audit_id == audit_id, audit_outbox.c.delivered_at.is_(None))
                .values(delivered_at=when)
            )

    def mark_audit_failed(self, audit_id: str, error: str) -> None:
        """Count a failed delivery attempt and keep its error; the record stays pending."""
        with write_transaction(self._engine) as conn:
            self._require_audit(conn, audit_id)
            conn.execute(
                update(audit_outbox)
                .where(audit_outbox.c.audit_id == audit_id, audit_outbox.c.delivered_at.is_(None))
                .values(attempts=audit_outbox.c.attempts + 1, last_error=_clip(error))
            )

    def audit_records(self, run_id: str | None = None) -> list[AuditRecord]:
        """Every audit record (of one run, when given), oldest first."""
        query = select(audit_outbox)
        if run_id is not None:
            query = query.where(audit_outbox.c.run_id == run_id)
        with read_transaction(self._engine) as conn:
            return [_audit(row) for row in conn.execute(query.order_by(audit_outbox.c.seq))]

    def prune_audit(
        self, older_than: timedelta = AUDIT_RETENTION_FLOOR, *, now: datetime | None = None
    ) -> int:
        """Delete delivered audit records created more than `older_than` ago; returns how many.

        Undelivered records are never pruned, whatever their age. A retention shorter than
        `AUDIT_RETENTION_FLOOR` (365 days) raises `RetentionTooShort`.
        """
        if older_than < AUDIT_RETENTION_FLOOR:
            raise RetentionTooShort(older_than, AUDIT_RETENTION_FLOOR)
        cutoff = _aware("now", now) - older_than
        with write_transaction(self._engine) as conn:
            result = conn.execute(
                delete(audit_outbox).where(
                    audit_outbox.c.delivered_at.is_not(None), audit_outbox.c.created_at < cutoff
                )
            )
            return result.rowcount

    def _enqueue(self, conn: Connection, entry: AuditEntry, run_id: str | None) -> str:
        audit_id = entry.audit_id or uuid.uuid4().hex
        if len(_text("audit_id", audit_id)) > 64:
            raise InvalidLedgerValue("audit_id", audit_id, "at most 64 characters")
        if not isinstance(entry.payload, Mapping):
            raise InvalidLedgerValue("payload", entry.payload, "a dict is required")
        row = {
            "audit_id": audit_id,
            "run_id": run_id,
            "event": _text("event", entry.event),
            "payload": mask_secrets(dict(entry.payload)),
            "created_at": _now(),
            "attempts": 0,
        }
        insert_ignoring_conflicts(conn, audit_outbox, [row], ["audit_id"])
        return audit_id

    # -- controls -----------------------------------------------------------------------------

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
        kind = _member("kind", kind, ControlKind)
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
                "requested_at": _now(),
            }
            new_id = conn.execute(controls_table.insert().values(**values)).inserted_primary_key[0]
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
            query = query.where(table.c.kind == _member("kind", kind, ControlKind))
        if pending is True:
            query = query.where(table.c.applied_at.is_(None))
        elif pending is False:
            query = query.where(table.c.applied_at.is_not(None))
        with read_transaction(self._engine) as conn:
            return [
                _to(ControlRecord, row, payload={})
                for row in conn.execute(query.order_by(table.c.id))
            ]

    def get_control(self, control_id: int) -> ControlRecord | None:
        with read_transaction(self._engine) as conn:
            row = conn.execute(
                select(controls_table).where(controls_table.c.id == control_id)
            ).one_or_none()
        return None if row is None else _to(ControlRecord, row, payload={})

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
        outcome = _member("outcome", outcome, ControlOutcome)
        when = _aware("applied_at", applied_at)
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
                .values(applied_at=when, outcome=outcome, note=_clip(note))
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
        outcome = _member("outcome", outcome, RunOutcome)
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
            return _run(self._require_run(conn, run_id))

    @staticmethod
    def _control(conn: Connection, control_id: int) -> ControlRecord:
        row = conn.execute(select(controls_table).where(controls_table.c.id == control_id)).one()
        return _to(ControlRecord, row, payload={})

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
        values = {
            "jti": _text("jti", jti),
            "action": _text("action", action),
            "plan_id": _text("plan_id", plan_id),
            "run_id": run_id,
            "subject": _text("subject", subject),
            "via": None if via is None else _member("via", via, DecisionVia),
            "mfa": bool(mfa),
            "issued_at": None if issued_at is None else _aware("issued_at", issued_at),
            "expires_at": _aware("expires_at", expires_at),
            "used_at": _aware("used_at", used_at),
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
        return _to(ApprovalRecord, row, detail={})

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
        return [_to(ApprovalRecord, row, detail={}) for row in rows]

    # -- row helpers --------------------------------------------------------------------------

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
