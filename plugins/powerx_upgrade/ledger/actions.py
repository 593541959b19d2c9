"""The ledger's tenant claims and tenant actions (upgrades, rollbacks, refusals)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Row, delete, select, update

from powerx_upgrade.ledger import clock
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
    write_transaction,
)
from powerx_upgrade.ledger.errors import InvalidLedgerValue, RunNotActive, TenantHeld
from powerx_upgrade.ledger.records import (
    FINISHED_ACTION_STATES,
    ActionKind,
    ActionRecord,
    ActionState,
    AuditEntry,
    RunStatus,
)
from powerx_upgrade.ledger.schema import actions as actions_table
from powerx_upgrade.ledger.schema import claims
from powerx_upgrade.ledger.schema import runs as runs_table


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
        kind = member_of("kind", kind, ActionKind)
        key = required_text("idempotency_key", idempotency_key)
        required_text("tenant_id", tenant_id)
        if not isinstance(to_version, str):  # "" is allowed: a rollback to an unknown version
            raise InvalidLedgerValue("to_version", to_version, "a string is required")
        with write_transaction(self._engine) as conn:
            # per tenant: the claim row's unique key already settles races with claim_tenants
            serialize_on(conn, f"powerx_ledger_tenant:{plugin}:{tenant_id}")
            existing = self._action_row(conn, key)
            if existing is not None:
                self._check_same_action(existing, run_id, plugin, tenant_id, kind)
                return action_record(existing)
            run = self._require_run(conn, run_id)
            self._check_plugin(run, plugin)
            self._guard_tenant(conn, run, tenant_id)
            row: dict[str, Any] = {
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
                "started_at": clock.now(),
            }
            insert_ignoring_conflicts(conn, actions_table, [row], ["idempotency_key"])
            return action_record(self._require_action(conn, key))

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
        state = member_of("state", state, ActionState)
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
                "finished_at": clock.now(),
                "attempts": row.attempts + 1 if attempts is None else attempts,
                "noop": bool(noop),
                "error": clip(error),
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
            return action_record(self._require_action(conn, idempotency_key))

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
