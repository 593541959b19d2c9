"""Human decisions: what a batch approval or a gate pause asks (its texts, its notification) and
how an answer is recorded (the UI's, or one given through the control-plane API/CLI, whose
operator, path and token win when it agrees with what the UI received).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from powerx_upgrade.domain.durations import format_duration
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.rollout import controls, metrics
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.evidence import run_evidence
from powerx_upgrade.rollout.preflight import planned_batches
from powerx_upgrade.rollout.services import Services
from powerx_upgrade.rollout.verdicts import PAUSED, previous_verdict, should_notify


@dataclass(frozen=True)
class Prompt:
    """What a person is asked: `subject` (None: keep the operator's) and `body`."""

    body: str
    subject: str | None = None


@dataclass(frozen=True)
class Answer:
    """A person's answer as received from the UI: options chosen, by whom, when."""

    task_id: str
    chosen: list[str]
    user: str | None
    responded_at: str
    timed_out: bool


def ask_approval(
    services: Services,
    plan: Plan,
    ctx: RunContext,
    batch: int,
    rollout_url: str | None = None,
) -> Prompt | None:
    """The approval question for a batch and its notification, with the evidence (each finished
    batch's gate result in words, the Rollout tab's link); None (recorded as `not_required`)
    when the planned batch needs no approval."""
    ledger = services.ledger
    planned = next((b for b in planned_batches(ledger, ctx.run_id) if b["index"] == batch), None)
    if planned is None or not planned.get("approval_required"):
        ledger.record_decision(
            ctx.run_id,
            batch_index=batch,
            kind="approval",
            decision="not_required",
            actor="policy",
            via="auto",
        )
        return None
    earlier = previous_verdict(ledger, ctx.run_id, batch)
    body = (
        f"Plan `{plan.id}` will upgrade **{len(planned['tenants'])} tenants** of "
        f"`{ctx.plugin}` to `{ctx.target_version}` (batch {batch}, "
        f"{planned['cumulative_ratio']:.0%} of the rollout). "
        + (f"Last gate: {earlier}.\n\n" if earlier else "\n\n")
        + run_evidence(ledger, ctx.run_id, rollout_url)
        + f"\n\nNo answer within {format_duration(plan.policy.approval_timeout)} counts as "
        "Reject."
    )
    if should_notify(plan, PAUSED):  # waiting for a person, like a pause
        services.recorder.notify(
            ctx,
            "plugin.version.gray.approval",
            key=f"approval:{batch}",
            title=f"{plan.id}: batch {batch} waits for approval",
            message=body,
            severity="info",
            channels=plan.notify.channels,
        )
    return Prompt(body)


def ask_pause(
    services: Services,
    plan: Plan,
    ctx: RunContext,
    batch: int,
    verdict: dict[str, Any],
    default: str,
    rollout_url: str | None = None,
) -> Prompt:
    """The pause question after a gate (its verdict, why it paused, the evidence of every
    finished batch, the Rollout tab's link), the run `paused`, counted and notified."""
    why = _pause_reason(services, ctx, batch)
    said = verdict.get("summary") or verdict.get("reason", "")
    body = (
        f"Batch {batch} of `{plan.id}` ({ctx.plugin} -> {ctx.target_version}): "
        f"gate verdict **{verdict.get('phase', 'unknown')}**: {said}.\n\n"
        + (f"Gate reason: {verdict['reason']}.\n\n" if verdict.get("summary") else "")
        + (f"Paused because: {why}.\n\n" if why else "")
        + run_evidence(services.ledger, ctx.run_id, rollout_url)
        + "\n\nResume goes on with the next batch; Roll back returns the upgraded tenants to "
        f"their previous version; Stop ends the run as it is. No answer within "
        f"{format_duration(plan.policy.pause.timeout)}: {default}."
    )
    services.ledger.update_run(ctx.run_id, status="paused")
    tags = {"plan": ctx.plan_id, "plugin": ctx.plugin, "batch": str(batch)}
    services.metrics.count(metrics.PAUSED_TOTAL, tags)
    if should_notify(plan, PAUSED):
        services.recorder.notify(
            ctx,
            "plugin.version.gray.paused",
            key=f"pause:{batch}",
            title=f"{plan.id}: batch {batch} paused",
            message=body,
            severity="warning",
            channels=plan.notify.channels,
            context={"batch": batch, "segment": verdict.get("segment")},
        )
    return Prompt(body, subject=f"{plan.id}: batch {batch} paused: {said}"[:250])


def _pause_reason(services: Services, ctx: RunContext, batch: int) -> str | None:
    asked = [
        d
        for d in services.ledger.decisions(ctx.run_id)
        if d.kind == "decide" and d.batch_index == batch and d.decision == "pause"
    ]
    return (asked[-1].detail or {}).get("reason") if asked else None


def record_answer(
    services: Services,
    ctx: RunContext,
    batch: int,
    answer: Answer,
    *,
    kind: str,
    decision: str,
) -> None:
    """The answer in the ledger (`kind` approval/pause, the `decision` it means) and the audit
    log; an API/CLI answer pending for the task is applied (its actor, via, approval) when it
    chose the same, refused when the UI answered otherwise first."""
    actor = answer.user or ("timeout default" if answer.timed_out else None)
    via, detail = "ui", {}
    asked = (
        None
        if answer.timed_out
        else controls.answer_for(services.ledger, ctx.run_id, answer.task_id)
    )
    if asked is not None:
        wanted = list(asked.payload.get("chosen") or [])
        if wanted and wanted != answer.chosen:  # someone answered in the UI first
            note = f"answered {answer.chosen} in the UI first"
            services.ledger.settle_control(asked.id, outcome="refused", note=note)
        else:
            actor, via = asked.actor or actor, asked.via or "api"
            detail = {"control": asked.id, "approval": asked.approval_jti}
            note = f"{answer.task_id} answered {answer.chosen}"
            services.ledger.settle_control(asked.id, outcome="applied", note=note)
    services.ledger.record_decision(
        ctx.run_id,
        batch_index=batch,
        kind=kind,
        decision=decision,
        actor=actor,
        via=via,
        detail={
            "chosen": answer.chosen,
            "responded_at": answer.responded_at,
            "timed_out": answer.timed_out,
            **detail,
        },
    )
    services.recorder.audit(
        ctx,
        f"batch.{kind}.answered",
        actor=actor,
        audit_id=f"{ctx.run_id}:{kind}:{batch}",
        details={
            "batch": batch,
            "chosen": answer.chosen,
            "timed_out": answer.timed_out,
            "via": via,
            **detail,
        },
    )
    services.recorder.flush()
