"""Human decisions through Airflow's HITL API: the waiting request a decision answers, and the
answer sent as the caller after its `answer` control is recorded."""

from __future__ import annotations

from typing import Any

from powerx_upgrade.api.airflow_rest import AirflowRest
from powerx_upgrade.api.auth import Caller
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.api.steps import request_control
from powerx_upgrade.ledger import Ledger, RunRecord
from powerx_upgrade.orchestration import names

HITL_DECISIONS = {
    # decision -> (the waiting task's suffix, the option to choose)
    "approve": (".approve", "Approve"),
    "reject": (".approve", "Reject"),
    "resume": (".pause", "Resume"),
    "rollback": (".pause", "Roll back"),
    "stop": (".pause", "Stop"),
}


def is_waiting(waiting: dict[str, Any], suffix: str) -> bool:
    """Whether a waiting HITL request is a pause (`.pause`) or an approval (`.approve`)."""
    return str(waiting.get("task_id") or "").endswith(suffix)


def waiting_requests(rest: AirflowRest, run: RunRecord) -> list[dict[str, Any]]:
    return rest.waiting(run.dag_id, run.run_id)


def waiting_for(
    rest: AirflowRest, run: RunRecord, decision: str, batch: int | None
) -> dict[str, Any]:
    """The waiting request a decision answers: an approval for approve/reject, a pause for
    resume/rollback/stop (of `batch`, when given); 409 when none waits."""
    suffix, _ = HITL_DECISIONS[decision]
    kind = "an approval" if suffix == ".approve" else "a pause"
    for waiting in waiting_requests(rest, run):
        task_id = str(waiting.get("task_id", ""))
        if not task_id.endswith(suffix):
            continue
        if batch is not None and task_id != names.batch_group(batch) + suffix:
            continue
        return waiting
    where = f" at batch {batch}" if batch is not None else ""
    raise Refused(
        409,
        "nothing_waiting",
        f"run {run.run_id} does not wait for {kind}{where}: '{decision}' answers {kind}",
        run_id=run.run_id,
    )


def answer(
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
    control = request_control(
        ledger,
        run.run_id,
        "answer",
        payload={"task_id": task_id, "decision": decision, "chosen": [option], "reason": reason},
        batch_index=batch_of(task_id),
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


def batch_of(task_id: str) -> int | None:
    group = task_id.split(".", 1)[0]
    if group.startswith("batch_") and group[6:].isdigit():
        return int(group[6:])
    return None
