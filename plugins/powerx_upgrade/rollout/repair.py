"""Reconcile's repairs (`--fix`): what can be settled without a human, planned as data first
(a dry run prints the plan), then applied, each fix audited.

A run is **dead** when nothing will ever finish it: the ledger says it finished, or the ledger
still calls it active but its Airflow DAG run is `success` or `failed` or no longer exists (the
caller reads Airflow and passes the states). An active run whose DAG run Airflow was not asked
about, or is queued/running, is never dead, however old (reconcile lists it as `stuck_run`).

The fixes:
- `finish_run`: a dead run the ledger still calls active is finished with outcome `failed`
  (detail `reconciled`), which releases its tenant claims.
- `release_claims`: a run the ledger calls finished that still holds tenants gives them up.
- `settle_action`: an upgrade or rollback of a dead run that never finished is settled from the
  platform's own word: the tenant is `ready` on the action's target version -> `succeeded`; on
  the version it came from -> `failed` ("not applied"). On any other version or state it stays
  unsettled for a human (reconcile keeps reporting it).
- `redeliver_audit`: the audit outbox is delivered now (oldest first, idempotent by id).

`settle_failed_run` applies these fixes to one run the moment Airflow reports its DAG run
failed (the plugin's `on_dag_run_failed` listener: a run marked failed from outside never
reaches `finalize`), so its tenants are freed without waiting for an operator's reconcile.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.record import AuditClient, Recorder, audit_payload, stable_id

DEAD_DAG_RUN_STATES = frozenset({"success", "failed"})
AUDIT_PREFIX = "reconcile.fix."
ACTOR = "reconcile"


@dataclass(frozen=True)
class Fix:
    kind: str
    message: str
    run_id: str | None = None
    tenant: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dead_reason(run: Any, dag_run_states: Mapping[str, str | None]) -> str | None:
    """Why the run is dead (see the module), or None when it may still be going."""
    if not run.active:
        return f"the ledger says it finished (outcome {run.outcome})"
    if run.run_id not in dag_run_states:
        return None
    state = dag_run_states[run.run_id]
    if state is None:
        return f"its Airflow DAG run {run.dag_id}/{run.run_id} no longer exists"
    if state in DEAD_DAG_RUN_STATES:
        return f"its Airflow DAG run is {state} but the ledger still calls it {run.status}"
    return None


def plan_fixes(
    ledger: Ledger,
    runs: Iterable[Any],
    fleet: Mapping[str, Mapping[str, Any]],
    *,
    dag_run_states: Mapping[str, str | None],
) -> list[Fix]:
    """The fixes reconcile can make for these runs, in the order they are applied."""
    fixes: list[Fix] = []
    for run in runs:
        why = dead_reason(run, dag_run_states)
        if why is None:
            continue
        held = ledger.claimed_tenants(run.run_id)
        if run.active:
            fixes.append(
                Fix(
                    "finish_run",
                    f"finish run {run.run_id} as failed and release its {len(held)} "
                    f"claimed tenant(s): {why}",
                    run.run_id,
                    data={"why": why, "tenants": held, "plugin": run.plugin},
                )
            )
        elif held:
            fixes.append(
                Fix(
                    "release_claims",
                    f"release the {len(held)} tenant(s) finished run {run.run_id} still holds",
                    run.run_id,
                    data={"why": why, "tenants": held, "plugin": run.plugin},
                )
            )
        fixes += _settlements(ledger, run, fleet)
    pending = ledger.pending_audit(limit=100_000)
    if pending:
        fixes.append(
            Fix(
                "redeliver_audit",
                f"deliver the {len(pending)} audit record(s) waiting in the outbox (oldest "
                f"{min(r.created_at for r in pending).isoformat()})",
                data={"records": len(pending)},
            )
        )
    return fixes


def _settlements(ledger: Ledger, run: Any, fleet: Mapping[str, Mapping[str, Any]]) -> list[Fix]:
    fixes = []
    for action in ledger.actions(run.run_id, state="started"):
        seen = fleet.get(action.tenant_id) or {}
        version, state = seen.get("version"), seen.get("state", "ready")
        if state != "ready" or version is None:
            continue
        if version == action.to_version:
            settled, note = "succeeded", f"the platform shows it on {version}: applied"
        elif version == action.from_version:
            settled, note = "failed", f"the platform shows it still on {version}: not applied"
        else:
            continue
        fixes.append(
            Fix(
                "settle_action",
                f"{action.tenant_id}: settle the {action.kind} to {action.to_version} of run "
                f"{run.run_id} as {settled} ({note})",
                run.run_id,
                action.tenant_id,
                data={
                    "key": action.idempotency_key,
                    "state": settled,
                    "kind": action.kind,
                    "platform_version": version,
                    "note": note,
                    "plugin": action.plugin,
                },
            )
        )
    return fixes


def apply_fixes(
    ledger: Ledger,
    fixes: Iterable[Fix],
    *,
    actor: str = ACTOR,
    audit_client: AuditClient | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[dict[str, Any]]:
    """Apply the fixes in order, each audited (`reconcile.fix.<kind>`, a stable id per fix, so
    a repeated reconcile does not audit one fix twice); the outbox is delivered last, with the
    fixes' own records. Returns what was done, per fix."""
    done = []
    for fix in fixes:
        if fix.kind == "redeliver_audit":
            continue
        result = _apply(ledger, fix)
        _audit(ledger, fix, result, actor, now())
        done.append({**fix.as_dict(), "result": result})
    redeliver = [f for f in fixes if f.kind == "redeliver_audit"]
    if redeliver or done:
        delivered, pending = Recorder(ledger, audit_client).flush(limit=100_000)
        result = {"delivered": delivered, "still_pending": pending}
        if audit_client is None:
            result["note"] = "no audit service given: nothing delivered"
        for fix in redeliver:
            done.append({**fix.as_dict(), "result": result})
    return done


def _apply(ledger: Ledger, fix: Fix) -> dict[str, Any]:
    if fix.kind == "finish_run" and fix.run_id:
        run = ledger.finish_run(
            fix.run_id, "failed", detail={"reconciled": {"why": fix.data.get("why")}}
        )
        return {"outcome": run.outcome, "released": fix.data.get("tenants", [])}
    if fix.kind == "release_claims" and fix.run_id:
        return {"released": ledger.release_tenants(fix.run_id)}
    if fix.kind == "settle_action":
        action = ledger.finish_action(
            fix.data["key"],
            fix.data["state"],
            error=None if fix.data["state"] == "succeeded" else f"reconciled: {fix.data['note']}",
            detail={"reconciled": fix.data["note"]},
        )
        return {"state": action.state}
    raise ValueError(f"unknown fix kind {fix.kind!r}")


def _audit(ledger: Ledger, fix: Fix, result: Mapping[str, Any], actor: str, at: datetime) -> None:
    key = f"reconcile:{fix.kind}:{fix.run_id}:{fix.tenant}:{fix.data.get('key', '')}"
    tenants = [fix.tenant] if fix.tenant else list(fix.data.get("tenants", []))
    payload = audit_payload(
        f"{AUDIT_PREFIX}{fix.kind}",
        actor=actor,
        plugin=fix.data.get("plugin"),
        run_id=fix.run_id,
        tenants=tenants,
        reason=fix.message,
        details={
            "fix": fix.kind,
            **{k: v for k, v in fix.data.items() if k != "tenants"},
            "result": dict(result),
        },
        at=at,
    )
    ledger.enqueue_audit(
        run_id=fix.run_id,
        event=f"{AUDIT_PREFIX}{fix.kind}",
        payload=payload,
        audit_id=stable_id(key),
    )


SETTLE_PATIENCE_S = 120.0
"""How long `settle_failed_run` keeps settling actions a killed task left in flight (the
platform finishes an operation it accepted; Airflow stops the task within a few heartbeats)."""


def settle_failed_run(
    ledger: Ledger,
    run_id: str,
    fleet: Callable[[str], Iterable[Mapping[str, Any]]],
    *,
    audit_client: AuditClient | None = None,
    actor: str = "airflow.dag_run_failed",
    patience: float = SETTLE_PATIENCE_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[dict[str, Any]]:
    """A run whose Airflow DAG run is `failed`: finish it in the ledger (outcome `failed`,
    claims released), settle its actions from the platform's word, deliver the audit, each fix
    audited as reconcile's `--fix` would. A run the ledger already finished and that holds
    nothing is left alone (the normal path: `finalize` ran), so calling this for every failed
    DAG run is cheap and safe.

    `fleet(plugin)` lists the plugin's tenants at the platform. Actions still in flight (the
    tenant not `ready` yet) are looked at again until none is left or `patience` runs out;
    what stays unsettled is reconcile's `unsettled_action` for a human.
    """
    run = ledger.get_run(run_id)
    if run is None or (not run.active and not ledger.claimed_tenants(run_id)):
        return []
    deadline = clock() + patience
    done: list[dict[str, Any]] = []
    while True:
        run = ledger.get_run(run_id)
        if run is None:
            return done
        tenants = {str(t["id"]): t for t in fleet(run.plugin)}
        fixes = plan_fixes(ledger, [run], tenants, dag_run_states={run_id: "failed"})
        done += apply_fixes(ledger, fixes, actor=actor, audit_client=audit_client)
        if not ledger.actions(run_id, state="started") or clock() >= deadline:
            return done
        sleep(5.0)
