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
from airflow.sdk import DAG, BaseSensorOperator, Param, TaskGroup, get_current_context
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import AirflowFailException

from powerx_upgrade.domain.alerts import rollback_failure_alert
from powerx_upgrade.domain.models import DeploySpec, Plan, RollbackSpec
from powerx_upgrade.orchestration import metrics, runtime
from powerx_upgrade.orchestration.description import ALL_DONE, DagShape, TaskNode
from powerx_upgrade.orchestration.operators.report import ReportOperator, airflow_base_url
from powerx_upgrade.rollout import late_rollback, operations
from powerx_upgrade.rollout.alerts import alerts_of, raise_alert
from powerx_upgrade.rollout.late_rollback import ROLLBACK_DAG_ID, SCOPES, RollbackRefused
from powerx_upgrade.rollout.operations import RetryPolicy
from powerx_upgrade.rollout.verdicts import ALERT, ROLLBACK, should_notify

WAIT_TIMEOUT = timedelta(hours=3)
"""How long the rollback waits for an active run to end (a pause waits 1 h by default)."""
WAIT_POKE = timedelta(seconds=10)
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


def describe_rollback_dag() -> DagShape:
    """The rollback DAG as data (tasks in dependency order, edges)."""
    nodes = (
        TaskNode("rollback.resolve", "resolve", "rollback", doc="which run; refuse clearly"),
        TaskNode("rollback.wait", "wait", "rollback", doc="wait while the run is still active"),
        TaskNode("rollback.scope", "scope", "rollback", doc="its tenants on the new version"),
        TaskNode(
            "rollback.execute",
            "execute",
            "rollback",
            mapped_over="rollback.scope",
            doc="roll tenants back, concurrently and idempotently",
        ),
        TaskNode(
            "rollback.verify",
            "verify",
            "rollback",
            trigger_rule=ALL_DONE,
            doc="read every tenant back from the platform",
        ),
        TaskNode(
            "rollback.record",
            "record",
            "rollback",
            trigger_rule=ALL_DONE,
            doc="decision, audit, outcome rolled_back, duration metric",
        ),
        TaskNode(
            "rollback.report",
            "report",
            "rollback",
            trigger_rule=ALL_DONE,
            doc="re-render the run's report with the rollback",
        ),
    )
    order = [n.task_id for n in nodes]
    edges = (*itertools.pairwise(order), ("rollback.scope", "rollback.verify"))
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
        "request_id": Param(
            None,
            type=["null", "integer"],
            title="Request id",
            description="Set by the control-plane API: the rollback request it recorded.",
        ),
    }


# -- steps ------------------------------------------------------------------------------------


def _context() -> tuple[Any, dict[str, Any]]:
    context = get_current_context()
    return context, dict(context["params"] or {})


def _resolved() -> dict[str, Any]:
    data = get_current_context()["ti"].xcom_pull(task_ids="rollback.resolve")
    if not data:
        raise AirflowFailException("rollback.resolve found no run to roll back (see its log)")
    return data


def _ctx(data: dict[str, Any]) -> late_rollback.LateRollbackContext:
    book = runtime.ledger()
    run = book.get_run(data["run_id"])
    return late_rollback.context_for(
        run, by_run=data["dag_run_id"], actor=data["actor"], reason=data["reason"]
    )


def resolve() -> dict[str, Any]:
    context, form = _context()
    reason = str(form.get("reason") or "").strip()
    book = runtime.ledger()
    try:
        if not reason:
            raise RollbackRefused("reason: say why the run is rolled back (audit and report)")
        run = late_rollback.resolve_target_run(
            book, run_id=form.get("run_id") or None, plan_id=form.get("plan_id") or None
        )
        request = late_rollback.request_of(book, run, form.get("request_id"))
    except RollbackRefused as exc:
        raise AirflowFailException(f"rollback refused: {exc}") from None
    dag_run = context["dag_run"]
    actor = (request.actor if request else None) or dag_run.triggering_user_name or "unknown"
    return {
        "run_id": run.run_id,
        "plan_id": run.plan_id,
        "scope": form.get("scope") or "all_upgraded",
        "reason": reason,
        "request_id": request.id if request else None,
        "actor": actor,
        "via": (request.via if request else None) or "ui",
        "dag_run_id": dag_run.run_id,
        "requested_at": (request.requested_at if request else datetime.now(UTC)).isoformat(),
    }


class RunEndedSensor(BaseSensorOperator):
    """Waits (rescheduled, no worker slot held) until the run to roll back has ended: its own
    rollback or finalize must not race this one over the same tenants."""

    def poke(self, context: Any) -> bool:
        data = _resolved()
        run = runtime.ledger().get_run(data["run_id"])
        if run is not None and run.active:
            self.log.info("run %s is still %s: waiting for it to end", run.run_id, run.status)
            return False
        return True


def scope(plans: dict[str, Plan]) -> list[dict[str, Any]]:
    data = _resolved()
    book = runtime.ledger()
    ctx = _ctx(data)
    run = book.get_run(ctx.run_id)
    request = late_rollback.request_of(book, run, data["request_id"])
    batch, breaching = late_rollback.failing_batch(book, run, request)
    try:
        targets, held = late_rollback.late_targets(
            runtime.platform(), book, ctx, data["scope"], batch, breaching
        )
    except RollbackRefused as exc:
        raise AirflowFailException(f"rollback refused: {exc}") from None
    recorder = runtime.recorder(book)
    recorder.audit(
        ctx,
        "run.rollback.started",
        tenants=[t["tenant"] for t in targets],
        audit_id=f"{ctx.run_id}:late-rollback-start:{ctx.by_run}",
        details={"scope": data["scope"], "held": held, "batch": batch, "by": ctx.by_run},
    )
    recorder.flush()
    get_current_context()["ti"].xcom_push(key="targets", value={"targets": targets, "held": held})
    size = _specs(plans, data["plan_id"])[1].shard_size
    return [{"targets": targets[i : i + size]} for i in range(0, len(targets), size)]


def _specs(plans: dict[str, Plan], plan_id: str) -> tuple[RollbackSpec, DeploySpec]:
    """The plan's rollback and deploy settings; defaults for a plan no longer in the config."""
    plan = plans.get(plan_id)
    return (plan.policy.rollback, plan.policy.deploy) if plan else (RollbackSpec(), DeploySpec())


def execute(plans: dict[str, Plan], targets: list[dict[str, Any]]) -> dict[str, Any]:
    data = _resolved()
    book = runtime.ledger()
    rollback, deploy = _specs(plans, data["plan_id"])
    summary = operations.rollback_shard(
        runtime.platform(),
        book,
        runtime.recorder(book),
        _ctx(data),
        targets=targets,
        concurrency=rollback.concurrency,
        retry=RetryPolicy(retries=deploy.retries),
    )
    return summary.as_dict()


def _chosen() -> dict[str, Any]:
    chosen = get_current_context()["ti"].xcom_pull(task_ids="rollback.scope", key="targets")
    if chosen is None:
        raise AirflowFailException("rollback.scope chose no tenants (see its log)")
    return chosen


def verify() -> dict[str, Any]:
    data = _resolved()
    ctx = _ctx(data)
    book = runtime.ledger()
    upgrades = {a.tenant_id: a for a in book.actions(ctx.run_id, kind="upgrade")}
    verification = operations.verify_rollback(
        runtime.platform(), ctx, _chosen()["targets"], upgrades
    )
    started = datetime.fromisoformat(data["requested_at"])
    verification["duration_ms"] = int((datetime.now(UTC) - started).total_seconds() * 1000)
    return verification


def record(plans: dict[str, Plan]) -> dict[str, Any]:
    context = get_current_context()
    data = _resolved()
    ctx = _ctx(data)
    book = runtime.ledger()
    chosen = _chosen()
    verification = context["ti"].xcom_pull(task_ids="rollback.verify") or {
        "verified": [],
        "broken": [
            {"tenant": t["tenant"], "problems": ["not verified"]} for t in chosen["targets"]
        ],
    }
    request = late_rollback.request_of(book, book.get_run(ctx.run_id), data["request_id"])
    run = late_rollback.record_late_rollback(
        book,
        ctx,
        via=data["via"],
        request=request,
        scope=data["scope"],
        targets=chosen["targets"],
        held=chosen["held"],
        verification=verification,
        started_at=datetime.fromisoformat(data["requested_at"]),
    )
    recorder = runtime.recorder(book)
    plan = plans.get(ctx.plan_id)
    channels = plan.notify.channels if plan else []
    failed = [
        a.tenant_id
        for a in book.actions(ctx.run_id, kind="rollback", state="failed")
        if f"@{ctx.by_run}:" in a.idempotency_key
    ]
    alert = rollback_failure_alert(failed, verification.get("broken", []))
    if alert is not None:
        raise_alert(
            recorder,
            ctx,
            alert,
            channels=channels,
            count=metrics.count,
            notify=should_notify(plan, ALERT),
        )
    duration = verification.get("duration_ms")
    if duration is not None and chosen["targets"]:
        metrics.timing(
            metrics.ROLLBACK_DURATION, duration, {"plan": ctx.plan_id, "plugin": ctx.plugin}
        )
    if should_notify(plan, ROLLBACK):
        recorder.notify(
            ctx,
            "plugin.version.gray.rollback",
            key=f"late-rollback:{ctx.by_run}",
            severity="critical" if alert else "warning",
            title=f"{ctx.plan_id}: run {ctx.run_id} rolled back ({run.outcome}): "
            f"{len(verification.get('verified', []))} tenant(s) in {(duration or 0) / 1000:.1f}s",
            message=f"By {ctx.triggered_by} via {data['via']}. Reason: {ctx.reason}",
            channels=channels,
        )
    recorder.flush()
    summary = {
        "run_id": ctx.run_id,
        "outcome": run.outcome,
        "tenants": len(chosen["targets"]),
        "verified": len(verification.get("verified", [])),
        "broken": verification.get("broken", [])[:50],
        "held": chosen["held"],
        "duration_ms": duration,
    }
    if alert is not None:
        raise AirflowFailException(f"the rollback did not bring every tenant back: {summary}")
    return summary


def report() -> dict[str, Any]:
    """Re-render the rolled-back run's report (the rollout DAG's report step, on its run)."""
    from powerx_upgrade import reporting

    data = _resolved()
    book = runtime.ledger()
    document = reporting.report_from_ledger(
        book,
        data["run_id"],
        alerts=alerts_of(book, data["run_id"]),
        airflow_base_url=airflow_base_url(),
    )
    files = reporting.store_reports(
        reporting.render_reports(document), data["plan_id"], data["run_id"]
    )
    return {
        "outcome": document["outcome"],
        "files": files,
        "link": reporting.report_link(data["plan_id"], data["run_id"]),
    }


# -- materialise ------------------------------------------------------------------------------


def _operator(node: TaskNode, plans: dict[str, Plan], ops: dict[str, Any]) -> Any:
    local = node.task_id.split(".", 1)[1]
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
        ).expand(op_kwargs=ops[node.mapped_over].output)
    if node.kind == "report":
        return ReportOperator(plan_id="*", python_callable=report, **common)
    steps = {
        "resolve": resolve,
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
    with dag, TaskGroup("rollback"):
        for node in shape.nodes:
            ops[node.task_id] = _operator(node, plans, ops)
    for upstream, downstream in shape.edges:
        ops[upstream] >> ops[downstream]
    dag.params = ParamsDict(params())
    return dag
