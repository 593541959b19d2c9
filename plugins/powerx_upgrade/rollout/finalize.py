"""Rollback scope and the run's end: which tenants go back, what the outcome is."""

from __future__ import annotations

from typing import Any

from powerx_upgrade.domain.alerts import Rate
from powerx_upgrade.domain.decide import Upgraded, rollback_targets
from powerx_upgrade.domain.exposure import exposure
from powerx_upgrade.domain.models import Plan, RollbackScope
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.preflight import (
    artifact_refusal,
    preflight_failure,
    selected_tenants,
)

OUTCOMES = (
    "promoted",
    "partially_promoted",
    "rolled_back",
    "rollback_failed",
    "stopped",
    "failed",
    "dry_run",
)


def rollback_plan(
    platform: Any,
    ledger: Ledger,
    plan: Plan,
    ctx: RunContext,
    failing_batch: int | None,
    breaching: list[str],
) -> list[dict[str, Any]]:
    """The tenants to roll back under the policy's scope, each with the version it goes back to."""
    return rollback_candidates(
        platform, ledger, ctx, plan.policy.rollback.scope, failing_batch, breaching
    )


def rollback_candidates(
    platform: Any,
    ledger: Ledger,
    ctx: RunContext,
    scope: RollbackScope,
    failing_batch: int | None,
    breaching: list[str],
) -> list[dict[str, Any]]:
    """The run's tenants to roll back under `scope` (`domain.decide.rollback_targets`) that are
    on the new version now, each with the version it goes back to."""
    upgrades = ledger.actions(ctx.run_id, kind="upgrade")
    touched = [
        Upgraded(a.tenant_id, a.batch_index or 0, a.from_version, a.state)
        for a in upgrades
        if a.state in ("succeeded", "failed", "started", "pending", "in_progress") and not a.noop
    ]
    current = {t["id"]: t.get("version") for t in platform.list_tenants(ctx.plugin)}
    chosen = rollback_targets(
        scope,
        touched,
        failing_batch=failing_batch,
        breaching=breaching,
        current_versions=current,
        target_version=ctx.target_version,
    )
    return [
        {"tenant": u.tenant, "from_version": u.from_version, "batch": u.batch}
        for u in chosen
        if u.from_version and u.from_version != ctx.target_version
    ]


def outcome_of(ledger: Ledger, platform: Any, ctx: RunContext) -> tuple[str, dict[str, Any]]:
    """The run's outcome from the ledger and, for a promotion, the platform's own word."""
    run = ledger.get_run(ctx.run_id)
    refusal = artifact_refusal(ledger, ctx.run_id) if run is not None and not run.batches else None
    if refusal:  # a refused artifact fails a dry run too: the rehearsal found the problem
        return "failed", {
            "note": f"preflight refused the artifact ({refusal.get('code')}): no tenant "
            "was touched",
            "artifact_refused": refusal.get("message"),
        }
    not_begun = preflight_failure(ledger, ctx.run_id) if run is not None else None
    if not_begun:  # the run could not begin: no batch started, whether a dry run or not
        return "failed", {
            "note": f"preflight could not begin the run ({not_begun.get('step')}): "
            f"{not_begun.get('error')}; no tenant was touched",
            "preflight_failed": not_begun,
        }
    if ctx.dry_run:
        return "dry_run", {"note": "dry run: no tenant was touched"}
    if run is None or not run.batches:
        return "failed", {"note": "the run ended before its batches were planned"}
    rollbacks = ledger.actions(ctx.run_id, kind="rollback")
    decisions = ledger.decisions(ctx.run_id)
    verification = (run.detail or {}).get("rollback_verification")
    if rollbacks or any(d.decision == "rollback" for d in decisions):
        broken = (verification or {}).get("broken", [])
        failed = [a.tenant_id for a in rollbacks if a.state == "failed"]
        if broken or failed or verification is None:
            return "rollback_failed", {"failed": failed, "unverified": broken}
        return "rolled_back", {"tenants": len(rollbacks)}
    selected = selected_tenants(ledger, ctx.run_id)
    versions = {t["id"]: t.get("version") for t in platform.list_tenants(ctx.plugin)}
    behind = [t for t in selected if versions.get(t) != ctx.target_version]
    if any(d.decision in ("stop", "reject") for d in decisions):
        return "stopped", {"not_on_target": len(behind)}
    if behind:
        upgraded = len(selected) - len(behind)
        outcome = "partially_promoted" if upgraded else "failed"
        return outcome, {"not_on_target": behind[:100], "behind": len(behind)}
    return "promoted", {"tenants": len(selected)}


def upgrade_success_rate(ledger: Ledger, run_id: str) -> float | None:
    """Upgrades that succeeded over upgrades attempted in this run (skipped and refused tenants
    were not attempted); None when nothing was attempted."""
    attempted = [
        a for a in ledger.actions(run_id, kind="upgrade") if a.state in ("succeeded", "failed")
    ]
    if not attempted:
        return None
    return sum(1 for a in attempted if a.state == "succeeded") / len(attempted)


def success_rates(ledger: Ledger, plan: Plan, run_id: str) -> list[Rate]:
    """The run's rates the policy's `success_floors` judge: tenant upgrades that succeeded of
    those attempted, and batches whose gate passed (decided `promote`) of those decided."""
    floors = plan.policy.success_floors
    attempted = [
        a for a in ledger.actions(run_id, kind="upgrade") if a.state in ("succeeded", "failed")
    ]
    decided = {d.batch_index: d.decision for d in ledger.decisions(run_id) if d.kind == "decide"}
    return [
        Rate(
            "upgrade",
            sum(a.state == "succeeded" for a in attempted),
            len(attempted),
            floors.upgrade,
        ),
        Rate("batch", sum(d == "promote" for d in decided.values()), len(decided), floors.batch),
    ]


def record_exposure(ledger: Ledger, run_id: str) -> dict[str, Any] | None:
    """Compute the finished run's exposure (`domain.exposure`) from its actions and verdicts and
    keep it in the run's detail under `exposure`; None for a run the ledger does not know."""
    run = ledger.get_run(run_id)
    if run is None or run.ended_at is None:
        return None
    found = exposure(
        ledger.actions(run_id), ledger.gate_evaluations(run_id, final_only=True), end=run.ended_at
    ).as_dict()
    ledger.update_run(run_id, detail={**(run.detail or {}), "exposure": found})
    return found
