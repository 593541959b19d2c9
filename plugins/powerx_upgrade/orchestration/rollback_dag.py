"""The `plugin_upgrade_rollback` DAG: the one-click rollback of a run that has finished (and of
one still active, once it ends), described as data like the plan DAGs, then materialised.

    resolve -> wait (while the run is active) -> scope -> execute (mapped) -> verify -> record
    -> report

The steps are thin wrappers around `rollout.late_rollback` and the rollout's own tenant
operations; everything lands in the ledger under the rolled-back run.
"""

from __future__ import annotations

import functools
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import (
    DAG,
    BaseSensorOperator,
    Param,
    ParamsDict,
    TaskGroup,
    get_current_context,
)
from airflow.sdk.exceptions import AirflowFailException

from powerx_upgrade.config import airflow_setting
from powerx_upgrade.domain.dag_ids import ROLLBACK_DAG_ID
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import names, runtime
from powerx_upgrade.orchestration.description import ALL_DONE, DagShape, TaskNode
from powerx_upgrade.orchestration.operators.report import ReportOperator, airflow_base_url
from powerx_upgrade.rollout import rollback
from powerx_upgrade.rollout.alerts import alerts_of
from powerx_upgrade.rollout.late_rollback import SCOPES, RollbackRefused

WAIT_TIMEOUT = timedelta(hours=3)
"""How long the rollback waits for an active run to end (a pause waits 1 h by default)."""
WAIT_POKE = timedelta(seconds=10)
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


ROLLBACK_NODES = (
    TaskNode(names.LATE_RESOLVE, "resolve", names.ROLLBACK, doc="which run; refuse clearly"),
    TaskNode(names.LATE_WAIT, "wait", names.ROLLBACK, doc="wait while the run is active"),
    TaskNode(names.ROLLBACK_SCOPE, "scope", names.ROLLBACK, doc="its tenants on the new version"),
    TaskNode(
        names.ROLLBACK_EXECUTE,
        "execute",
        names.ROLLBACK,
        mapped_over=names.ROLLBACK_SCOPE,
        doc="roll tenants back, concurrently and idempotently",
    ),
    TaskNode(
        names.ROLLBACK_VERIFY,
        "verify",
        names.ROLLBACK,
        trigger_rule=ALL_DONE,
        doc="read every tenant back from the platform",
    ),
    TaskNode(
        names.LATE_RECORD,
        "record",
        names.ROLLBACK,
        trigger_rule=ALL_DONE,
        doc="decision, audit, outcome rolled_back, duration metric",
    ),
    TaskNode(
        names.LATE_REPORT,
        "report",
        names.ROLLBACK,
        trigger_rule=ALL_DONE,
        doc="re-render the run's report with the rollback",
    ),
)
"""The rollback DAG's tasks, in dependency order."""


def describe_rollback_dag() -> DagShape:
    """The rollback DAG as data (tasks in dependency order, edges)."""
    nodes = ROLLBACK_NODES
    order = [n.task_id for n in nodes]
    edges = (*itertools.pairwise(order), (names.ROLLBACK_SCOPE, names.ROLLBACK_VERIFY))
    return DagShape(
        dag_id=ROLLBACK_DAG_ID,
        plan_id="*",
        schedule=None,
        timezone="UTC",
        tags=("grey-upgrade", "rollback"),
        doc_md=DOC_MD,
        nodes=nodes,
        edges=tuple(edges),
    )


DOC_MD = """### One-click rollback: `plugin_upgrade_rollback`

Rolls a grey-upgrade run back: every tenant it upgraded that is still on the new version goes
back to the version (and config) it had before, verified against the platform, recorded under
**the original run** (its ledger decisions, audit trail, outcome `rolled_back`, and its report,
re-rendered with the rollback).

**From the UI:** *Trigger DAG* on this DAG, then fill the form:

- **run_id**: the run to roll back (the `run_id` of a `plugin_upgrade__<plan>` run, as in its
  grid or report), or leave it empty and give
- **plan_id**: the plan whose newest run that upgraded tenants is rolled back;
- **scope**: `all_upgraded` (default), `batch` or `failed_tenants`;
- **reason**: why (required: it goes to the audit log and the report).

A run that is still going is waited for (its own gate honours a rollback request within one
poke: use `POST /internal/version/upgrade/rollback` or `powerx plugin rollback` for that); this
DAG then rolls back what the run left upgraded. `request_id` is set by the control-plane API
(the rollback request it recorded), so the decision carries the requester and the approval.
"""


def params() -> dict[str, Param]:
    return {
        "run_id": Param(
            "", type="string", title="Run id", description="The run to roll back (or plan_id)."
        ),
        "plan_id": Param(
            "",
            type="string",
            title="Plan id",
            description="Without run_id: roll back this plan's newest run that upgraded tenants.",
        ),
        "scope": Param(
            "all_upgraded",
            type="string",
            enum=list(SCOPES),
            title="Rollback scope",
            description="all_upgraded | batch | failed_tenants",
        ),
        "reason": Param(
            "",
            type="string",
            title="Reason",
            description="Why the run is rolled back (audit log and report).",
        ),
        **_authority_params(),
    }


def _authority_params() -> dict[str, Param]:
    """Who asks: the control plane's request, or a token given with a direct trigger."""
    return {
        "request_id": Param(
            None,
            type=["null", "integer"],
            title="Request id",
            description="Set by the control-plane API: the rollback request it recorded.",
        ),
        "approval_token": Param(
            "",
            type="string",
            title="Approval token",
            description="Needed when triggered here (not through the control plane) and the "
            "plan's policy wants MFA for rollback: a single-use token for action rollback.",
        ),
    }


# -- steps: each one call of `rollout.rollback`, the same functions as the batch rollback --------


def _resolved() -> dict[str, Any]:
    data = get_current_context()["ti"].xcom_pull(task_ids=names.LATE_RESOLVE)
    if not data:
        raise AirflowFailException(f"{names.LATE_RESOLVE} found no run to roll back (see its log)")
    return data


def _chosen(services: Any, ctx: Any) -> dict[str, Any]:
    """What the scope step chose, from the ledger (XCom carries only references)."""
    chosen = rollback.late_chosen(services, ctx)
    if chosen is None:
        raise AirflowFailException(f"{names.ROLLBACK_SCOPE} chose no tenants (see its log)")
    return chosen


def _refused(exc: RollbackRefused) -> AirflowFailException:
    return AirflowFailException(f"rollback refused: {exc}")


def resolve(plans: dict[str, Plan]) -> dict[str, Any]:
    context = get_current_context()
    dag_run = context["dag_run"]
    form = dict(context["params"] or {})
    user = dag_run.triggering_user_name
    services = runtime.services()
    try:
        data = rollback.resolve_late(services, form, dag_run_id=dag_run.run_id, user=user)
    except RollbackRefused as exc:
        raise _refused(exc) from None
    return {**data, "authorised": _authorised(services, plans, data, form, user)}


def _authorised(
    services: Any, plans: dict[str, Plan], data: dict[str, Any], form: dict[str, Any], user: Any
) -> Any:
    """The same token rules as the control plane (`rollout.authority`); refused: fails."""
    from powerx_upgrade.orchestration.approvals import approval_settings
    from powerx_upgrade.rollout.authority import rollback_authorised
    from powerx_upgrade.rollout.late_rollback import request_of
    from powerx_upgrade.security.approval import ApprovalRefused

    ledger = services.ledger
    run = ledger.get_run(data["run_id"])
    try:
        return rollback_authorised(
            ledger,
            plan=plans.get(data["plan_id"]),
            plan_id=data["plan_id"],
            run_id=data["run_id"],
            request=request_of(ledger, run, data["request_id"]),
            token=str(form.get("approval_token") or "") or None,
            settings=approval_settings(),
            user=user,
        )
    except ApprovalRefused as exc:
        raise AirflowFailException(f"rollback refused: {exc.message}") from None


class RunEndedSensor(BaseSensorOperator):
    """Waits (rescheduled, no worker slot held) until the run to roll back has ended: its own
    rollback or finalize must not race this one over the same tenants."""

    def poke(self, context: Any) -> bool:
        run_id = _resolved()["run_id"]
        status = rollback.run_active(runtime.services(), run_id)
        if status is not None:
            self.log.info("run %s is still %s: waiting for it to end", run_id, status)
        return status is None


def scope(plans: dict[str, Plan]) -> list[dict[str, Any]]:
    data = _resolved()
    services = runtime.services()
    try:
        chosen = rollback.start_late_rollback(services, rollback.late_context(services, data), data)
    except RollbackRefused as exc:
        raise _refused(exc) from None
    _, deploy = rollback.specs(plans.get(data["plan_id"]))
    return rollback.shards(chosen["count"], deploy.shard_size, runtime.rollback_shards())


def execute(plans: dict[str, Plan], shard: dict[str, Any]) -> dict[str, Any]:
    data = _resolved()
    services = runtime.services()
    ctx = rollback.late_context(services, data)
    return rollback.execute_late(services, plans.get(data["plan_id"]), ctx, shard)


def verify() -> dict[str, Any]:
    data = _resolved()
    services = runtime.services()
    started = datetime.fromisoformat(data["requested_at"])
    ctx = rollback.late_context(services, data)
    return rollback.verify_late(services, ctx, started)


def record(plans: dict[str, Plan]) -> dict[str, Any]:
    data = _resolved()
    services = runtime.services()
    ctx = rollback.late_context(services, data)
    chosen = _chosen(services, ctx)
    plan = plans.get(ctx.plan_id)
    verification = chosen.get("verification") or rollback.unverified(chosen)
    summary, whole = rollback.record_late(services, plan, ctx, data, chosen, verification)
    if not whole:
        raise AirflowFailException(f"the rollback did not bring every tenant back: {summary}")
    return summary


def report(plans: dict[str, Plan]) -> dict[str, Any]:
    """Re-render the rolled-back run's report (the rollout DAG's report step, on its run)."""
    from powerx_upgrade import reporting

    data = _resolved()
    ledger = runtime.ledger()
    plan = plans.get(data["plan_id"])
    document = reporting.report_from_ledger(
        ledger,
        data["run_id"],
        alerts=alerts_of(ledger, data["run_id"]),
        airflow_base_url=airflow_base_url(),
        **reporting.policy_options(plan.policy if plan else None),
    )
    files = reporting.store_reports(
        reporting.stream_reports(document, templates=airflow_setting("templates")),
        data["plan_id"],
        data["run_id"],
    )
    return {
        "outcome": document["outcome"],
        "files": files,
        "link": reporting.report_link(data["plan_id"], data["run_id"]),
    }


# -- materialise ------------------------------------------------------------------------------


def _operator(node: TaskNode, plans: dict[str, Plan], ops: dict[str, Any]) -> Any:
    local = names.local(node.task_id)
    common = {"task_id": local, "doc_md": node.doc or None, "trigger_rule": node.trigger_rule}
    if node.kind == "wait":
        return RunEndedSensor(
            mode="reschedule",
            poke_interval=WAIT_POKE.total_seconds(),
            timeout=WAIT_TIMEOUT.total_seconds(),
            **common,
        )
    if node.kind == "execute":
        return PythonOperator.partial(
            task_id=local,
            python_callable=functools.partial(execute, plans),
            doc_md=node.doc,
            retries=2,
            retry_delay=timedelta(seconds=2),
            map_index_template=names.SHARD_LABEL,
        ).expand(op_kwargs=ops[node.mapped_over].output)
    if node.kind == "report":
        return ReportOperator(
            plan_id="*", python_callable=functools.partial(report, plans), **common
        )
    steps = {
        "resolve": functools.partial(resolve, plans),
        "scope": functools.partial(scope, plans),
        "verify": verify,
        "record": functools.partial(record, plans),
    }
    return PythonOperator(python_callable=steps[node.kind], **common)


def build_rollback_dag(plans: dict[str, Plan]) -> DAG:
    """The rollback DAG for the plans of the config (their rollback settings and channels)."""
    shape = describe_rollback_dag()
    dag = DAG(
        dag_id=shape.dag_id,
        description="One-click rollback of a grey-upgrade run (finished, or once it ends)",
        doc_md=shape.doc_md,
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # two rollbacks must not race over the same tenants
        tags=list(shape.tags),
        default_args={"owner": "powerx"},
    )
    ops: dict[str, Any] = {}
    with dag, TaskGroup(names.ROLLBACK):
        for node in shape.nodes:
            ops[node.task_id] = _operator(node, plans, ops)
    for upstream, downstream in shape.edges:
        ops[upstream] >> ops[downstream]
    dag.params = ParamsDict(params())
    return dag
