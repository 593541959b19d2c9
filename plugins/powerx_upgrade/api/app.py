"""The control-plane API (FastAPI), mounted by Airflow's api-server at
`/internal/version/upgrade`: plans, rollback, run status, runtime adjustments, human decisions
and reports.

Every request is authenticated with Airflow's own token and authorised on the plan's DAG;
critical operations also need an approval token (`X-Approval-Token`). Every refusal answers a
JSON error, changes nothing and is audited (`api.refused`) in the ledger's audit outbox; every
acceptance is audited too (`api.accepted`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from powerx_upgrade.api import views
from powerx_upgrade.api.airflow_rest import ROLLBACK_DAG, AirflowRest
from powerx_upgrade.api.auth import Caller, presented_token, require
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.plans import PlanStore, check_plan_id, problem_json
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.ledger import Ledger, RunRecord
from powerx_upgrade.orchestration.description import dag_id_for
from powerx_upgrade.rollout.record import audit_payload

log = logging.getLogger(__name__)

URL_PREFIX = "/internal/version/upgrade"
APPROVAL_HEADER = "X-Approval-Token"
CLIENT_HEADER = "X-PowerX-Client"
"""`cli` when the request comes from `powerx plugin ...`: recorded as via cli instead of api."""
SAFE_METHODS = ("GET", "HEAD")
RollbackScope = Literal["all_upgraded", "batch", "failed_tenants"]
HITL_DECISIONS = {
    # decision -> (the waiting task's suffix, the option to choose)
    "approve": (".approve", "Approve"),
    "reject": (".approve", "Reject"),
    "resume": (".pause", "Resume"),
    "rollback": (".pause", "Roll back"),
    "stop": (".pause", "Stop"),
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanBody(_Body):
    plan_id: str = Field(description="the plan id: 1-63 of a-z, 0-9, '-'")
    plan: dict[str, Any] = Field(description="the plan, as under plans.<plan_id> in the YAML")


class RollbackBody(_Body):
    run_id: str | None = Field(default=None, min_length=1, max_length=250)
    plan_id: str | None = None
    scope: RollbackScope | None = None
    reason: str = Field(min_length=1, max_length=2000)


class DecisionBody(_Body):
    decision: Literal[
        "approve", "reject", "resume", "rollback", "stop", "pause", "takeover", "release"
    ]
    batch: int | None = Field(default=None, ge=1)
    reason: str = Field(min_length=1, max_length=2000)


class AdjustBody(_Body):
    adjust: dict[str, Any]
    reason: str = Field(min_length=1, max_length=2000)


# -- app ----------------------------------------------------------------------------------------


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The API. `settings` None: resolved from Airflow at the first request (the plugin is
    imported by every Airflow component; only the api-server serves it)."""
    app = FastAPI(
        title="PowerX grey upgrade: control plane",
        description=__doc__,
        version="1",
    )
    app.state.powerx_settings = settings
    app.add_middleware(BodyLimit)
    app.add_exception_handler(Refused, _refused_handler)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    _routes(app)
    return app


def settings_of(request: Request) -> ApiSettings:
    settings = request.app.state.powerx_settings
    if settings is None:
        settings = request.app.state.powerx_settings = ApiSettings.from_airflow()
    return settings


async def current_caller(request: Request) -> Caller:
    _, source = presented_token(request)
    if source == "cookie" and request.method not in SAFE_METHODS:
        # a browser sends the cookie with any cross-site request: it only ever reads
        raise Refused(
            401,
            "not_authenticated",
            "the Airflow UI's cookie is accepted for reading only: send "
            "'Authorization: Bearer <token>' to change anything",
            headers={"WWW-Authenticate": "Bearer"},
        )
    caller = await settings_of(request).auth.authenticate(request)
    if request.headers.get(CLIENT_HEADER, "").strip().lower() == "cli":
        caller = dataclasses.replace(caller, via="cli")
    request.state.powerx_caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]
SettingsDep = Annotated[ApiSettings, Depends(settings_of)]
ApprovalHeader = Annotated[str | None, Header(alias=APPROVAL_HEADER)]


def _routes(app: FastAPI) -> None:
    @app.post("/plan", status_code=201)
    def post_plan(
        body: PlanBody,
        caller: CallerDep,
        settings: SettingsDep,
        request: Request,
        if_match: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        return _post_plan(settings, request, caller, body, if_match)

    @app.get("/plans/{plan_id}")
    def get_plan(plan_id: str, caller: CallerDep, settings: SettingsDep) -> JSONResponse:
        return _get_plan(settings, caller, plan_id)

    @app.post("/rollback", status_code=202)
    def post_rollback(
        body: RollbackBody,
        caller: CallerDep,
        settings: SettingsDep,
        request: Request,
        approval: ApprovalHeader = None,
    ) -> JSONResponse:
        return _post_rollback(settings, request, caller, body, approval)

    @app.get("/runs/{run_id}")
    def get_run(run_id: str, caller: CallerDep, settings: SettingsDep) -> dict[str, Any]:
        ledger = settings.ledger()
        run = _run_or_404(ledger, run_id)
        require(settings.auth, caller, method="GET", dag_id=run.dag_id)
        return views.run_view(ledger, run)

    @app.patch("/runs/{run_id}", status_code=202)
    def patch_run(
        run_id: str,
        body: AdjustBody,
        caller: CallerDep,
        settings: SettingsDep,
        request: Request,
        approval: ApprovalHeader = None,
    ) -> JSONResponse:
        return _patch_run(settings, request, caller, run_id, body, approval)

    @app.post("/runs/{run_id}/decisions")
    def post_decision(
        run_id: str,
        body: DecisionBody,
        caller: CallerDep,
        settings: SettingsDep,
        request: Request,
        approval: ApprovalHeader = None,
    ) -> JSONResponse:
        return _post_decision(settings, request, caller, run_id, body, approval)

    @app.get("/runs/{run_id}/report")
    def get_report(
        run_id: str,
        caller: CallerDep,
        settings: SettingsDep,
        format: Annotated[Literal["html", "md", "json"], Query()] = "html",
    ) -> Response:
        ledger = settings.ledger()
        run = _run_or_404(ledger, run_id)
        require(settings.auth, caller, method="GET", dag_id=run.dag_id)
        return views.report_response(ledger, run, format, base=settings.reports_base)


# -- plans --------------------------------------------------------------------------------------


def _post_plan(
    settings: ApiSettings, request: Request, caller: Caller, body: PlanBody, if_match: str | None
) -> JSONResponse:
    plan_id = check_plan_id(body.plan_id)
    store = PlanStore(_config_dir(settings))
    require(settings.auth, caller, method="PUT", dag_id=dag_id_for(plan_id), entity=None)
    written = store.write(plan_id, body.plan, if_match)
    event = "created" if written.created else "updated"
    reparse = _request_reparse(settings, caller)
    _accepted(
        settings,
        request,
        caller,
        f"plan.{event}",
        run_id=None,
        detail={"plan_id": plan_id, "etag": written.etag, "path": str(written.path)},
    )
    answer = {
        "plan_id": plan_id,
        "dag_id": written.dag_id,
        "etag": written.etag,
        "path": str(written.path),
        "created": written.created,
        "plan": body.plan,
        "warnings": [problem_json(p, plan_id) for p in written.warnings],
        "reparse_requested": reparse,
    }
    return JSONResponse(
        answer, status_code=201 if written.created else 200, headers={"ETag": written.etag}
    )


def _request_reparse(settings: ApiSettings, caller: Caller) -> bool:
    """Best effort: the plans' loader file (the one that also defines the rollback DAG) is
    parsed now, so the new DAG shows in seconds; else at the dag-processor's next pass."""
    try:
        AirflowRest(settings.airflow_url(), caller.token, timeout=10).reparse_file_of(ROLLBACK_DAG)
    except Refused as exc:
        log.info("no priority parse of the plans' DAG file: %s", exc.message)
        return False
    return True


def _get_plan(settings: ApiSettings, caller: Caller, plan_id: str) -> JSONResponse:
    import yaml

    check_plan_id(plan_id)
    require(settings.auth, caller, method="GET", dag_id=dag_id_for(plan_id), entity=None)
    store = PlanStore(_config_dir(settings))
    found = store.read(plan_id)
    if found is None:
        raise Refused(
            404,
            "unknown_plan",
            f"no plan file plans/{plan_id}.yaml (plans written by hand in "
            "upgrade_policies.yaml are not served here)",
        )
    data, etag = found
    document = yaml.safe_load(data.decode("utf-8")) or {}
    plan = (document.get("plans") or {}).get(plan_id)
    answer = {
        "plan_id": plan_id,
        "dag_id": dag_id_for(plan_id),
        "etag": etag,
        "path": str(store.path_of(plan_id)),
        "plan": plan,
    }
    return JSONResponse(answer, headers={"ETag": etag})


# -- rollback -----------------------------------------------------------------------------------


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
    needs_dag = not run.active or any(_is(w, ".approve") for w in waiting or [])
    paused = rest.dag_paused(ROLLBACK_DAG) if needs_dag else False
    claims = _approve(settings, caller, token, operation="rollback", run=run)
    scope = body.scope or "all_upgraded"
    control = _request_control(
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
    _accepted(settings, request, caller, "rollback", run_id=run.run_id, detail=answer)
    return JSONResponse(answer, status_code=202)


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
        return _waiting(rest, run)
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
        run = _run_or_404(ledger, body.run_id)
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
    pause = next((w for w in waiting if _is(w, ".pause")), None)
    approval = next((w for w in waiting if _is(w, ".approve")), None)
    if pause is not None:
        answered = _answer(settings, ledger, rest, run, caller, claims, pause, "rollback")
        return {"mode": "active_run", "answered": answered}
    if approval is not None:
        answered = _answer(settings, ledger, rest, run, caller, claims, approval, "reject")
        started = _trigger_rollback(rest, run, body.scope, body.reason, control.id, paused)
        return {"mode": "rollback_dag", "answered": answered, **started}
    return {"mode": "active_run"}


def _is(waiting: dict[str, Any], suffix: str) -> bool:
    """Whether a waiting HITL request is a pause (`.pause`) or an approval (`.approve`)."""
    return str(waiting.get("task_id") or "").endswith(suffix)


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
    started = rest.trigger(ROLLBACK_DAG, conf, note=note, paused=paused)
    return {
        "dag_id": ROLLBACK_DAG,
        "dag_run_id": started.get("dag_run_id"),
        "unpaused": started.get("unpaused", False),
    }


# -- human decisions and controls ---------------------------------------------------------------


def _post_decision(
    settings: ApiSettings,
    request: Request,
    caller: Caller,
    run_id: str,
    body: DecisionBody,
    token: str | None,
) -> JSONResponse:
    ledger = settings.ledger()
    run = _run_or_404(ledger, run_id)
    require(settings.auth, caller, method="PUT", dag_id=run.dag_id)
    _require_active(run, body.decision)
    if body.decision in HITL_DECISIONS:
        rest = AirflowRest(settings.airflow_url(), caller.token)
        request_ = _waiting_for(rest, run, body.decision, body.batch)
        claims = _approve(settings, caller, token, operation=body.decision, run=run)
        answered = _answer(
            settings, ledger, rest, run, caller, claims, request_, body.decision, body.reason
        )
        answer = {"run_id": run.run_id, "decision": body.decision, **answered}
        status = 200
    else:
        _check_control(ledger, run, body.decision)
        claims = _approve(settings, caller, token, operation=body.decision, run=run)
        control = _request_control(
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
    _accepted(settings, request, caller, f"decision.{body.decision}", run.run_id, answer)
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


def _waiting(rest: AirflowRest, run: RunRecord) -> list[dict[str, Any]]:
    return rest.waiting(run.dag_id, run.run_id)


def _waiting_for(
    rest: AirflowRest, run: RunRecord, decision: str, batch: int | None
) -> dict[str, Any]:
    """The waiting request a decision answers: an approval for approve/reject, a pause for
    resume/rollback/stop (of `batch`, when given); 409 when none waits."""
    suffix, _ = HITL_DECISIONS[decision]
    kind = "an approval" if suffix == ".approve" else "a pause"
    for waiting in _waiting(rest, run):
        task_id = str(waiting.get("task_id", ""))
        if not task_id.endswith(suffix):
            continue
        if batch is not None and task_id != f"batch_{batch}{suffix}":
            continue
        return waiting
    where = f" at batch {batch}" if batch is not None else ""
    raise Refused(
        409,
        "nothing_waiting",
        f"run {run.run_id} does not wait for {kind}{where}: '{decision}' answers {kind}",
        run_id=run.run_id,
    )


def _answer(
    settings: ApiSettings,
    ledger: Ledger,
    rest: AirflowRest,
    run: RunRecord,
    caller: Caller,
    claims: Any,
    waiting: dict[str, Any],
    decision: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Answer a waiting human decision as the caller: first an `answer` control (so the task
    records via api, the actor and the approval token id), then Airflow's HITL PATCH."""
    _, option = HITL_DECISIONS[decision]
    task_id = str(waiting["task_id"])
    control = _request_control(
        ledger,
        run.run_id,
        "answer",
        payload={"task_id": task_id, "decision": decision, "chosen": [option], "reason": reason},
        batch_index=_batch_of(task_id),
        actor=caller.name,
        via=caller.via,
        approval_jti=claims.jti,
    )
    kwargs: dict[str, Any] = {"created_at": waiting.get("created_at")}
    if settings.hitl_settle is not None:
        kwargs["settle"] = settings.hitl_settle
    try:
        rest.answer(
            run.dag_id,
            run.run_id,
            task_id,
            [option],
            map_index=int(waiting.get("map_index", -1)),
            **kwargs,
        )
    except Refused as exc:
        ledger.settle_control(control.id, outcome="refused", note=exc.message)
        raise
    return {"task_id": task_id, "chosen": [option], "answer_control_id": control.id}


def _batch_of(task_id: str) -> int | None:
    group = task_id.split(".", 1)[0]
    if group.startswith("batch_") and group[6:].isdigit():
        return int(group[6:])
    return None


def _require_active(run: RunRecord, what: str) -> None:
    if not run.active:
        raise Refused(
            409,
            "run_finished",
            f"run {run.run_id} has ended (outcome {run.outcome}): '{what}' needs an active run"
            + ("; POST /rollback rolls a finished run back" if what == "rollback" else ""),
            run_id=run.run_id,
        )


# -- adjustments --------------------------------------------------------------------------------


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
    run = _run_or_404(ledger, run_id)
    require(settings.auth, caller, method="PUT", dag_id=run.dag_id)
    _require_active(run, "adjust")
    plan = _plan_of(settings, run)
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
    claims = _approve(settings, caller, token, operation="adjust", run=run)
    control = _request_control(
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
    _accepted(settings, request, caller, "adjust", run.run_id, answer)
    return JSONResponse(answer, status_code=202)


# -- shared steps -------------------------------------------------------------------------------


def _request_control(ledger: Ledger, run_id: str, kind: str, **fields: Any) -> Any:
    """Record a control; a run that ended in the meantime is a 409, not a 500."""
    from powerx_upgrade.ledger import RunNotActive

    try:
        return ledger.request_control(run_id, kind, **fields)
    except RunNotActive as exc:
        raise Refused(409, "run_finished", str(exc), run_id=run_id) from None


def _config_dir(settings: ApiSettings) -> Any:
    from powerx_upgrade.config import ConfigNotFound

    try:
        return settings.config_dir()
    except ConfigNotFound as exc:
        raise Refused(409, "no_config", f"the api-server has no plan config: {exc}") from None


def _run_or_404(ledger: Ledger, run_id: str) -> RunRecord:
    run = ledger.get_run(run_id)
    if run is None:
        raise Refused(404, "unknown_run", f"no run {run_id!r} in the ledger", run_id=None)
    return run


def _plan_of(settings: ApiSettings, run: RunRecord) -> Any:
    from powerx_upgrade.config import load_config

    config = load_config([_config_dir(settings)])
    plan = config.plans.get(run.plan_id)
    if plan is None:
        raise Refused(
            409,
            "unknown_plan",
            f"plan {run.plan_id!r} of run {run.run_id} is not in the config now "
            f"(or has errors: `powerx plan validate`)",
            run_id=run.run_id,
        )
    return plan


def _approve(
    settings: ApiSettings, caller: Caller, token: str | None, *, operation: str, run: RunRecord
) -> Any:
    """The approval token, verified and used up (single use), or a 401/403 refusal."""
    from powerx_upgrade.rollout.approvals import accept_approval
    from powerx_upgrade.security.approval import ApprovalRefused

    try:
        plan: Any = _plan_of(settings, run)
    except Refused:  # the plan left the config: its id, with the strictest token rules
        plan = run.plan_id
    try:
        return accept_approval(
            settings.ledger(),
            token,
            settings.approval_settings(),
            operation=operation,
            plan=plan,
            run_id=run.run_id,
            via=caller.via,
            actor=caller.name,
            now=settings.now(),
        )
    except ApprovalRefused as exc:
        status = {"missing": 401, "not_configured": 503}.get(exc.code, 403)
        message = "approval token required" if exc.code == "missing" else exc.message
        raise Refused(
            status,
            exc.code,
            f"{message} ({APPROVAL_HEADER}: operation {operation!r} needs action "
            f"{_action(operation)!r})"
            if exc.code == "missing"
            else message,
            run_id=run.run_id,
        ) from None


def _action(operation: str) -> str:
    from powerx_upgrade.security.approval import ACTION_FOR

    return ACTION_FOR.get(operation, operation)


# -- audit --------------------------------------------------------------------------------------


def _accepted(
    settings: ApiSettings,
    request: Request,
    caller: Caller,
    operation: str,
    run_id: str | None,
    detail: dict[str, Any],
) -> None:
    settings.ledger().enqueue_audit(
        run_id=run_id,
        event="api.accepted",
        payload=audit_payload(
            "api.accepted",
            actor=caller.name,
            run_id=run_id,
            details={
                "operation": operation,
                "method": request.method,
                "path": request.url.path,
                "user": caller.name,
                "auth": caller.source,
                **{k: v for k, v in detail.items() if k != "operation"},
            },
        ),
    )


def audit_refusal(
    settings: ApiSettings | None, request: Request, refused: Refused, user: str | None
) -> None:
    """`api.refused` in the outbox: reason, status, path, user; never a token. A ledger that
    cannot be written is logged and does not change the answer."""
    if settings is None:
        return
    payload = audit_payload(
        "api.refused",
        actor=user or "anonymous",
        run_id=refused.run_id,
        reason=refused.code,
        details={
            "reason": refused.code,
            "status": refused.status,
            "method": request.method,
            "path": request.url.path,
            "user": user,
            "message": refused.message,
        },
    )
    try:
        settings.ledger().enqueue_audit(run_id=refused.run_id, event="api.refused", payload=payload)
    except Exception:  # the refusal still answers; the log keeps the reason
        log.exception("could not audit a refused API request: %s", payload)


async def _refused_handler(request: Request, exc: Refused) -> JSONResponse:
    caller = getattr(request.state, "powerx_caller", None)
    settings = _settings_or_none(request)
    await run_in_threadpool(audit_refusal, settings, request, exc, caller.name if caller else None)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [_validation_problem(error) for error in exc.errors()]
    refused = Refused(
        422,
        "invalid_body",
        "; ".join(f"{p['path']}: {p['message']}" for p in problems),
        problems=problems,
    )
    return await _refused_handler(request, refused)


def _validation_problem(error: Any) -> dict[str, Any]:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("body",)]
    path = ".".join(loc) or "body"
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        message = f"unknown field '{loc[-1] if loc else ''}'"
    elif error.get("type") == "missing":
        message = "required field is missing"
    return {"path": path, "message": message}


def _settings_or_none(request: Request) -> ApiSettings | None:
    try:
        return settings_of(request)
    except Exception:  # not even the settings resolve: answer without an audit record
        log.exception("the API's settings could not be resolved")
        return None


# -- body limit ---------------------------------------------------------------------------------


class BodyLimit:
    """413 for a body over the limit, by its Content-Length or by what actually streams in
    (chunked bodies have no length); the app never sees such a request.

    The body (at most the limit) is read here and replayed to the app."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        settings = _settings_or_none(request)
        limit = settings.body_limit if settings else 64 * 1024
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, settings, limit, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, settings, limit, size)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        settings: ApiSettings | None,
        limit: int,
        size: int,
    ) -> None:
        request = Request(scope)
        refused = Refused(
            413,
            "body_too_large",
            f"the request body is over {limit} bytes ({size}{'+' if size > limit else ''} "
            f"read or declared); nothing was read further or changed",
        )
        user = await _user_for_audit(request, settings)
        await run_in_threadpool(audit_refusal, settings, request, refused, user)
        response = JSONResponse(refused.body(), status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)


async def _user_for_audit(request: Request, settings: ApiSettings | None) -> str | None:
    """Who sent a request refused before authentication, when their token says (best effort)."""
    token, _ = presented_token(request)
    if settings is None or token is None:
        return None
    try:
        return (await settings.auth.authenticate(request)).name
    except Exception:
        return None
