"""`POST /runs/{run_id}/decisions`: answer a waiting human decision, or record a control
(pause, takeover, release) the gate reads at its next poke."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from powerx_upgrade.api import hitl
from powerx_upgrade.api.airflow_rest import AirflowRest
from powerx_upgrade.api.audit import accepted
from powerx_upgrade.api.auth import Caller, require
from powerx_upgrade.api.bodies import DecisionBody
from powerx_upgrade.api.deps import ApprovalHeader, CallerDep, SettingsDep
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.api.steps import approve, request_control, require_active, run_or_404
from powerx_upgrade.ledger import Ledger, RunRecord

router = APIRouter()


@router.post("/runs/{run_id}/decisions")
def post_decision(
    run_id: str,
    body: DecisionBody,
    caller: CallerDep,
    settings: SettingsDep,
    request: Request,
    approval: ApprovalHeader = None,
) -> JSONResponse:
    return _post_decision(settings, request, caller, run_id, body, approval)


def _post_decision(
    settings: ApiSettings,
    request: Request,
    caller: Caller,
    run_id: str,
    body: DecisionBody,
    token: str | None,
) -> JSONResponse:
    ledger = settings.ledger()
    run = run_or_404(ledger, run_id)
    require(settings.auth, caller, method="PUT", dag_id=run.dag_id)
    require_active(run, body.decision)
    if body.decision in hitl.HITL_DECISIONS:
        rest = AirflowRest(settings.airflow_url(), caller.token)
        request_ = hitl.waiting_for(rest, run, body.decision, body.batch)
        claims = approve(settings, caller, token, operation=body.decision, run=run)
        answered = hitl.answer(
            settings, ledger, rest, run, caller, claims, request_, body.decision, body.reason
        )
        answer = {"run_id": run.run_id, "decision": body.decision, **answered}
        status = 200
    else:
        _check_control(ledger, run, body.decision)
        claims = approve(settings, caller, token, operation=body.decision, run=run)
        control = request_control(
            ledger,
            run.run_id,
            body.decision,
            payload={"reason": body.reason},
            batch_index=body.batch,
            actor=caller.name,
            via=caller.via,
            approval_jti=claims.jti,
        )
        answer = {"run_id": run.run_id, "decision": body.decision, "control_id": control.id}
        status = 202
    answer["approval_jti"] = claims.jti
    accepted(settings, request, caller, f"decision.{body.decision}", run.run_id, answer)
    return JSONResponse(answer, status_code=status)


def _check_control(ledger: Ledger, run: RunRecord, decision: str) -> None:
    from powerx_upgrade.rollout.controls import takeover_active

    current = takeover_active(ledger, run.run_id)
    if decision == "release" and current is None:
        raise Refused(
            409,
            "no_takeover",
            f"run {run.run_id} is not under manual takeover: nothing to release",
            run_id=run.run_id,
        )
    if decision == "takeover" and current is not None:
        raise Refused(
            409,
            "already_taken_over",
            f"run {run.run_id} is already under manual takeover by {current.actor} "
            f"(since {current.requested_at.isoformat()})",
            run_id=run.run_id,
        )
