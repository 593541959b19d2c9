"""The Python steps of the rollout DAGs: each turns Airflow's context into one `rollout.*` call
and its result back into Airflow's terms (XCom, branch target, failure)."""

from __future__ import annotations

import dataclasses
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from powerx_upgrade.config import airflow_setting, monitoring_names
from powerx_upgrade.domain.decide import Action
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import metrics, names, runtime
from powerx_upgrade.orchestration.hooks.sources import monitoring_source, sync_monitoring
from powerx_upgrade.rollout import preflight, rollback, run_steps
from powerx_upgrade.rollout.context import RunConfError, resolve_run
from powerx_upgrade.rollout.verdicts import ALERT, should_notify


def _ti() -> Any:
    return get_current_context()["ti"]


def _triggered_by(context: Any) -> str | None:
    run = context.get("dag_run")
    return getattr(run, "triggering_user_name", None) or getattr(run, "run_type", None)


# -- preflight ------------------------------------------------------------------------------


def validate(plan: Plan) -> dict[str, Any]:
    context = get_current_context()
    run = context["dag_run"]
    conf = dict(context["params"] or {})
    try:
        ctx = resolve_run(
            plan,
            conf,
            run_id=run.run_id,
            dag_id=run.dag_id,
            triggered_by=str(_triggered_by(context) or "") or None,
        )
    except RunConfError as exc:
        raise AirflowFailException(str(exc)) from None
    preflight.start_run(
        runtime.ledger(),
        ctx,
        conf={k: v for k, v in conf.items() if k != "artifact_signature"},
        policy=plan.policy,
    )
    return ctx.as_dict()


def verify_artifact(plan: Plan) -> dict[str, Any]:
    from powerx_upgrade.orchestration.signing import signing_keys
    from powerx_upgrade.security.artifacts import ArtifactRefused

    ctx = runtime.run_context(_ti())
    try:
        return preflight.verify_run_artifact(
            runtime.recorder(),
            ctx,
            signing_keys,
            channels=plan.notify.channels,
            count=metrics.count,
            notify=should_notify(plan, ALERT),
        )
    except ArtifactRefused as refused:
        raise AirflowFailException(
            f"artifact refused ({refused.code}): {refused.message}; no tenant was touched"
        ) from None


def plan_batches(plan: Plan) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    try:
        return preflight.plan_run(
            runtime.platform(), runtime.ledger(), plan, ctx, runtime.recorder()
        )
    except preflight.DowngradeRefused as refused:
        raise AirflowFailException(f"preflight refused the run: {refused}") from None


def begin(plan: Plan) -> str:
    """Subscribe monitoring, take the baseline, announce the run; then batch 1 or the dry
    run's end. Each step is idempotent by id, so a retried task repeats none of their effects."""
    ti = _ti()
    ctx = runtime.run_context(ti)
    ledger = runtime.ledger()
    try:
        runtime.monitoring().subscribe(
            id=f"{ctx.run_id}:subscribe"[:200],
            plugin=ctx.plugin,
            tenants=preflight.selected_tenants(ledger, ctx.run_id),
            metrics=["requests", "errors", "latency_p95_ms"],
            run_id=ctx.run_id,
            context={"plan": plan.id, "target_version": ctx.target_version},
        )
        source = monitoring_source(plan, ctx.target_version, names=monitoring_names())
        preflight.take_baseline(sync_monitoring(source), ledger, plan, ctx)
        summary = ti.xcom_pull(task_ids=names.PLAN) or {}
        run_steps.announce_run(runtime.services(), plan, ctx, summary)
    except Exception as exc:  # recorded and audited, then the task fails as before
        preflight.record_begin_failure(runtime.recorder(), ctx, "begin", exc)
        raise
    preflight.clear_begin_failure(ledger, ctx.run_id)
    return names.DRY_RUN if ctx.dry_run else names.batch(1, names.START)


# -- batches --------------------------------------------------------------------------------


def shards(plan: Plan, batch: int) -> list[dict[str, Any]]:
    ctx = runtime.run_context(_ti())
    return run_steps.deploy_shards(runtime.ledger(), plan, ctx, batch)


def deploy(plan: Plan, batch: int, shard: dict[str, Any]) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    return run_steps.deploy_shard(runtime.services(), plan, ctx, batch, shard)


BRANCH_OF = {
    Action.ROLLBACK: names.BATCH_ROLLBACK,
    Action.PAUSE: names.PAUSE,
    Action.PROMOTE: names.PROMOTE,
}


def decide_batch(plan: Plan, batch: int) -> str:
    ti = _ti()
    verdict = ti.xcom_pull(task_ids=names.batch(batch, names.GATE)) or {}
    ctx = runtime.run_context(ti)
    action = run_steps.decide_batch(runtime.services(), plan, ctx, batch, verdict)
    return names.batch(batch, BRANCH_OF.get(action, names.PROMOTE))


# -- rollback: the same rollout.rollback steps as the `plugin_upgrade_rollback` DAG -----------


def rollback_scope(plan: Plan) -> list[dict[str, Any]]:
    ctx = runtime.run_context(_ti())
    return rollback.start_batch_rollback(
        runtime.services(), plan, ctx, most_shards=runtime.rollback_shards()
    )


def rollback_execute(plan: Plan, shard: dict[str, Any]) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    return rollback.execute_batch_rollback(runtime.services(), plan, ctx, shard)


def rollback_verify(plan: Plan) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    return rollback.verify_batch_rollback(runtime.services(), plan, ctx)


def rollback_announce(plan: Plan) -> dict[str, Any]:
    ti = _ti()
    result = ti.xcom_pull(task_ids=names.ROLLBACK_VERIFY) or {}
    ctx = runtime.run_context(ti)
    return rollback.announce_batch_rollback(runtime.services(), plan, ctx, result)


# -- finalize -------------------------------------------------------------------------------


def record(plan: Plan) -> dict[str, Any]:
    ti = _ti()
    if not ti.xcom_pull(task_ids=names.VALIDATE):  # preflight refused the run: no run record
        return {"outcome": "failed", "detail": {"note": "the run's conf was refused"}}
    return run_steps.end_run(runtime.services(), plan, runtime.run_context(ti))


def report(plan: Plan) -> dict[str, Any]:
    """Build the run's report from the ledger, render it, store it; the files in the XCom.

    Runs on every outcome, even when `record` failed; without a ledger (a run refused in
    preflight, a database down) the report says what the DAG itself knows.
    """
    from powerx_upgrade import reporting
    from powerx_upgrade.orchestration.operators.report import api_base_url, run_identity

    context = get_current_context()
    run_id = context["dag_run"].run_id
    settled = _ti().xcom_pull(task_ids=names.RECORD)
    document = _report_document(plan, run_id, run_identity(plan, context, settled=settled))
    files = reporting.store_reports(
        reporting.stream_reports(document, templates=airflow_setting("templates")), plan.id, run_id
    )
    return {
        "outcome": document["outcome"],
        "files": files,
        "link": reporting.report_link(plan.id, run_id, api_base_url=api_base_url()),
    }


def _report_document(plan: Plan, run_id: str, identity: Any) -> dict[str, Any]:
    """The report from the ledger; when it cannot be read, from what the DAG knows (and why)."""
    from powerx_upgrade import reporting
    from powerx_upgrade.orchestration.operators.report import airflow_base_url
    from powerx_upgrade.rollout.alerts import alerts_of

    options: dict[str, Any] = {
        "identity": identity,
        "airflow_base_url": airflow_base_url(),
        **reporting.policy_options(plan.policy),
    }
    try:
        ledger = runtime.ledger()
        return reporting.report_from_ledger(
            ledger, run_id, alerts=alerts_of(ledger, run_id), **options
        )
    except Exception as exc:  # the ledger is unreachable: report what is known, say why
        note = f"the ledger could not be read ({type(exc).__name__}: {exc})"
        known = dataclasses.replace(identity, error="; ".join(filter(None, [identity.error, note])))
        return reporting.build_report(reporting.RunRecords(None), **{**options, "identity": known})


def result() -> dict[str, Any]:
    summary = _ti().xcom_pull(task_ids=names.RECORD) or {}
    outcome = summary.get("outcome", "unknown")
    if outcome not in ("promoted", "dry_run"):
        raise AirflowFailException(
            f"run outcome {outcome}: the target version is not on every selected tenant "
            f"({summary.get('detail')})"
        )
    return summary
