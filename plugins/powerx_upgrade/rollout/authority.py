"""Who may make a human decision count, on the paths that bypass the control plane: an answer
given in Airflow's own UI or REST API (`PATCH .../hitlDetails`) and a `plugin_upgrade_rollback`
run triggered directly. Where the plan's policy wants MFA for the action (`control.
require_mfa_for`), that action needs an approval token, so such an answer is refused (audited,
the request re-opened) and such a trigger must carry the token in its conf (`approval_token`,
checked by the same validator as the API) or be the control plane's own (a pending rollback
request whose token the API verified). No Airflow here."""

from __future__ import annotations

import uuid
from typing import Any

from powerx_upgrade.domain.models import ControlSpec, Plan
from powerx_upgrade.ledger import ControlRecord, Ledger
from powerx_upgrade.rollout.approvals import accept_approval
from powerx_upgrade.security.approval import ApprovalRefused, ApprovalSettings, action_for

REFUSED = "batch.answer.refused"


def needs_token(plan: Plan | None, decision: str) -> bool:
    """Whether `decision` (approve, reject, resume, rollback, stop) needs an approval token
    under the plan's policy (a plan not known: the strictest default, yes)."""
    control = plan.policy.control if plan is not None else ControlSpec()
    return action_for(decision) in control.require_mfa_for


def rollback_authorised(
    ledger: Ledger,
    *,
    plan: Plan | None,
    plan_id: str,
    run_id: str,
    request: ControlRecord | None,
    token: str | None,
    settings: ApprovalSettings | None,
    user: str | None,
) -> dict[str, Any]:
    """Raise `ApprovalRefused` unless this rollback DAG run may proceed; returns how it was
    authorised (`{"by": "control_plane"|"token"|"policy", "jti": ...}`)."""
    if request is not None and request.approval_jti:
        if not request.pending:
            raise ApprovalRefused(
                "replayed",
                f"request_id {request.id} was already served ({request.outcome}); trigger "
                "through the control plane again or give a new approval_token",
            )
        return {"by": "control_plane", "jti": request.approval_jti}
    if not needs_token(plan, "rollback"):
        return {"by": "policy", "jti": None}
    claims = accept_approval(
        ledger,
        token,
        settings,
        operation="rollback",
        plan=plan if plan is not None else plan_id,
        run_id=run_id,
        via="ui",
        actor=user,
    )
    return {"by": "token", "jti": claims.jti}


def answer_refused(
    services: Any,
    ctx: Any,
    plan: Plan,
    batch: int,
    *,
    task_id: str,
    chosen: list[str],
    user: str | None,
    timed_out: bool,
    decision: str,
) -> bool:
    """Whether a HITL answer must be refused: it came through Airflow itself (no pending
    control-plane answer for the task chose the same) and the policy wants a token for its
    action. A refusal is audited (`batch.answer.refused`); the caller re-opens the request."""
    from powerx_upgrade.rollout import controls

    if timed_out or not needs_token(plan, decision):
        return False
    asked = controls.answer_for(services.ledger, ctx.run_id, task_id)
    if asked is not None and list(asked.payload.get("chosen") or []) == chosen:
        return False  # the control plane's answer: its token was verified and used up
    services.recorder.audit(
        ctx,
        REFUSED,
        actor=user,
        audit_id=f"{ctx.run_id}:answer-refused:{batch}:{uuid.uuid4().hex}",
        details={
            "batch": batch,
            "task_id": task_id,
            "chosen": chosen,
            "decision": decision,
            "via": "ui",
            "reason": f"the policy wants an approval token for {action_for(decision)!r}: "
            "answer through the control plane (powerx plugin decide / POST .../decisions)",
        },
    )
    services.recorder.flush()
    return True
