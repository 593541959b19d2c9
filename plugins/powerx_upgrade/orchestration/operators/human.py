"""Human decisions in the Airflow UI: batch approvals and gate pauses (HITL branches)."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.providers.standard.operators.hitl import HITLBranchOperator

from powerx_upgrade.domain.durations import format_duration
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import metrics, runtime
from powerx_upgrade.rollout import controls
from powerx_upgrade.rollout.preflight import planned_batches
from powerx_upgrade.rollout.verdicts import PAUSED, previous_verdict, should_notify

APPROVE, REJECT = "Approve", "Reject"
RESUME, ROLL_BACK, STOP = "Resume", "Roll back", "Stop"


def _who(event: dict[str, Any]) -> str | None:
    user = event.get("responded_by_user")
    if isinstance(user, dict):
        return user.get("name") or user.get("id")
    return str(user) if user else None


class _Recorded(HITLBranchOperator):
    """A HITL branch whose answer (who, what, when) lands in the ledger and the audit log."""

    plan: Plan
    batch: int
    decision_kind = "pause"
    decision_names: ClassVar[dict[str, str]] = {}
    """UI option -> the decision recorded in the ledger."""
    unanswered = "rollback"

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        chosen = list(event.get("chosen_options") or [])
        timed_out = "error" in event or not event.get("responded_by_user")
        ctx = runtime.run_context(context["ti"])
        book = runtime.ledger()
        actor = _who(event) or ("timeout default" if timed_out else None)
        via, detail = "ui", {}
        # an answer given through the control-plane API/CLI: its operator, path and token
        answer = None if timed_out else controls.answer_for(book, ctx.run_id, self.task_id)
        if answer is not None:
            asked = list(answer.payload.get("chosen") or [])
            if asked and asked != chosen:  # someone answered in the UI first
                book.settle_control(
                    answer.id, outcome="refused", note=f"answered {chosen} in the UI first"
                )
            else:
                actor, via = answer.actor or actor, answer.via or "api"
                detail = {"control": answer.id, "approval": answer.approval_jti}
                book.settle_control(
                    answer.id, outcome="applied", note=f"{self.task_id} answered {chosen}"
                )
        book.record_decision(
            ctx.run_id,
            batch_index=self.batch,
            kind=self.decision_kind,
            decision=self._decision(chosen),
            actor=actor,
            via=via,
            detail={
                "chosen": chosen,
                "responded_at": str(event.get("responded_at") or ""),
                "timed_out": timed_out,
                **detail,
            },
        )
        recorder = runtime.recorder(book)
        recorder.audit(
            ctx,
            f"batch.{self.decision_kind}.answered",
            actor=actor,
            audit_id=f"{ctx.run_id}:{self.decision_kind}:{self.batch}",
            details={
                "batch": self.batch,
                "chosen": chosen,
                "timed_out": timed_out,
                "via": via,
                **detail,
            },
        )
        recorder.flush()
        return super().execute_complete(context, event)

    def _decision(self, chosen: list[str]) -> str:
        return self.decision_names.get(chosen[0] if chosen else "", self.unanswered)


class BatchApprovalOperator(_Recorded):
    """Before a batch deploys: Approve goes on, Reject (or no answer in time) stops the run.

    A batch whose planned batch needs no approval (see `approval_batches`) goes on at once.
    """

    decision_kind = "approval"
    decision_names: ClassVar[dict[str, str]] = {APPROVE: "approve", REJECT: "reject"}
    unanswered = "reject"

    def __init__(self, *, plan: Plan, batch: int, **kwargs: Any) -> None:
        group = f"batch_{batch}"
        super().__init__(
            subject=f"Approve batch {batch} of {plan.id}?",
            body=f"Plan `{plan.id}` will upgrade batch {batch} of `{plan.plugin}`.",
            options=[APPROVE, REJECT],
            options_mapping={APPROVE: f"{group}.shards", REJECT: f"{group}.rejected"},
            defaults=[REJECT],
            response_timeout=plan.policy.approval_timeout,
            **kwargs,
        )
        self.plan = plan
        self.batch = batch

    def execute(self, context: Any) -> Any:
        ctx = runtime.run_context(context["ti"])
        book = runtime.ledger()
        planned = next(
            (b for b in planned_batches(book, ctx.run_id) if b["index"] == self.batch), None
        )
        if planned is None or not planned.get("approval_required"):
            book.record_decision(
                ctx.run_id,
                batch_index=self.batch,
                kind="approval",
                decision="not_required",
                actor="policy",
                via="auto",
            )
            return self.do_branch(context, f"batch_{self.batch}.shards")
        earlier = previous_verdict(book, ctx.run_id, self.batch)
        self.body = (
            f"Plan `{self.plan.id}` will upgrade **{len(planned['tenants'])} tenants** of "
            f"`{ctx.plugin}` to `{ctx.target_version}` (batch {self.batch}, "
            f"{planned['cumulative_ratio']:.0%} of the rollout). "
            + (f"Last gate: {earlier}.\n\n" if earlier else "")
            + f"No answer within {format_duration(self.plan.policy.approval_timeout)} "
            "counts as Reject."
        )
        if should_notify(self.plan, PAUSED):  # waiting for a person, like a pause
            runtime.recorder(book).notify(
                ctx,
                "plugin.version.gray.approval",
                key=f"approval:{self.batch}",
                title=f"{self.plan.id}: batch {self.batch} waits for approval",
                message=self.body,
                severity="info",
                channels=self.plan.notify.channels,
            )
        return super().execute(context)


class BatchPauseOperator(_Recorded):
    """A pause after a gate: Resume, Roll back or Stop; no answer in time takes the policy's
    safe default (roll back unless the policy says stop)."""

    decision_kind = "pause"
    decision_names: ClassVar[dict[str, str]] = {
        RESUME: "resume",
        ROLL_BACK: "rollback",
        STOP: "stop",
    }

    def __init__(self, *, plan: Plan, batch: int, **kwargs: Any) -> None:
        group = f"batch_{batch}"
        default = ROLL_BACK if plan.policy.pause.default == "rollback" else STOP
        super().__init__(
            subject=f"{plan.id}: batch {batch} paused",
            body="The gate asked for a human decision.",
            options=[RESUME, ROLL_BACK, STOP],
            options_mapping={
                RESUME: f"{group}.resume",
                ROLL_BACK: f"{group}.pause_rollback",
                STOP: f"{group}.pause_stop",
            },
            defaults=[default],
            response_timeout=plan.policy.pause.timeout,
            **kwargs,
        )
        self.plan = plan
        self.batch = batch

    def execute(self, context: Any) -> Any:
        ctx = runtime.run_context(context["ti"])
        verdict = context["ti"].xcom_pull(task_ids=f"batch_{self.batch}.gate") or {}
        default = self.defaults[0] if self.defaults else ROLL_BACK
        book = runtime.ledger()
        asked = [
            d
            for d in book.decisions(ctx.run_id)
            if d.kind == "decide" and d.batch_index == self.batch and d.decision == "pause"
        ]
        why = (asked[-1].detail or {}).get("reason") if asked else None
        said = verdict.get("summary") or verdict.get("reason", "")
        self.subject = f"{self.plan.id}: batch {self.batch} paused: {said}"[:250]
        self.body = (
            f"Batch {self.batch} of `{self.plan.id}` ({ctx.plugin} -> {ctx.target_version}): "
            f"gate verdict **{verdict.get('phase', 'unknown')}**: {said}.\n\n"
            + (f"Gate reason: {verdict['reason']}.\n\n" if verdict.get("summary") else "")
            + (f"Paused because: {why}.\n\n" if why else "")
            + "Resume goes on with the next batch; Roll back returns the upgraded tenants to "
            f"their previous version; Stop ends the run as it is. No answer within "
            f"{format_duration(self.plan.policy.pause.timeout)}: {default}."
        )
        book.update_run(ctx.run_id, status="paused")
        metrics.count(
            metrics.PAUSED_TOTAL,
            {"plan": ctx.plan_id, "plugin": ctx.plugin, "batch": str(self.batch)},
        )
        if should_notify(self.plan, PAUSED):
            runtime.recorder(book).notify(
                ctx,
                "plugin.version.gray.paused",
                key=f"pause:{self.batch}",
                title=f"{self.plan.id}: batch {self.batch} paused",
                message=self.body,
                severity="warning",
                channels=self.plan.notify.channels,
                context={"batch": self.batch, "segment": verdict.get("segment")},
            )
        return super().execute(context)
