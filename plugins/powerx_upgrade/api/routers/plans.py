"""`POST /plan` and `GET /plans/{plan_id}`: plan files the api-server writes and serves."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from powerx_upgrade.airflow_client import ROLLBACK_DAG_ID
from powerx_upgrade.api.airflow_rest import AirflowRest
from powerx_upgrade.api.audit import accepted
from powerx_upgrade.api.auth import Caller, require
from powerx_upgrade.api.bodies import PlanBody, PreviewBody
from powerx_upgrade.api.deps import ApprovalHeader, CallerDep, SettingsDep
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.loosen import approval_of_loosening
from powerx_upgrade.api.plans import PlanStore, check_plan_id, preview_document, problem_json
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.api.steps import config_dir
from powerx_upgrade.orchestration.description import dag_id_for

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/plan", status_code=201)
def post_plan(
    body: PlanBody,
    caller: CallerDep,
    settings: SettingsDep,
    request: Request,
    if_match: Annotated[str | None, Header()] = None,
    approval: ApprovalHeader = None,
) -> JSONResponse:
    return _post_plan(settings, request, caller, body, if_match, approval)


@router.post("/plans/{plan_id}/preview")
def preview_plan(
    plan_id: str, body: PreviewBody, caller: CallerDep, settings: SettingsDep
) -> JSONResponse:
    """The plan's batches for the given tenants, each batch's estimated time (deploy latency
    measured in the ledger, else a stated default) and whether the run fits its window."""
    require(settings.auth, caller, method="GET", dag_id=dag_id_for(plan_id), entity=None)
    return JSONResponse(preview_document(config_dir(settings), settings.ledger(), plan_id, body))


@router.get("/plans/{plan_id}")
def get_plan(plan_id: str, caller: CallerDep, settings: SettingsDep) -> JSONResponse:
    return _get_plan(settings, caller, plan_id)


def _post_plan(
    settings: ApiSettings,
    request: Request,
    caller: Caller,
    body: PlanBody,
    if_match: str | None,
    token: str | None = None,
) -> JSONResponse:
    plan_id = check_plan_id(body.plan_id)
    store = PlanStore(config_dir(settings))
    require(settings.auth, caller, method="PUT", dag_id=dag_id_for(plan_id), entity=None)
    used: dict[str, Any] = {}
    check = approval_of_loosening(settings, caller, plan_id, token, used)
    written = store.write(plan_id, body.plan, if_match, check)
    event = "created" if written.created else "updated"
    reparse = _request_reparse(settings, caller)
    accepted(
        settings,
        request,
        caller,
        f"plan.{event}",
        run_id=None,
        detail={"plan_id": plan_id, "etag": written.etag, "path": str(written.path), **used},
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
        **used,
    }
    return JSONResponse(
        answer, status_code=201 if written.created else 200, headers={"ETag": written.etag}
    )


def _request_reparse(settings: ApiSettings, caller: Caller) -> bool:
    """Best effort: the plans' loader file (the one that also defines the rollback DAG) is
    parsed now, so the new DAG shows in seconds; else at the dag-processor's next pass."""
    try:
        AirflowRest(settings.airflow_url(), caller.token, timeout=10).reparse_file_of(
            ROLLBACK_DAG_ID
        )
    except Refused as exc:
        log.info("no priority parse of the plans' DAG file: %s", exc.message)
        return False
    return True


def _get_plan(settings: ApiSettings, caller: Caller, plan_id: str) -> JSONResponse:
    import yaml

    check_plan_id(plan_id)
    require(settings.auth, caller, method="GET", dag_id=dag_id_for(plan_id), entity=None)
    store = PlanStore(config_dir(settings))
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
