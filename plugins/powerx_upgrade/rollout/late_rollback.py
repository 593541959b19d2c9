"""Rolling back a run that has finished (the `plugin_upgrade_rollback` DAG): which run, which of
its tenants, and the records it leaves under that run (decision, audit, outcome `rolled_back`).

Airflow-free; `orchestration.rollback_dag` wires these into tasks. The tenant operations are
the rollout's own (`operations.rollback_shard`, `operations.verify_rollback`), keyed so that
they never collide with the run's own rollback (`<run>:rollback@<rollback dag run>:<tenant>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from powerx_upgrade.domain.models import RollbackScope
from powerx_upgrade.ledger import Ledger, UnknownRun
from powerx_upgrade.ledger.records import ControlKind, ControlRecord, RunOutcome, RunRecord
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.finalize import rollback_candidates
from powerx_upgrade.rollout.record import audit_entry

SCOPES: tuple[RollbackScope, ...] = ("all_upgraded", "batch", "failed_tenants")


class RollbackRefused(ValueError):
    """The rollback cannot go ahead; the message says why and what to give instead."""


@dataclass(frozen=True)
class LateRollbackContext(RunContext):
    """The finished run's context, for tenant operations done by a rollback DAG run `by_run`."""

    by_run: str = ""

    def key(self, kind: str, tenant: str) -> str:
        return f"{self.run_id}:{kind}@{self.by_run}:{tenant}"


def resolve_target_run(ledger: Ledger, *, run_id: str | None, plan_id: str | None) -> RunRecord:
    """The run to roll back: `run_id`, else the newest run of `plan_id` that upgraded tenants."""
    if run_id:
        run = ledger.get_run(run_id)
        if run is None:
            raise RollbackRefused(f"run_id {run_id!r}: no such run in the ledger")
        if plan_id and run.plan_id != plan_id:
            raise RollbackRefused(
                f"run_id {run_id!r} is a run of plan {run.plan_id!r}, not of plan_id {plan_id!r}"
            )
    elif plan_id:
        run = next((r for r in ledger.runs(plan_id=plan_id) if _upgraded_any(ledger, r)), None)
        if run is None:
            raise RollbackRefused(
                f"plan_id {plan_id!r}: no run of this plan upgraded a tenant; nothing to roll back"
            )
    else:
        raise RollbackRefused("give run_id (a run) or plan_id (its newest run that upgraded)")
    if run.dry_run:
        raise RollbackRefused(f"run {run.run_id!r} was a dry run: it touched no tenant")
    return run


def _upgraded_any(ledger: Ledger, run: RunRecord) -> bool:
    return not run.dry_run and any(
        not a.noop for a in ledger.actions(run.run_id, kind="upgrade", state="succeeded")
    )


def request_of(ledger: Ledger, run: RunRecord, request_id: Any) -> ControlRecord | None:
    """The rollback request (a control id) this DAG run serves, checked against the run."""
    if request_id in (None, ""):
        return None
    try:
        control = ledger.get_control(int(request_id))
    except (TypeError, ValueError):
        raise RollbackRefused(f"request_id {request_id!r} is not a control id") from None
    if control is None:
        raise RollbackRefused(f"request_id {request_id!r}: no such control in the ledger")
    if control.run_id != run.run_id or control.kind != ControlKind.ROLLBACK:
        raise RollbackRefused(
            f"request_id {request_id!r} is a {control.kind} request of run {control.run_id!r},"
            f" not a rollback request of run {run.run_id!r}"
        )
    return control


def context_for(
    run: RunRecord, *, by_run: str, actor: str | None, reason: str
) -> LateRollbackContext:
    return LateRollbackContext(
        run_id=run.run_id,
        dag_id=run.dag_id,
        plan_id=run.plan_id,
        plugin=run.plugin,
        target_version=run.target_version,
        reason=reason,
        triggered_by=actor,
        by_run=by_run,
    )


def failing_batch(
    ledger: Ledger, run: RunRecord, request: ControlRecord | None
) -> tuple[int | None, list[str]]:
    """The batch a `batch` / `failed_tenants` scope is about, and the tenants a gate blamed:
    the request's batch, else the run's last decision that did not promote (None: all)."""
    decisions = [
        d for d in ledger.decisions(run.run_id) if d.kind == "decide" and d.decision != "promote"
    ]
    last = decisions[-1] if decisions else None
    breaching = list((last.detail or {}).get("breaching", [])) if last else []
    if request is not None and request.batch_index is not None:
        return (
            request.batch_index,
            breaching if last and last.batch_index == request.batch_index else [],
        )
    return (last.batch_index if last else None), breaching


def late_targets(
    platform: Any,
    ledger: Ledger,
    ctx: RunContext,
    scope: RollbackScope,
    batch: int | None,
    breaching: list[str],
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The tenants to roll back, and those left alone because another active run holds them."""
    if scope not in SCOPES:
        raise RollbackRefused(f"scope {scope!r}: expected one of {', '.join(SCOPES)}")
    candidates = rollback_candidates(platform, ledger, ctx, scope, batch, breaching)
    held = {}
    for target in candidates:
        holder = ledger.tenant_holder(ctx.plugin, target["tenant"])
        if holder is not None and holder != ctx.run_id:
            held[target["tenant"]] = holder
    return [t for t in candidates if t["tenant"] not in held], held


def record_late_rollback(
    ledger: Ledger,
    ctx: LateRollbackContext,
    *,
    via: str,
    request: ControlRecord | None,
    scope: str,
    targets: list[dict[str, Any]],
    held: dict[str, str],
    verification: dict[str, Any],
    started_at: datetime,
) -> RunRecord:
    """The decision, the outcome (`rolled_back`, or `rollback_failed` when a tenant did not come
    back) with its audit record, and the request settled: all under the rolled-back run."""
    failed = [
        a.tenant_id
        for a in ledger.actions(ctx.run_id, kind="rollback", state="failed")
        if a.idempotency_key.startswith(f"{ctx.run_id}:rollback@{ctx.by_run}:")
    ]
    broken = verification.get("broken", [])
    outcome = RunOutcome.ROLLBACK_FAILED if failed or broken else RunOutcome.ROLLED_BACK
    summary = {
        "dag_run_id": ctx.by_run,
        "scope": scope,
        "reason": ctx.reason,
        "actor": ctx.triggered_by,
        "via": via,
        "control": request.id if request else None,
        "approval": request.approval_jti if request else None,
        "tenants": len(targets),
        "verified": len(verification.get("verified", [])),
        "failed": failed,
        "held": held,
        "duration_ms": verification.get("duration_ms"),
    }
    ledger.record_decision(
        ctx.run_id,
        batch_index=None,
        kind="rollback",
        decision="rollback",
        actor=ctx.triggered_by,
        via=via,
        decided_at=started_at,
        detail={**summary, "reason": f"rollback of the finished run: {ctx.reason}"},
    )
    if not targets and not failed:
        note = "no tenant of the run was on the new version: nothing to roll back"
        found = ledger.get_run(ctx.run_id)
        if found is None:  # resolve_target_run read it before the rollback began
            raise UnknownRun(ctx.run_id)
        run = found
    else:
        note = f"{len(targets)} tenant(s) rolled back by {ctx.by_run}: {outcome}"
        run = ledger.late_rollback(
            ctx.run_id,
            outcome=outcome,
            detail={
                "late_rollback": summary,
                "rollback_started_at": started_at.isoformat(),
                "rollback_scope": scope,
                "rollback_targets": targets,
                "rollback_verification": verification,
            },
            audit=audit_entry(
                ctx,
                "run.rolled_back.late",
                tenants=[t["tenant"] for t in targets],
                audit_id=f"{ctx.run_id}:late-rollback:{ctx.by_run}",
                details={**summary, "outcome": outcome},
            ),
        )
    for control in ledger.controls(ctx.run_id, kind=ControlKind.ROLLBACK, pending=True):
        ledger.settle_control(
            control.id,
            outcome="applied",
            note=note,
            applied_at=datetime.now(UTC),
            audit=audit_entry(
                ctx,
                "control.rollback.applied",
                actor=control.actor,
                audit_id=f"{ctx.run_id}:control:{control.id}:applied",
                details={"control": control.id, "via": control.via, "by": ctx.by_run},
            ),
        )
    return run
