"""The run's own steps around its batches: announce the start, decide a batch, record the end.

Each is one call from a task of the plan DAG; everything it writes (ledger, audit, notification,
metric) happens here, without Airflow.
"""

from __future__ import annotations

import math
from typing import Any

from powerx_upgrade.domain.alerts import success_floor_alert
from powerx_upgrade.domain.decide import Action, decide
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout import controls, finalize, metrics, operations, preflight
from powerx_upgrade.rollout.alerts import raise_alert
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.operations import RetryPolicy
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.rollout.services import Services
from powerx_upgrade.rollout.verdicts import (
    ALERT,
    BATCH_PROMOTED,
    RUN_END,
    RUN_START,
    should_notify,
)


def announce_run(
    services: Services, plan: Plan, ctx: RunContext, summary: dict[str, Any]
) -> dict[str, Any]:
    """Audit `run.started` and notify it (the plan's summary: how many tenants, batches)."""
    recorder = services.recorder
    recorder.audit(
        ctx,
        "run.started",
        audit_id=f"{ctx.run_id}:run.started",
        details={
            "plan": plan.id,
            "artifact": ctx.artifact,
            "dry_run": ctx.dry_run,
            "selected": summary.get("selected"),
            "batches": summary.get("batches"),
        },
    )
    sent = should_notify(plan, RUN_START) and recorder.notify(
        ctx,
        "plugin.version.gray.started",
        key="run.started",
        title=f"{plan.id}: {'dry run of ' if ctx.dry_run else ''}{ctx.plugin} -> "
        f"{ctx.target_version} started",
        message=f"{summary.get('selected')} tenants in {len(summary.get('batches') or [])} "
        f"batches. Reason: {ctx.reason or '-'}",
        channels=plan.notify.channels,
    )
    delivered, pending = recorder.flush()
    return {"notified": sent, "audit_delivered": delivered, "audit_pending": pending}


def _planned(ledger: Ledger, ctx: RunContext, batch: int) -> dict[str, Any]:
    return next(b for b in preflight.planned_batches(ledger, ctx.run_id) if b["index"] == batch)


def deploy_shards(ledger: Ledger, plan: Plan, ctx: RunContext, batch: int) -> list[dict[str, Any]]:
    """Batch `batch` cut into the deploy task's shards (`shard_size` tenants each)."""
    size = plan.policy.deploy.shard_size
    count = len(_planned(ledger, ctx, batch)["tenants"])
    return [
        {"shard": {"start": i * size, "end": min(count, (i + 1) * size)}}
        for i in range(math.ceil(count / size))
    ]


def deploy_shard(
    services: Services, plan: Plan, ctx: RunContext, batch: int, shard: dict[str, Any]
) -> dict[str, Any]:
    """Upgrade one shard of a batch at the concurrency in force (adjustable by operators)."""
    tenants = _planned(services.ledger, ctx, batch)["tenants"][shard["start"] : shard["end"]]
    spec = controls.effective_policy(plan, services.ledger, ctx.run_id).deploy
    summary = operations.deploy_shard(
        services.platform,
        services.ledger,
        services.recorder,
        ctx,
        batch=batch,
        tenants=tenants,
        concurrency=spec.concurrency,
        retry=RetryPolicy(retries=spec.retries),
    )
    return summary.as_dict()


def decide_batch(
    services: Services, plan: Plan, ctx: RunContext, batch: int, verdict: dict[str, Any]
) -> Action:
    """The batch's decision from its gate verdict under the run's controls: in the ledger, the
    audit log and (a passed gate) the `batch_promoted` notification."""
    verdict = complete_verdict(services.ledger, ctx, batch, verdict)
    phase = verdict.get("phase", "fail")
    decision = decide(phase, plan.policy, why=verdict.get("reason") or "the gate left no verdict")
    decided = controls.decide_under_controls(services.ledger, ctx, decision, verdict, batch)
    decision = decided.decision
    services.ledger.record_decision(
        ctx.run_id,
        batch_index=batch,
        kind="decide",
        decision=decision.action.value,
        actor=decided.actor,
        via=decided.via,
        detail={
            "verdict": phase,
            "reason": decision.reason,
            "summary": verdict.get("summary"),
            "segment": verdict.get("segment"),
            "breaching": breaching_tenants(verdict),
            **decided.detail,
        },
    )
    services.recorder.audit(
        ctx,
        f"batch.{decision.action.value}",
        actor=None if decided.via == "auto" else decided.actor,
        audit_id=f"{ctx.run_id}:decide:{batch}",
        details={
            "batch": batch,
            "verdict": phase,
            "reason": decision.reason,
            "summary": verdict.get("summary"),
            **decided.detail,
        },
    )
    if decision.action is Action.PROMOTE and phase == "pass":
        _notify_promoted(services.recorder, plan, ctx, batch, verdict)
    services.recorder.flush()
    return decision.action


def complete_verdict(
    ledger: Ledger, ctx: RunContext, batch: int, verdict: dict[str, Any]
) -> dict[str, Any]:
    """The gate's verdict with every measurement: the XCom carries at most a few
    (`gate_steps.bounded`), the ledger's final evaluation of the batch holds them all."""
    carried = verdict.get("measurements") or []
    if verdict.get("measurements_total", len(carried)) <= len(carried):
        return verdict
    final = ledger.gate_evaluations(ctx.run_id, batch, final_only=True)
    if not final:
        return verdict
    return {**verdict, "measurements": list(final[-1].measurements)}


def breaching_tenants(verdict: dict[str, Any]) -> list[str]:
    """The tenants whose own measurements failed the gate (the rollback scope's `breaching`)."""
    return sorted(
        {
            m["tenant"]
            for m in verdict.get("measurements", [])
            if m.get("tenant") and m.get("phase") == "fail"
        }
    )


def _notify_promoted(
    recorder: Recorder, plan: Plan, ctx: RunContext, batch: int, verdict: dict[str, Any]
) -> None:
    """`batch_promoted`: the batch's gate passed and the run moves on (with the sentence)."""
    if not should_notify(plan, BATCH_PROMOTED):
        return
    last = batch >= len(plan.policy.batches)
    recorder.notify(
        ctx,
        "plugin.version.gray.batch_promoted",
        key=f"promoted:{batch}",
        title=f"{plan.id}: batch {batch} passed its gate"
        + (" (the last batch)" if last else f", batch {batch + 1} is next"),
        message=verdict.get("summary") or verdict.get("reason") or "",
        channels=plan.notify.channels,
        context={"batch": batch, "verdict": "pass", "summary": verdict.get("summary")},
    )


def end_run(services: Services, plan: Plan, ctx: RunContext) -> dict[str, Any]:
    """The run's outcome: in the ledger (and its pending controls settled), audited, notified,
    its success rate and exposure as metrics."""
    ledger, recorder = services.ledger, services.recorder
    outcome, detail = finalize.outcome_of(ledger, services.platform, ctx)
    ledger.finish_run(ctx.run_id, outcome, detail={"outcome_detail": detail})
    controls.settle_at_end(ledger, ctx, outcome)
    recorder.audit(
        ctx,
        "run.finished",
        audit_id=f"{ctx.run_id}:run.finished",
        details={"outcome": outcome, **detail},
    )
    if should_notify(plan, RUN_END):
        recorder.notify(
            ctx,
            "plugin.version.gray.finished",
            key="run.finished",
            severity="info" if outcome in ("promoted", "dry_run") else "warning",
            title=f"{plan.id}: {ctx.plugin} -> {ctx.target_version}: {outcome}",
            channels=plan.notify.channels,
            context=detail,
        )
    floors = None if ctx.dry_run else alert_floors(services, plan, ctx)
    resent, unsent = recorder.resend_failed_notifications(ctx)
    if resent or unsent:  # surfaced in the run record (report, UI), not only in the audit log
        run = ledger.get_run(ctx.run_id)
        notified = {"resent": resent, "not_delivered": unsent}
        known = (run.detail or {}) if run is not None else {}
        ledger.update_run(ctx.run_id, detail={**known, "notify": notified})
    _, pending = recorder.drain()
    rate, exposed = _end_metrics(services, ctx, outcome)
    return {
        "outcome": outcome,
        "detail": detail,
        "audit_pending": pending,
        "upgrade_success_rate": rate,
        "exposure": exposed,
        "success_floor_missed": floors is not None,
        "notifications_resent": resent,
        "notifications_not_delivered": unsent,
    }


def alert_floors(services: Services, plan: Plan, ctx: RunContext) -> Any:
    """Raise `success_floor` when the run missed the policy's success floors; the alert."""
    alert = success_floor_alert(finalize.success_rates(services.ledger, plan, ctx.run_id))
    if alert is not None:
        raise_alert(
            services.recorder,
            ctx,
            alert,
            channels=plan.notify.channels,
            count=services.metrics.count,
            notify=should_notify(plan, ALERT),
        )
    return alert


def _end_metrics(
    services: Services, ctx: RunContext, outcome: str
) -> tuple[float | None, dict[str, Any] | None]:
    tags = {"plan": ctx.plan_id, "plugin": ctx.plugin, "outcome": outcome}
    rate = finalize.upgrade_success_rate(services.ledger, ctx.run_id)
    if rate is not None:
        services.metrics.gauge(metrics.SUCCESS_RATE, round(rate, 4), tags)
    exposed = finalize.record_exposure(services.ledger, ctx.run_id)
    if exposed is not None:
        services.metrics.gauge(
            metrics.EXPOSURE,
            exposed["tenant_minutes_before_detection"],
            {**tags, "detected": str(exposed["detected"]).lower()},
        )
    return rate, exposed
