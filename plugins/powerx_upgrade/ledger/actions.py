"""The ledger's tenant claims and tenant actions (upgrades, rollbacks, refusals)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, bindparam, delete, select, update

from powerx_upgrade.ledger import clock
from powerx_upgrade.ledger.action_rows import ActionRow, action_rows, action_rows_query
from powerx_upgrade.ledger.base import (
    LedgerBase,
    action_record,
    chunks,
    clip,
    member_of,
    required_text,
)
from powerx_upgrade.ledger.engine import (
    insert_ignoring_conflicts,
    read_transaction,
    serialize_on,
    serialize_on_all,
    write_transaction,
)
from powerx_upgrade.ledger.errors import (
    InvalidLedgerValue,
    RunNotActive,
    TenantHeld,
    UnknownAction,
)
from powerx_upgrade.ledger.records import (
    FINISHED_ACTION_STATES,
    ActionKind,
    ActionOutcome,
    ActionRecord,
    ActionStart,
    ActionState,
    AuditEntry,
    RunStatus,
)
from powerx_upgrade.ledger.schema import actions as actions_table
from powerx_upgrade.ledger.schema import audit_outbox, claims
from powerx_upgrade.ledger.schema import runs as runs_table

_FINISHED = (
    "state",
    "finished_at",
    "attempts",
    "noop",
    "error",
    "detail",
    "to_version",
    "config_after",
)
"""The action columns that recording an outcome sets."""


def _started_row(run: Row[Any], kind: str, start: ActionStart, now: Any) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "plugin": run.plugin,
        "tenant_id": start.tenant_id,
        "batch_index": start.batch_index,
        "kind": kind,
        "state": ActionState.STARTED.value,
        "from_version": start.from_version,
        "to_version": start.to_version,
        "from_config": start.from_config,
        "idempotency_key": start.idempotency_key,
        "attempts": 0,
        "noop": False,
        "detail": {},
        "started_at": now,
    }


def _finished_values(row: dict[str, Any], outcome: ActionOutcome) -> dict[str, Any]:
    """The columns an outcome sets on its action row (`row`: the row as it stands).

    `attempts` defaults to one more than before; `detail` is merged into the old detail; an
    earlier error that the new state replaces is kept under `detail["earlier_errors"]`."""
    merged = {**(row["detail"] or {}), **(outcome.detail or {})}
    if row["error"] and row["error"] != outcome.error:
        merged["earlier_errors"] = [*merged.get("earlier_errors", []), row["error"]]
    return {
        "state": outcome.state,
        "finished_at": clock.now(),
        "attempts": row["attempts"] + 1 if outcome.attempts is None else outcome.attempts,
        "noop": bool(outcome.noop),
        "error": clip(outcome.error),
        "detail": merged,
        "to_version": row["to_version"] if outcome.to_version is None else outcome.to_version,
        "config_after": (
            row["config_after"] if outcome.config_after is None else outcome.config_after
        ),
    }


class ActionRepository(LedgerBase):
    """Tenant claims (`powerx_ledger_tenant_claims`) and actions (`powerx_ledger_actions`)."""

    # -- tenant claims ------------------------------------------------------------------------

    def claim_tenants(self, run_id: str, plugin: str, tenant_ids: Iterable[str]) -> dict[str, str]:
        """Claim for `run_id` every tenant that no other active run holds.

        Returns `{refused tenant: holding run id}`. Claiming a tenant the run already holds is
        fine. Atomic against concurrent claimers: each tenant ends up with exactly one holder.
        """
        tenants = sorted({required_text("tenant_id", tenant) for tenant in tenant_ids})
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
        claimed_at = clock.now()
        refused: dict[str, str] = {}
        for chunk in chunks(tenants):
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

    def _guard_tenants(self, conn: Connection, run: Row[Any], tenant_ids: Sequence[str]) -> None:
        """Raise `TenantHeld` for the first tenant (by id) that another active run holds; claim
        the others for an active run (a finished run acts on free tenants without claiming)."""
        tenants = sorted(set(tenant_ids))
        mine: set[str] = set()
        for chunk in chunks(tenants):
            query = select(claims.c.tenant_id).where(
                claims.c.plugin == run.plugin,
                claims.c.tenant_id.in_(chunk),
                claims.c.run_id == run.run_id,
            )
            mine.update(conn.execute(query).scalars())
        rest = [tenant for tenant in tenants if tenant not in mine]
        if not rest:
            return  # the usual case: claim_tenants came first
        if run.status == RunStatus.FINISHED:
            held = self._holders(conn, run.plugin, rest, exclude_run=run.run_id)
        else:
            held = self._claim(conn, run.run_id, run.plugin, rest)
        if held:
            tenant = min(held)
            raise TenantHeld(run.plugin, tenant, run.run_id, held[tenant])

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
        start = ActionStart(
            tenant_id=tenant_id,
            idempotency_key=idempotency_key,
            to_version=to_version,
            batch_index=batch_index,
            from_version=from_version,
            from_config=from_config,
        )
        return self.begin_actions(run_id=run_id, plugin=plugin, kind=kind, starts=[start])[0]

    def begin_actions(
        self, *, run_id: str, plugin: str, kind: str, starts: Sequence[ActionStart]
    ) -> list[ActionRecord]:
        """`begin_action` for many tenants of one run in one transaction (a deploy or rollback
        shard), records in the order given. The same rules apply to each start; the first that
        breaks one (`IdempotencyConflict`, `TenantHeld`, a bad value) aborts the whole batch,
        so nothing of it is written."""
        kind = member_of("kind", kind, ActionKind)
        for start in starts:
            required_text("idempotency_key", start.idempotency_key)
            required_text("tenant_id", start.tenant_id)
            if not isinstance(start.to_version, str):  # "" is allowed: rollback to unknown
                raise InvalidLedgerValue("to_version", start.to_version, "a string is required")
        if not starts:
            return []
        keys = [start.idempotency_key for start in starts]
        with write_transaction(self._engine) as conn:
            run = self._require_run(conn, run_id)
            self._check_plugin(run, plugin)
            # per tenant: the claim row's unique key already settles races with claim_tenants
            tenants = sorted({start.tenant_id for start in starts})
            serialize_on_all(conn, [f"powerx_ledger_tenant:{plugin}:{t}" for t in tenants])
            existing = self._action_rows(conn, keys)
            new: dict[str, ActionStart] = {}
            for start in starts:
                if start.idempotency_key not in existing:
                    new.setdefault(start.idempotency_key, start)
            self._guard_tenants(conn, run, [start.tenant_id for start in new.values()])
            now = clock.now()
            rows = [_started_row(run, kind, start, now) for start in new.values()]
            insert_ignoring_conflicts(conn, actions_table, rows, ["idempotency_key"])
            found = self._action_rows(conn, keys)
            for start in starts:
                row = found[start.idempotency_key]
                self._check_same_action(row, run_id, plugin, start.tenant_id, kind)
            return [action_record(found[key]) for key in keys]

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
        outcome = ActionOutcome(
            idempotency_key=idempotency_key,
            state=state,
            to_version=to_version,
            config_after=config_after,
            error=error,
            attempts=attempts,
            noop=noop,
            detail=detail,
            audit=audit,
        )
        return self.finish_actions([outcome])[0]

    def finish_actions(self, outcomes: Sequence[ActionOutcome]) -> list[ActionRecord]:
        """`finish_action` for many actions in one transaction, each with its audit record:
        all are written or none (a crash before the commit leaves them `started`, and a
        replay of their idempotency keys settles them). Records in the order given."""
        for outcome in outcomes:
            state = member_of("state", outcome.state, ActionState)
            if state not in FINISHED_ACTION_STATES:
                raise InvalidLedgerValue("state", state, FINISHED_ACTION_STATES)
            attempts = outcome.attempts
            if attempts is not None and (not isinstance(attempts, int) or attempts < 0):
                raise InvalidLedgerValue("attempts", attempts, "a non-negative integer")
        if not outcomes:
            return []
        keys = [outcome.idempotency_key for outcome in outcomes]
        with write_transaction(self._engine) as conn:
            locked = self._action_rows(conn, keys, lock=True)
            rows = {key: dict(row._mapping) for key, row in locked.items()}
            changes: list[dict[str, Any]] = []
            audits: list[dict[str, Any]] = []
            for outcome in outcomes:
                row = rows.get(outcome.idempotency_key)
                if row is None:
                    raise UnknownAction(outcome.idempotency_key)
                row.update(_finished_values(row, outcome))  # a key twice: the later one wins
                changes.append({"key": outcome.idempotency_key, **{c: row[c] for c in _FINISHED}})
                if outcome.audit is not None:
                    audits.append(self._audit_row(outcome.audit, row["run_id"]))
            table = actions_table
            conn.execute(
                update(table)
                .where(table.c.idempotency_key == bindparam("key"))
                .values({c: bindparam(c) for c in _FINISHED}),
                changes,
            )
            insert_ignoring_conflicts(conn, audit_outbox, audits, ["audit_id"])
            found = self._action_rows(conn, keys)
            return [action_record(found[key]) for key in keys]

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
        required_text("tenant_id", tenant_id)
        key = f"refused:{run_id}:{plugin}:{tenant_id}:{batch_index}"
        with write_transaction(self._engine) as conn:
            existing = self._action_row(conn, key)
            if existing is not None:
                return action_record(existing)
            run = self._require_run(conn, run_id)
            self._check_plugin(run, plugin)
            holder = self._holders(conn, plugin, [tenant_id], exclude_run=run_id).get(tenant_id)
            now = clock.now()
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
                "error": clip(required_text("reason", reason)),
                "detail": {"held_by": holder} if holder else {},
                "started_at": now,
                "finished_at": now,
            }
            insert_ignoring_conflicts(conn, actions_table, [row], ["idempotency_key"])
            if audit is not None:
                self._enqueue(conn, audit, run_id)
            return action_record(self._require_action(conn, key))

    def get_action(self, idempotency_key: str) -> ActionRecord | None:
        with read_transaction(self._engine) as conn:
            row = self._action_row(conn, idempotency_key)
        return None if row is None else action_record(row)

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
            conditions.append(table.c.kind == member_of("kind", kind, ActionKind))
        if batch_index is not None:
            conditions.append(table.c.batch_index == batch_index)
        if state is not None:
            conditions.append(table.c.state == member_of("state", state, ActionState))
        if tenant_id is not None:
            conditions.append(table.c.tenant_id == tenant_id)
        query = select(table).where(*conditions).order_by(table.c.id)
        with read_transaction(self._engine) as conn:
            return [action_record(row) for row in conn.execute(query).all()]

    def action_rows(self, run_id: str) -> list[ActionRow]:
        """The run's tenant actions as light rows, in the order they began (by id): a read-only
        path for the report of a whole fleet (200,000 actions at 100,000 tenants), where
        `actions` spends most of its time building records and decoding `{}` details."""
        with read_transaction(self._engine) as conn:
            return action_rows(conn.execute(action_rows_query(run_id)).all())
