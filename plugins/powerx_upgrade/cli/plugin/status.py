"""A run's status, one model whether it came from the control plane or from Airflow's REST API."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from powerx_upgrade.airflow_client import plan_id_of
from powerx_upgrade.cli.plugin.common import TERMINAL_STATES

BATCH_TASK = re.compile(r"^batch_(\d+)\.(\w+)$")


@dataclass
class BatchRow:
    index: int
    name: str
    tenants: str = "-"
    deployed: str = "-"
    failed: str = "-"
    verdict: str = "-"
    decision: str = "-"
    reason: str = ""


@dataclass
class RunStatus:
    """What `status` shows of a run, whichever API it came from.

    :param source: `control-plane` (GET /runs/{id}) or `airflow` (REST API only).
    """

    run_id: str
    dag_id: str
    plan_id: str | None = None
    state: str | None = None
    outcome: str | None = None
    target_version: str | None = None
    batches: list[BatchRow] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    takeover: bool = False
    waiting: list[str] = field(default_factory=list)
    source: str = "control-plane"

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL_STATES


def _count(value: Any) -> str:
    if value is None:
        return "-"
    return str(len(value)) if isinstance(value, list | tuple) else str(value)


def _who(item: Mapping[str, Any]) -> str:
    actor, via = item.get("actor"), item.get("via")
    if not actor or via in (None, "auto"):
        return ""
    return f" ({actor} via {via})" if via else f" ({actor})"


def status_from_api(
    payload: Mapping[str, Any], *, state: str | None = None, waiting: Sequence[str] = ()
) -> RunStatus:
    """The status from the control plane's `GET /runs/{run_id}` answer.

    :param payload: the answer.
    :param state: the Airflow run state (the API's `status` is the ledger's).
    :param waiting: the run's pending human prompts.
    """
    decisions = list(payload.get("decisions") or [])
    last: dict[int, Mapping[str, Any]] = {}
    for decision in decisions:
        index = decision.get("batch_index", decision.get("batch"))
        if isinstance(index, int):
            last[index] = decision
    rows = []
    for batch in payload.get("batches") or []:
        index = int(batch["index"])
        decided = last.get(index)
        rows.append(
            BatchRow(
                index=index,
                name=str(batch.get("name") or f"batch {index}"),
                tenants=_count(batch.get("tenants")),
                deployed=_count(batch.get("deployed")),
                failed=_count(batch.get("failed")),
                verdict=str(batch.get("verdict") or "-"),
                decision=f"{decided['decision']}{_who(decided)}" if decided else "-",
                reason=str(batch.get("summary") or batch.get("reason") or ""),
            )
        )
    return RunStatus(
        run_id=str(payload["run_id"]),
        dag_id=str(payload.get("dag_id") or ""),
        plan_id=payload.get("plan_id"),
        state=state or payload.get("status"),
        outcome=payload.get("outcome"),
        target_version=payload.get("target_version"),
        batches=rows,
        decisions=decisions,
        controls=list(payload.get("controls") or []),
        approvals=list(payload.get("approvals") or []),
        takeover=bool(payload.get("takeover")),
        waiting=list(waiting),
    )


_DECISION_TASKS = (
    ("pause_rollback", "rollback (after pause)"),
    ("pause_stop", "stop (after pause)"),
    ("resume", "resume (after pause)"),
    ("rejected", "rejected"),
    ("promote", "promote"),
    ("rollback", "rollback"),
    ("pause", "pause"),
)


def status_from_airflow(
    run: Mapping[str, Any],
    task_instances: Sequence[Mapping[str, Any]],
    *,
    plan_summary: Mapping[str, Any] | None = None,
    gates: Mapping[int, Mapping[str, Any]] | None = None,
    record: Mapping[str, Any] | None = None,
    waiting: Sequence[str] = (),
) -> RunStatus:
    """The status from Airflow's REST API alone (no control plane): batches from the
    `preflight.plan` XCom, verdicts from each `batch_N.gate` XCom, the decision from the branch
    task that ran, the outcome from the `finalize.record` XCom.

    :param run: `GET .../dagRuns/{run_id}`.
    :param task_instances: the run's task instances.
    :param plan_summary: `preflight.plan`'s XCom (None before it ran).
    :param gates: batch index -> that gate's XCom (its verdict).
    :param record: `finalize.record`'s XCom (None before it ran).
    :param waiting: the run's pending human prompts.
    """
    tasks: dict[int, dict[str, list[str | None]]] = {}
    for ti in task_instances:
        match = BATCH_TASK.match(ti["task_id"])
        if match:
            by_name = tasks.setdefault(int(match[1]), {})
            by_name.setdefault(match[2], []).append(ti.get("state"))
    planned = {int(b["index"]): b for b in (plan_summary or {}).get("batches") or []}
    rows = [
        _airflow_row(k, planned.get(k), tasks.get(k, {}), (gates or {}).get(k))
        for k in sorted(set(planned) | set(tasks))
    ]
    conf = run.get("conf") or {}
    return RunStatus(
        run_id=str(run["dag_run_id"]),
        dag_id=str(run["dag_id"]),
        plan_id=plan_id_of(str(run["dag_id"])),
        state=run.get("state"),
        outcome=(record or {}).get("outcome"),
        target_version=conf.get("target_version"),
        batches=rows,
        waiting=list(waiting),
        source="airflow",
    )


def _airflow_row(
    index: int,
    planned: Mapping[str, Any] | None,
    tasks: Mapping[str, list[str | None]],
    gate: Mapping[str, Any] | None,
) -> BatchRow:
    row = BatchRow(index=index, name=str((planned or {}).get("name") or ""))
    if planned and planned.get("size") is not None:
        row.tenants = str(planned["size"])
    shards = tasks.get("deploy") or []
    if shards and any(s is not None for s in shards):
        row.deployed = f"{sum(1 for s in shards if s == 'success')}/{len(shards)} shards"
        row.failed = str(sum(1 for s in shards if s == "failed"))
    if gate:
        row.verdict = str(gate.get("phase") or "-")
        row.reason = str(gate.get("summary") or gate.get("reason") or "")
    elif (tasks.get("gate") or [None])[0] in ("deferred", "running", "queued"):
        row.verdict = "baking"
    for task, label in _DECISION_TASKS:
        if (tasks.get(task) or [None])[0] == "success":
            row.decision = label
            break
    else:
        if (tasks.get("pause") or tasks.get("approve") or [None])[0] == "deferred":
            row.decision = "waiting for a human"
    return row


def waiting_prompts(details: Sequence[Mapping[str, Any]]) -> list[str]:
    """Pending human-in-the-loop requests as one line each: what the run waits for and since
    when, then the subject and the options (`batch 2 waits for approval since 17:22:50:
    Approve batch 2 of crm-sync? [Approve, Reject]`)."""
    from powerx_upgrade.rollout.evidence import waiting_line

    lines = []
    for detail in details:
        ti = detail.get("task_instance") or {}
        task = str(ti.get("task_id") or detail.get("task_id") or "?")
        options = ", ".join(detail.get("options") or [])
        said = waiting_line(task, detail.get("created_at"))
        lines.append(f"{said}: {detail.get('subject') or ''} [{options}]")
    return lines
