"""`POST /rollback`: an active run rolls back through its own rollback group, a finished one
through the rollback DAG."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from powerx_upgrade.airflow_client import ROLLBACK_DAG_ID
from powerx_upgrade.api import hitl
from powerx_upgrade.api.airflow_rest import AirflowRest
from powerx_upgrade.api.audit import accepted
from powerx_upgrade.api.auth import Caller, require
from powerx_upgrade.api.bodies import RollbackBody
from powerx_upgrade.api.deps import ApprovalHeader, CallerDep, SettingsDep
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.plans import check_plan_id
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.api.steps import approve, plan_of, request_control, run_or_404
from powerx_upgrade.ledger import Ledger, RunRecord

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/rollback", status_code=202)
def post_rollback(
    body: RollbackBody,
    caller: CallerDep,
    settings: SettingsDep,
    request: Request,
    approval: ApprovalHeader = None,
) -> JSONResponse:
    return _post_rollback(settings, request, caller, body, approval)


def _post_rollback(
    settings: ApiSettings,
    request: Request,
    caller: Caller,
    body: RollbackBody,
    token: str | None,
) -> JSONResponse:
    ledger = settings.ledger()
    run = _rollback_target(ledger, body)
    require(settings.auth, caller, method="PUT", dag_id=run.dag_id)
    _check_rollback(run)
    rest = AirflowRest(settings.airflow_url(), caller.token)
    # Read what Airflow says before the approval token is used up: a refusal changes nothing.
    waiting = _waiting_or_none(rest, run) if run.active else None
    needs_dag = not run.active or any(hitl.is_waiting(w, ".approve") for w in waiting or [])
    paused = rest.dag_paused(ROLLBACK_DAG_ID) if needs_dag else False
    claims = approve(settings, caller, token, operation="rollback", run=run)
    scope, scope_source = _scope(settings, run, body.scope)
    control = request_control(
        ledger,
        run.run_id,
        "rollback",
        payload={"scope": scope, "reason": body.reason},
        actor=caller.name,
        via=caller.via,
        approval_jti=claims.jti,
    )
    answer: dict[str, Any] = {
        "run_id": run.run_id,
        "plan_id": run.plan_id,
        "control_id": control.id,
        "approval_jti": claims.jti,
        "scope": scope,
        "scope_source": scope_source,
    }
    if run.active:
        answer.update(
            _roll_back_active(
                settings, ledger, rest, run, caller, claims, body, control, waiting, paused
            )
        )
    else:
        answer["mode"] = "rollback_dag"
        answer.update(_trigger_rollback(rest, run, scope, body.reason, control.id, paused))
    accepted(settings, request, caller, "rollback", run_id=run.run_id, detail=answer)
    return JSONResponse(answer, status_code=202)


def _scope(settings: ApiSettings, run: RunRecord, asked: str | None) -> tuple[str, str]:
    """The scope the rollback will apply (`rollout.rollback.applied_scope`): the one asked
    for, else the policy's of the run's plan, else all_upgraded (the plan left the config)."""
    from powerx_upgrade.rollout.rollback import applied_scope

    try:
        policy = None if asked else plan_of(settings, run).policy.rollback
    except Refused as exc:
        log.warning("rollback of %s: no policy scope (%s): all_upgraded", run.run_id, exc.message)
        policy = None
    return applied_scope(asked, policy)


def _check_rollback(run: RunRecord) -> None:
    if run.dry_run:
        raise Refused(
            409,
            "dry_run",
            f"run {run.run_id} was a dry run: it upgraded nothing, so nothing rolls back",
            run_id=run.run_id,
        )
    if not run.active and run.outcome == "rolled_back":
        raise Refused(
            409,
            "already_rolled_back",
            f"run {run.run_id} is already rolled back (outcome rolled_back)",
            run_id=run.run_id,
        )


def _waiting_or_none(rest: AirflowRest, run: RunRecord) -> list[dict[str, Any]] | None:
    """The run's waiting human decisions; None when Airflow cannot say (the rollback control
    still works: the gate reads it at its next poke)."""
    try:
        return hitl.waiting_requests(rest, run)
    except Refused as exc:
        if exc.status == 403:
            raise
        log.warning("could not read the waiting decisions of %s: %s", run.run_id, exc.message)
        return None


def _rollback_target(ledger: Ledger, body: RollbackBody) -> RunRecord:
    """The run a rollback request names: its run id, else the plan's active run, else the
    plan's latest run."""
    if body.plan_id is not None:
        check_plan_id(body.plan_id)
    if body.run_id:
        run = run_or_404(ledger, body.run_id)
        if body.plan_id is not None and run.plan_id != body.plan_id:
            raise Refused(
                422,
                "run_not_of_plan",
                f"run {run.run_id} is a run of plan {run.plan_id!r}, not {body.plan_id!r}",
                problems=[
                    {
                        "path": "run_id",
                        "message": f"run {run.run_id} is a run of plan {run.plan_id!r}, "
                        f"not {body.plan_id!r}",
                    }
                ],
                run_id=run.run_id,
            )
        return run
    if body.plan_id is None:
        raise Refused(
            422,
            "invalid_body",
            "give run_id or plan_id",
            problems=[{"path": "run_id", "message": "give run_id or plan_id"}],
        )
    active = [r for r in ledger.active_runs() if r.plan_id == body.plan_id]
    if active:
        return active[-1]
    latest = ledger.runs(plan_id=body.plan_id, limit=1)
    if not latest:
        raise Refused(404, "unknown_run", f"plan {body.plan_id!r} has no run in the ledger")
    return latest[0]


def _roll_back_active(
    settings: ApiSettings,
    ledger: Ledger,
    rest: AirflowRest,
    run: RunRecord,
    caller: Caller,
    claims: Any,
    body: RollbackBody,
    control: Any,
    waiting: list[dict[str, Any]] | None,
    paused: bool,
) -> dict[str, Any]:
    """An active run rolls back through its own rollback group: the gate sees the control at
    its next poke; a waiting pause is answered "Roll back"; a waiting approval is rejected
    and the rollback DAG takes over once the run has ended."""
    if waiting is None:
        return {"mode": "active_run", "warning": "Airflow did not say whether a decision waits"}
    pause = next((w for w in waiting if hitl.is_waiting(w, ".pause")), None)
    approval = next((w for w in waiting if hitl.is_waiting(w, ".approve")), None)
    if pause is not None:
        answered = hitl.answer(settings, ledger, rest, run, caller, claims, pause, "rollback")
        return {"mode": "active_run", "answered": answered}
    if approval is not None:
        answered = hitl.answer(settings, ledger, rest, run, caller, claims, approval, "reject")
        scope = str(control.payload.get("scope") or "all_upgraded")
        started = _trigger_rollback(rest, run, scope, body.reason, control.id, paused)
        return {"mode": "rollback_dag", "answered": answered, **started}
    return {"mode": "active_run"}


def _trigger_rollback(
    rest: AirflowRest,
    run: RunRecord,
    scope: str | None,
    reason: str,
    control_id: int | None,
    paused: bool,
) -> dict[str, Any]:
    conf = {
        "run_id": run.run_id,
        "plan_id": run.plan_id,
        "scope": scope or "all_upgraded",
        "reason": reason,
        "request_id": control_id,
    }
    note = f"rollback of {run.run_id}: {reason}"[:1000]
    started = rest.trigger(ROLLBACK_DAG_ID, conf, note=note, paused=paused)
    return {
        "dag_id": ROLLBACK_DAG_ID,
        "dag_run_id": started.get("dag_run_id"),
        "unpaused": started.get("unpaused", False),
    }
