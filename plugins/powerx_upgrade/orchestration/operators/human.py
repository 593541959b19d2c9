"""Human decisions in the Airflow UI: batch approvals and gate pauses (HITL branches).

The texts, the notifications and how an answer is recorded are `rollout.human`'s; these
operators only carry them to Airflow's HITL and back.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.providers.standard.operators.hitl import HITLBranchOperator

from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import names, runtime
from powerx_upgrade.rollout import human
from powerx_upgrade.rollout.evidence import rollout_tab_url

# `rollout.authority` (approval tokens: the JWT and X.509 stack) is imported where an answer is
# checked: every task process parses the DAG file, and most never check one (docs/performance.md)

APPROVE, REJECT = "Approve", "Reject"
RESUME, ROLL_BACK, STOP = "Resume", "Roll back", "Stop"


def _who(event: dict[str, Any]) -> str | None:
    user = event.get("responded_by_user")
    if isinstance(user, dict):
        return user.get("name") or user.get("id")
    return str(user) if user else None


def assigned(plan: Plan) -> list[dict[str, str]] | None:
    """The policy's approvers as HITL assigned users (None: anyone who may edit the run)."""
    users = plan.policy.control.approvers
    return [{"id": user, "name": user} for user in users] or None


def rollout_url(ti: Any) -> str | None:
    """The run's Rollout tab in the Airflow UI (`[api] base_url`), for the HITL texts."""
    from powerx_upgrade.orchestration.operators.report import airflow_base_url

    return rollout_tab_url(airflow_base_url(), ti.dag_id, ti.run_id)


def answer_of(task_id: str, event: dict[str, Any]) -> human.Answer:
    """The HITL trigger's event as the answer `rollout.human` records."""
    return human.Answer(
        task_id=task_id,
        chosen=list(event.get("chosen_options") or []),
        user=_who(event),
        responded_at=str(event.get("responded_at") or ""),
        timed_out="error" in event or not event.get("responded_by_user"),
    )


class _Recorded(HITLBranchOperator):
    """A HITL branch whose answer (who, what, when) lands in the ledger and the audit log."""

    plan: Plan
    batch: int
    decision_kind = "pause"
    decision_names: ClassVar[dict[str, str]] = {}
    """UI option -> the decision recorded in the ledger."""
    unanswered = "rollback"

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        answer = answer_of(self.task_id, event)
        decision = self.decision_names.get(answer.chosen[0] if answer.chosen else "")
        from powerx_upgrade.rollout import authority  # JWT/X.509: on an answer only (see top)

        ctx = runtime.run_context(context["ti"])
        if authority.answer_refused(
            runtime.services(),
            ctx,
            self.plan,
            self.batch,
            task_id=self.task_id,
            chosen=answer.chosen,
            user=answer.user,
            timed_out=answer.timed_out,
            decision=decision or self.unanswered,
        ):
            self.log.warning(
                "refused %s's answer %s: the policy wants an approval token; asking again",
                answer.user,
                answer.chosen,
            )
            return self.execute(context)  # re-opens the request (its response is cleared)
        human.record_answer(
            runtime.services(),
            ctx,
            self.batch,
            answer,
            kind=self.decision_kind,
            decision=decision or self.unanswered,
        )
        return super().execute_complete(context, event)


class BatchApprovalOperator(_Recorded):
    """Before a batch deploys: Approve goes on, Reject (or no answer in time) stops the run.

    A batch whose planned batch needs no approval (see `approval_batches`) goes on at once.
    """

    decision_kind = "approval"
    decision_names: ClassVar[dict[str, str]] = {APPROVE: "approve", REJECT: "reject"}
    unanswered = "reject"

    def __init__(self, *, plan: Plan, batch: int, **kwargs: Any) -> None:
        super().__init__(
            subject=f"Approve batch {batch} of {plan.id}?",
            body=f"Plan `{plan.id}` will upgrade batch {batch} of `{plan.plugin}`.",
            options=[APPROVE, REJECT],
            options_mapping={
                APPROVE: names.batch(batch, names.SHARDS),
                REJECT: names.batch(batch, names.REJECTED),
            },
            defaults=[REJECT],
            response_timeout=plan.policy.approval_timeout,
            assigned_users=assigned(plan),
            **kwargs,
        )
        self.plan = plan
        self.batch = batch

    def execute(self, context: Any) -> Any:
        ctx = runtime.run_context(context["ti"])
        prompt = human.ask_approval(
            runtime.services(), self.plan, ctx, self.batch, rollout_url(context["ti"])
        )
        if prompt is None:
            return self.do_branch(context, names.batch(self.batch, names.SHARDS))
        self.body = prompt.body
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
        default = ROLL_BACK if plan.policy.pause.default == "rollback" else STOP
        super().__init__(
            subject=f"{plan.id}: batch {batch} paused",
            body="The gate asked for a human decision.",
            options=[RESUME, ROLL_BACK, STOP],
            options_mapping={
                RESUME: names.batch(batch, names.RESUME),
                ROLL_BACK: names.batch(batch, names.PAUSE_ROLLBACK),
                STOP: names.batch(batch, names.PAUSE_STOP),
            },
            defaults=[default],
            response_timeout=plan.policy.pause.timeout,
            assigned_users=assigned(plan),
            **kwargs,
        )
        self.plan = plan
        self.batch = batch

    def execute(self, context: Any) -> Any:
        ctx = runtime.run_context(context["ti"])
        verdict = context["ti"].xcom_pull(task_ids=names.batch(self.batch, names.GATE)) or {}
        default = self.defaults[0] if self.defaults else ROLL_BACK
        prompt = human.ask_pause(
            runtime.services(),
            self.plan,
            ctx,
            self.batch,
            verdict,
            default,
            rollout_url(context["ti"]),
        )
        self.subject = prompt.subject or self.subject
        self.body = prompt.body
        return super().execute(context)
