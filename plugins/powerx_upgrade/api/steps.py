"""Steps the control plane's routes share: the run or plan a request names, the approval token
used up, a control recorded in the ledger."""

from __future__ import annotations

from typing import Any

from powerx_upgrade.airflow_client import APPROVAL_HEADER
from powerx_upgrade.api.auth import Caller
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.ledger import Ledger, RunRecord


def run_or_404(ledger: Ledger, run_id: str) -> RunRecord:
    run = ledger.get_run(run_id)
    if run is None:
        raise Refused(404, "unknown_run", f"no run {run_id!r} in the ledger", run_id=None)
    return run


def require_active(run: RunRecord, what: str) -> None:
    if not run.active:
        raise Refused(
            409,
            "run_finished",
            f"run {run.run_id} has ended (outcome {run.outcome}): '{what}' needs an active run"
            + ("; POST /rollback rolls a finished run back" if what == "rollback" else ""),
            run_id=run.run_id,
        )


def request_control(ledger: Ledger, run_id: str, kind: str, **fields: Any) -> Any:
    """Record a control; a run that ended in the meantime is a 409, not a 500."""
    from powerx_upgrade.ledger import RunNotActive

    try:
        return ledger.request_control(run_id, kind, **fields)
    except RunNotActive as exc:
        raise Refused(409, "run_finished", str(exc), run_id=run_id) from None


def config_dir(settings: ApiSettings) -> Any:
    from powerx_upgrade.config import ConfigNotFound

    try:
        return settings.config_dir()
    except ConfigNotFound as exc:
        raise Refused(409, "no_config", f"the api-server has no plan config: {exc}") from None


def plan_of(settings: ApiSettings, run: RunRecord) -> Any:
    from powerx_upgrade.config import load_config

    config = load_config([config_dir(settings)])
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


def approve(
    settings: ApiSettings, caller: Caller, token: str | None, *, operation: str, run: RunRecord
) -> Any:
    """The approval token, verified and used up (single use), or a 401/403 refusal."""
    from powerx_upgrade.rollout.approvals import accept_approval
    from powerx_upgrade.security.approval import ApprovalRefused

    try:
        plan: Any = plan_of(settings, run)
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
