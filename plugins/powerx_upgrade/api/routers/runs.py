"""`GET /runs/{run_id}` (status), `PATCH /runs/{run_id}` (runtime adjustments) and
`GET /runs/{run_id}/report`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from powerx_upgrade.api import views
from powerx_upgrade.api.audit import accepted
from powerx_upgrade.api.auth import Caller, require
from powerx_upgrade.api.bodies import AdjustBody
from powerx_upgrade.api.deps import ApprovalHeader, CallerDep, SettingsDep
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.api.steps import approve, plan_of, request_control, require_active, run_or_404

router = APIRouter()


@router.get("/runs/{run_id}")
def get_run(run_id: str, caller: CallerDep, settings: SettingsDep) -> dict[str, Any]:
    ledger = settings.ledger()
    run = run_or_404(ledger, run_id)
    require(settings.auth, caller, method="GET", dag_id=run.dag_id)
    return views.run_view(ledger, run)


@router.patch("/runs/{run_id}", status_code=202)
def patch_run(
    run_id: str,
    body: AdjustBody,
    caller: CallerDep,
    settings: SettingsDep,
    request: Request,
    approval: ApprovalHeader = None,
) -> JSONResponse:
    return _patch_run(settings, request, caller, run_id, body, approval)


@router.get("/runs/{run_id}/report")
def get_report(
    run_id: str,
    caller: CallerDep,
    settings: SettingsDep,
    format: Annotated[Literal["html", "md", "json"], Query()] = "html",
) -> Response:
    ledger = settings.ledger()
    run = run_or_404(ledger, run_id)
    require(settings.auth, caller, method="GET", dag_id=run.dag_id)
    return views.report_response(ledger, run, format, base=settings.reports_base)


def _patch_run(
    settings: ApiSettings,
    request: Request,
    caller: Caller,
    run_id: str,
    body: AdjustBody,
    token: str | None,
) -> JSONResponse:
    from powerx_upgrade.domain.adjust import parse_adjustment, validate_adjustment
    from powerx_upgrade.rollout.controls import effective_policy

    ledger = settings.ledger()
    run = run_or_404(ledger, run_id)
    require(settings.auth, caller, method="PUT", dag_id=run.dag_id)
    require_active(run, "adjust")
    plan = plan_of(settings, run)
    adjustment, problems = parse_adjustment(body.adjust)
    if adjustment is not None:
        problems = validate_adjustment(
            plan,
            adjustment,
            started_batches=views.started_batches(ledger, run),
            policy=effective_policy(plan, ledger, run.run_id),
        )
    if problems:
        raise Refused(
            422,
            "invalid_adjustment",
            "; ".join(f"{p.path}: {p.message}" for p in problems),
            problems=[{"path": p.path, "message": p.message} for p in problems],
            run_id=run.run_id,
        )
    claims = approve(settings, caller, token, operation="adjust", run=run)
    control = request_control(
        ledger,
        run.run_id,
        "adjust",
        payload={"adjust": dict(body.adjust), "reason": body.reason},
        actor=caller.name,
        via=caller.via,
        approval_jti=claims.jti,
    )
    answer = {
        "run_id": run.run_id,
        "control_id": control.id,
        "adjust": body.adjust,
        "reason": body.reason,
        "approval_jti": claims.jti,
    }
    accepted(settings, request, caller, "adjust", run.run_id, answer)
    return JSONResponse(answer, status_code=202)
