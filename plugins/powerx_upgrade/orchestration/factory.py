"""Plans -> Airflow DAGs: describe each plan (description.py), then materialise it here.

`build_dags()` is what `dags/upgrade_plans.py` calls. It reads the config (no network, no
database: the tenants are fetched at run time), builds one DAG per valid plan, and one visibly
broken DAG per invalid plan whose only task fails with the plan's problems (file, line, field),
so an invalid plan never disappears silently and never takes the valid ones down.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import BranchPythonOperator, PythonOperator
from airflow.sdk import DAG, Param, ParamsDict, TaskGroup
from airflow.sdk.exceptions import AirflowFailException

from powerx_upgrade.config import load_config
from powerx_upgrade.domain.config import ConfigResult
from powerx_upgrade.domain.dag_ids import ROLLBACK_DAG_ID
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.problems import Problem
from powerx_upgrade.orchestration import names, tasks
from powerx_upgrade.orchestration.description import (
    DagShape,
    TaskNode,
    dag_id_for,
    describe_plan,
)
from powerx_upgrade.orchestration.operators.human import BatchApprovalOperator, BatchPauseOperator
from powerx_upgrade.orchestration.operators.report import ReportOperator
from powerx_upgrade.orchestration.operators.window import (
    PreflightBeginOperator,
    WindowWaitOperator,
)
from powerx_upgrade.orchestration.rollback_dag import build_rollback_dag
from powerx_upgrade.orchestration.sensors.gate import BatchGateSensor

log = logging.getLogger(__name__)

START_DATE = datetime(2026, 1, 1)


FORM = (
    (
        "target_version",
        "string",
        "Target version",
        "Version to roll out; the plan's default when left as is.",
    ),
    ("artifact_uri", "string", "Artifact URI", "Where the platform fetches the build."),
    ("artifact_sha256", "string", "Artifact SHA-256", "Hex digest of the build (64 characters)."),
    (
        "artifact_signature",
        "string",
        "Artifact signature",
        "Ed25519 signature (base64) over "
        "plugin, version and SHA-256, made with `powerx artifact sign`; preflight refuses an "
        "unsigned or mismatched artifact.",
    ),
    ("dry_run", "boolean", "Dry run", "Plan and preflight only: no tenant is touched."),
    (
        "reason",
        "string",
        "Change reason",
        "Why this rollout happens; it goes to the audit log and the report.",
    ),
    (
        "respect_window",
        "boolean",
        "Respect the window",
        "Start batches only inside the plan's window (off: emergency runs).",
    ),
    (
        "allow_downgrade",
        "boolean",
        "Allow a downgrade",
        "Let the run move tenants to an older version than they run (preflight refuses it "
        "otherwise, naming the tenants).",
    ),
)
"""The trigger form's fields: name, JSON type, title, description (defaults: `form_defaults`)."""


def form_defaults(plan: Plan) -> dict[str, object]:
    artifact = plan.artifact
    return {
        "target_version": plan.target_version or "",
        "artifact_uri": artifact.uri if artifact else "",
        "artifact_sha256": artifact.sha256 if artifact else "",
        "artifact_signature": (artifact.signature or "") if artifact else "",
        "dry_run": False,
        "reason": "",
        "respect_window": True,
        "allow_downgrade": plan.allow_downgrade,
    }


def params_for(plan: Plan) -> dict[str, Param]:
    """The trigger form: what a release manager (or CI, through `conf`) may set per run."""
    defaults = form_defaults(plan)
    return {
        name: Param(defaults[name], type=kind, title=title, description=description)
        for name, kind, title, description in FORM
    }


def _python(node: TaskNode, fn: Callable[..., Any], **kwargs: Any) -> PythonOperator:
    return PythonOperator(
        task_id=node.task_id.split(".", 1)[1],
        python_callable=functools.partial(fn, **kwargs),
        trigger_rule=node.trigger_rule,
        doc_md=node.doc or None,
    )


def _branch(node: TaskNode, fn: Callable[..., Any], **kwargs: Any) -> BranchPythonOperator:
    return BranchPythonOperator(
        task_id=node.task_id.split(".", 1)[1],
        python_callable=functools.partial(fn, **kwargs),
        trigger_rule=node.trigger_rule,
        doc_md=node.doc or None,
    )


def _empty(node: TaskNode) -> EmptyOperator:
    return EmptyOperator(task_id=node.task_id.split(".", 1)[1], trigger_rule=node.trigger_rule)


_PYTHON_STEPS: dict[str, Callable[..., Any]] = {
    "validate": tasks.validate,
    "verify_artifact": tasks.verify_artifact,
    "plan": tasks.plan_batches,
    "rollback_scope": tasks.rollback_scope,
    "rollback_verify": tasks.rollback_verify,
    "rollback_announce": tasks.rollback_announce,
    "record": tasks.record,
}
_JOINS = ("dry_run", "promote", "rollback", "resume", "stop", "rejected")


def _operator(node: TaskNode, plan: Plan, ops: dict[str, Any]) -> Any:
    """The Airflow operator of one described task (mapped tasks are expanded over their source)."""
    if node.kind in _PYTHON_STEPS:
        return _python(node, _PYTHON_STEPS[node.kind], plan=plan)
    if node.kind in _JOINS:
        return _empty(node)
    if node.mapped_over:
        return _mapped(node, plan, ops[node.mapped_over])
    return _BUILDERS[node.kind](node, plan)


def _mapped(node: TaskNode, plan: Plan, source: Any) -> Any:
    local = node.task_id.split(".", 1)[1]
    if node.kind == "deploy":
        return PythonOperator.partial(
            task_id=local,
            python_callable=functools.partial(tasks.deploy, plan=plan, batch=node.batch),
            doc_md=node.doc,
            retries=1,
            retry_delay=timedelta(seconds=5),
            map_index_template=names.SHARD_LABEL,
        ).expand(op_kwargs=source.output)
    return PythonOperator.partial(
        task_id=local,
        python_callable=functools.partial(tasks.rollback_execute, plan=plan),
        doc_md=node.doc,
        retries=2,
        retry_delay=timedelta(seconds=2),
        map_index_template=names.SHARD_LABEL,
    ).expand(op_kwargs=source.output)


def _local(node: TaskNode) -> str:
    return node.task_id.split(".", 1)[1]


_BUILDERS: dict[str, Callable[[TaskNode, Plan], Any]] = {
    "result": lambda node, plan: _python(node, tasks.result),
    "report": lambda node, plan: ReportOperator(
        task_id=_local(node),
        plan_id=plan.id,
        python_callable=functools.partial(tasks.report, plan=plan),
        trigger_rule=node.trigger_rule,
        doc_md=node.doc or None,
    ),
    "begin": lambda node, plan: PreflightBeginOperator(
        task_id=_local(node), plan=plan, begin=tasks.begin, doc_md=node.doc
    ),
    "start": lambda node, plan: WindowWaitOperator(
        task_id=_local(node),
        plan=plan,
        batch=node.batch,
        doc_md=node.doc,
        trigger_rule=node.trigger_rule,
    ),
    "start_shards": lambda node, plan: WindowWaitOperator(
        task_id=_local(node),
        plan=plan,
        batch=node.batch,
        cut_shards=True,
        doc_md=node.doc,
        trigger_rule=node.trigger_rule,
    ),
    "approve": lambda node, plan: BatchApprovalOperator(
        task_id=_local(node), plan=plan, batch=node.batch
    ),
    "pause": lambda node, plan: BatchPauseOperator(
        task_id=_local(node), plan=plan, batch=node.batch
    ),
    "shards": lambda node, plan: _python(node, tasks.shards, plan=plan, batch=node.batch),
    "gate": lambda node, plan: BatchGateSensor(
        task_id=_local(node),
        plan=plan,
        batch=node.batch,
        trigger_rule=node.trigger_rule,
        doc_md=node.doc,
    ),
    "decide": lambda node, plan: _branch(node, tasks.decide_batch, plan=plan, batch=node.batch),
}


def materialise(shape: DagShape, plan: Plan) -> DAG:
    """The one place where a plan's description becomes Airflow objects."""
    dag = DAG(
        dag_id=shape.dag_id,
        description=f"Grey upgrade of {plan.plugin} under policy {plan.policy_id}",
        doc_md=shape.doc_md,
        schedule=_schedule(shape),
        start_date=pendulum.instance(START_DATE, tz=shape.timezone),
        catchup=False,
        max_active_runs=1,
        tags=list(shape.tags),
        default_args={"owner": ", ".join(plan.owners) or "powerx"},
    )
    ops: dict[str, Any] = {}
    groups: dict[str, TaskGroup] = {}
    with dag:
        for node in shape.nodes:  # nodes come in dependency order for mapped sources
            if node.group not in groups:
                groups[node.group] = TaskGroup(node.group)
            with groups[node.group]:
                ops[node.task_id] = _operator(node, plan, ops)
        for upstream, downstream in shape.edges:
            ops[upstream] >> ops[downstream]
    # Set after the tasks exist: Airflow deep-copies DAG params into every task created under
    # it (most of the parse time of a 100-plan config), yet merges dag.params again at run time.
    dag.params = ParamsDict(params_for(plan))
    return dag


def _schedule(shape: DagShape) -> Any:
    if shape.schedule is None:
        return None
    from airflow.timetables.trigger import CronTriggerTimetable  # see test_airflow_imports

    return CronTriggerTimetable(shape.schedule, timezone=shape.timezone)


def broken_dag(plan_id: str, problems: list[Problem]) -> DAG:
    """A placeholder for an invalid plan: visible in the UI, its one task fails with why."""
    message = "\n".join(str(p) for p in problems) or "the plan is invalid"
    dag = DAG(
        dag_id=dag_id_for(plan_id),
        description=f"INVALID plan {plan_id}: fix the config (see the doc)",
        doc_md=f"### Invalid plan `{plan_id}`\n\nThis DAG cannot run until the plan is fixed:\n\n"
        + "\n".join(f"- `{p}`" for p in problems),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=["grey-upgrade", "invalid-plan"],
        is_paused_upon_creation=True,
    )

    def fail() -> None:
        raise AirflowFailException(f"plan {plan_id!r} is invalid:\n{message}")

    with dag:
        PythonOperator(task_id="invalid_plan", python_callable=fail)
    return dag


def build_dags(config: ConfigResult | None = None) -> dict[str, DAG]:
    """One DAG per plan in the config: real ones for valid plans, broken ones for invalid;
    plus the one-click rollback DAG (`plugin_upgrade_rollback`) for runs of any plan.

    Never raises on content: a file that cannot be read or parsed, a plan whose DAG cannot be
    built, even a config that cannot be loaded at all, each becomes a broken DAG naming it."""
    if config is None:
        config = _load_or_broken()
    by_plan = _problems_by_plan(config)
    dags: dict[str, DAG] = {}
    for plan_id, plan in sorted(config.plans.items()):
        dags[dag_id_for(plan_id)] = _materialised_or_broken(plan_id, plan)
    dags[ROLLBACK_DAG_ID] = build_rollback_dag(dict(config.plans))
    for plan_id in sorted(config.invalid_plans):
        shown = _safe_id("", plan_id, dags)  # an id that is no DAG id is shown as a safe one
        dags[dag_id_for(shown)] = broken_dag(shown, by_plan.get(plan_id, []))
    for file, problems in _file_problems(config).items():
        shown = _safe_id("config_error__", file.rsplit("/", 1)[-1], dags)
        dags[dag_id_for(shown)] = broken_dag(shown, problems)
    return dags


def _load_or_broken() -> ConfigResult:
    """The config; when it cannot be loaded at all (no config where the settings point, or an
    internal error), a result with that one problem, so the rollback DAG still loads."""
    try:
        return load_config()
    except Exception as exc:  # isolation: the DAG file never fails to import over the config
        log.exception("loading the grey-upgrade config failed")
        return ConfigResult(problems=[Problem("config", None, "error", "", _one_line(exc))])


def _materialised_or_broken(plan_id: str, plan: Plan) -> DAG:
    try:
        return materialise(describe_plan(plan), plan)
    except Exception as exc:  # isolation: one plan's DAG never takes the others down
        log.exception("building the DAG of plan %s failed", plan_id)
        problem = Problem(
            plan.source.file,
            plan.source.line,
            "error",
            f"plans.{plan_id}",
            f"cannot build this plan's DAG ({_one_line(exc)}; an internal error, please report it)",
            plan_id=plan_id,
        )
        return broken_dag(plan_id, [problem])


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


_MAX_STEM = 120


def _safe_id(prefix: str, name: str, taken: dict[str, DAG]) -> str:
    """`prefix` + `name` as a plan id a DAG id can hold: unsafe characters replaced and a short
    hash added when any were (or when the name is too long), a counter when two come out alike."""
    stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    if len(stem) > _MAX_STEM or stem != name or not stem:
        digest = hashlib.sha256(name.encode("utf-8", "backslashreplace")).hexdigest()[:8]
        stem = f"{stem[:_MAX_STEM]}_{digest}"
    plan_id = f"{prefix}{stem}"
    suffix = 2
    while dag_id_for(plan_id) in taken:
        plan_id = f"{prefix}{stem}_{suffix}"
        suffix += 1
    return plan_id


def _problems_by_plan(config: ConfigResult) -> dict[str, list[Problem]]:
    found: dict[str, list[Problem]] = {}
    for problem in config.problems:
        if problem.plan_id is not None:
            found.setdefault(problem.plan_id, []).append(problem)
    return found


def _file_problems(config: ConfigResult) -> dict[str, list[Problem]]:
    """Errors that belong to no plan (a YAML syntax error, a bad top level, a broken policy no
    valid plan uses): shown as a broken DAG per file, so they are never silent."""
    found: dict[str, list[Problem]] = {}
    for problem in config.errors:
        if problem.plan_id is None:
            found.setdefault(problem.file, []).append(problem)
    return found
