"""The Python steps of the rollout DAGs: thin wrappers from Airflow's context to `rollout.*`."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from powerx_upgrade.config import monitoring_names
from powerx_upgrade.domain.alerts import rollback_failure_alert
from powerx_upgrade.domain.decide import Action, decide
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import metrics, runtime
from powerx_upgrade.orchestration.hooks.sources import monitoring_source, sync_monitoring
from powerx_upgrade.rollout import controls, finalize, operations, preflight
from powerx_upgrade.rollout.alerts import raise_alert
from powerx_upgrade.rollout.context import RunConfError, resolve_run
from powerx_upgrade.rollout.operations import RetryPolicy
from powerx_upgrade.rollout.verdicts import (
    ALERT,
    BATCH_PROMOTED,
    ROLLBACK,
    RUN_END,
    RUN_START,
    should_notify,
)


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
        runtime.ledger(), ctx, conf={k: v for k, v in conf.items() if k != "artifact_signature"}
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
    return preflight.plan_run(runtime.platform(), runtime.ledger(), plan, ctx)


def subscribe(plan: Plan) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    tenants = preflight.selected_tenants(runtime.ledger(), ctx.run_id)
    return runtime.monitoring().subscribe(
        id=f"{ctx.run_id}:subscribe"[:200],
        plugin=ctx.plugin,
        tenants=tenants,
        metrics=["requests", "errors", "latency_p95_ms"],
        run_id=ctx.run_id,
        context={"plan": plan.id, "target_version": ctx.target_version},
    )


def baseline(plan: Plan) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    source = monitoring_source(plan, ctx.target_version, names=monitoring_names())
    return preflight.take_baseline(sync_monitoring(source), runtime.ledger(), plan, ctx)


def announce(plan: Plan) -> dict[str, Any]:
    ti = _ti()
    ctx = runtime.run_context(ti)
    summary = ti.xcom_pull(task_ids="preflight.plan") or {}
    recorder = runtime.recorder()
    recorder.audit(
        ctx,
        "run.started",
        audit_id=f"{ctx.run_id}:run.started",
        details={
            "plan": plan.id,
            "artifact": ctx.artifact,
            "dry_run": ctx.dry_run,
            "selected": summary.get("selected"),
            "batches": summary.get("batches"),
        },
    )
    sent = should_notify(plan, RUN_START) and recorder.notify(
        ctx,
        "plugin.version.gray.started",
        key="run.started",
        title=f"{plan.id}: {'dry run of ' if ctx.dry_run else ''}{ctx.plugin} -> "
        f"{ctx.target_version} started",
        message=f"{summary.get('selected')} tenants in {len(summary.get('batches') or [])} "
        f"batches. Reason: {ctx.reason or '-'}",
        channels=plan.notify.channels,
    )
    delivered, pending = recorder.flush()
    return {"notified": sent, "audit_delivered": delivered, "audit_pending": pending}


def route() -> str:
    ctx = runtime.run_context(_ti())
    return "preflight.dry_run" if ctx.dry_run else "batch_1.start"


# -- batches --------------------------------------------------------------------------------


def shards(plan: Plan, batch: int) -> list[dict[str, Any]]:
    ctx = runtime.run_context(_ti())
    planned = next(
        b for b in preflight.planned_batches(runtime.ledger(), ctx.run_id) if b["index"] == batch
    )
    size = plan.policy.deploy.shard_size
    count = len(planned["tenants"])
    return [
        {"shard": {"start": i * size, "end": min(count, (i + 1) * size)}}
        for i in range(math.ceil(count / size))
    ]


def deploy(plan: Plan, batch: int, shard: dict[str, Any]) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    book = runtime.ledger()
    planned = next(b for b in preflight.planned_batches(book, ctx.run_id) if b["index"] == batch)
    tenants = planned["tenants"][shard["start"] : shard["end"]]
    spec = controls.effective_policy(plan, book, ctx.run_id).deploy  # adjusted concurrency
    summary = operations.deploy_shard(
        runtime.platform(),
        book,
        runtime.recorder(book),
        ctx,
        batch=batch,
        tenants=tenants,
        concurrency=spec.concurrency,
        retry=RetryPolicy(retries=spec.retries),
    )
    return summary.as_dict()


def decide_batch(plan: Plan, batch: int) -> str:
    ti = _ti()
    ctx = runtime.run_context(ti)
    verdict = ti.xcom_pull(task_ids=f"batch_{batch}.gate") or {}
    phase = verdict.get("phase", "fail")
    decision = decide(phase, plan.policy, why=verdict.get("reason") or "the gate left no verdict")
    breaching = sorted(
        {
            m["tenant"]
            for m in verdict.get("measurements", [])
            if m.get("tenant") and m.get("phase") == "fail"
        }
    )
    book = runtime.ledger()
    decided = controls.decide_under_controls(book, ctx, decision, verdict, batch)
    decision = decided.decision
    book.record_decision(
        ctx.run_id,
        batch_index=batch,
        kind="decide",
        decision=decision.action.value,
        actor=decided.actor,
        via=decided.via,
        detail={
            "verdict": phase,
            "reason": decision.reason,
            "summary": verdict.get("summary"),
            "segment": verdict.get("segment"),
            "breaching": breaching,
            **decided.detail,
        },
    )
    recorder = runtime.recorder(book)
    recorder.audit(
        ctx,
        f"batch.{decision.action.value}",
        actor=None if decided.via == "auto" else decided.actor,
        audit_id=f"{ctx.run_id}:decide:{batch}",
        details={
            "batch": batch,
            "verdict": phase,
            "reason": decision.reason,
            "summary": verdict.get("summary"),
            **decided.detail,
        },
    )
    if decision.action is Action.PROMOTE and phase == "pass":
        _notify_promoted(recorder, plan, ctx, batch, verdict)
    recorder.flush()
    if decision.action is Action.ROLLBACK:
        return f"batch_{batch}.rollback"
    if decision.action is Action.PAUSE:
        return f"batch_{batch}.pause"
    return f"batch_{batch}.promote"


def _notify_promoted(
    recorder: Any, plan: Plan, ctx: Any, batch: int, verdict: dict[str, Any]
) -> None:
    """`batch_promoted`: the batch's gate passed and the run moves on (with the sentence)."""
    if not should_notify(plan, BATCH_PROMOTED):
        return
    last = batch >= len(plan.policy.batches)
    recorder.notify(
        ctx,
        "plugin.version.gray.batch_promoted",
        key=f"promoted:{batch}",
        title=f"{plan.id}: batch {batch} passed its gate"
        + (" (the last batch)" if last else f", batch {batch + 1} is next"),
        message=verdict.get("summary") or verdict.get("reason") or "",
        channels=plan.notify.channels,
        context={"batch": batch, "verdict": "pass", "summary": verdict.get("summary")},
    )


# -- rollback -------------------------------------------------------------------------------


def rollback_scope(plan: Plan) -> list[dict[str, Any]]:
    ctx = runtime.run_context(_ti())
    book = runtime.ledger()
    chosen = [d for d in book.decisions(ctx.run_id) if d.decision == "rollback"]
    last = chosen[-1] if chosen else None
    failing = last.batch_index if last else None
    breaching = list((last.detail or {}).get("breaching", [])) if last else []
    targets = finalize.rollback_plan(runtime.platform(), book, plan, ctx, failing, breaching)
    run = book.get_run(ctx.run_id)
    detail = dict(run.detail or {})
    detail.update(
        {
            "rollback_started_at": (last.decided_at if last else datetime.now(UTC)).isoformat(),
            "rollback_scope": plan.policy.rollback.scope,
            "rollback_targets": targets,
        }
    )
    if not targets:
        detail["rollback_verification"] = {
            "verified": [],
            "broken": [],
            "note": "no tenant was on the new version",
        }
    book.update_run(ctx.run_id, status="rolling_back", detail=detail)
    size = plan.policy.deploy.shard_size
    return [{"targets": targets[i : i + size]} for i in range(0, len(targets), size)]


def rollback_execute(plan: Plan, targets: list[dict[str, Any]]) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    book = runtime.ledger()
    spec = controls.effective_policy(plan, book, ctx.run_id).rollback  # adjusted concurrency
    summary = operations.rollback_shard(
        runtime.platform(),
        book,
        runtime.recorder(book),
        ctx,
        targets=targets,
        concurrency=spec.concurrency,
        retry=RetryPolicy(retries=plan.policy.deploy.retries),
    )
    return summary.as_dict()


def rollback_verify(plan: Plan) -> dict[str, Any]:
    ctx = runtime.run_context(_ti())
    book = runtime.ledger()
    run = book.get_run(ctx.run_id)
    detail = dict(run.detail or {})
    targets = detail.get("rollback_targets", [])
    upgrades = {a.tenant_id: a for a in book.actions(ctx.run_id, kind="upgrade")}
    verification = operations.verify_rollback(runtime.platform(), ctx, targets, upgrades)
    started = datetime.fromisoformat(
        detail.get("rollback_started_at") or datetime.now(UTC).isoformat()
    )
    duration_ms = int((datetime.now(UTC) - started).total_seconds() * 1000)
    verification["duration_ms"] = duration_ms
    detail["rollback_verification"] = verification
    book.update_run(ctx.run_id, detail=detail)
    failed = [a.tenant_id for a in book.actions(ctx.run_id, kind="rollback", state="failed")]
    alert = rollback_failure_alert(failed, verification["broken"])
    if alert is not None:
        raise_alert(
            runtime.recorder(book),
            ctx,
            alert,
            channels=plan.notify.channels,
            count=metrics.count,
            notify=should_notify(plan, ALERT),
        )
    metrics.timing(
        metrics.ROLLBACK_DURATION, duration_ms, {"plan": ctx.plan_id, "plugin": ctx.plugin}
    )
    return {
        "verified": len(verification["verified"]),
        "broken": verification["broken"][:50],
        "duration_ms": duration_ms,
    }


def rollback_announce(plan: Plan) -> dict[str, Any]:
    ti = _ti()
    ctx = runtime.run_context(ti)
    result = ti.xcom_pull(task_ids="rollback.verify") or {}
    recorder = runtime.recorder()
    recorder.audit(
        ctx,
        "run.rolled_back",
        audit_id=f"{ctx.run_id}:rolled_back",
        details={
            "verified": result.get("verified"),
            "broken": result.get("broken"),
            "duration_ms": result.get("duration_ms"),
        },
    )
    if should_notify(plan, ROLLBACK):
        recorder.notify(
            ctx,
            "plugin.version.gray.rollback",
            key="rollback.done",
            severity="critical" if result.get("broken") else "warning",
            title=f"{plan.id}: rolled back {result.get('verified', 0)} tenant(s) in "
            f"{(result.get('duration_ms') or 0) / 1000:.1f}s",
            channels=plan.notify.channels,
        )
    recorder.flush()
    return result


# -- finalize -------------------------------------------------------------------------------


def record(plan: Plan) -> dict[str, Any]:
    ti = _ti()
    data = ti.xcom_pull(task_ids="preflight.validate")
    book = runtime.ledger()
    if not data:  # preflight.validate itself failed: there is no run to speak of
        return {"outcome": "failed", "detail": {"note": "the run's conf was refused"}}
    ctx = runtime.run_context(ti)
    outcome, detail = finalize.outcome_of(book, runtime.platform(), ctx)
    book.finish_run(ctx.run_id, outcome, detail={"outcome_detail": detail})
    controls.settle_at_end(book, ctx, outcome)
    recorder = runtime.recorder(book)
    recorder.audit(
        ctx,
        "run.finished",
        audit_id=f"{ctx.run_id}:run.finished",
        details={"outcome": outcome, **detail},
    )
    if should_notify(plan, RUN_END):
        recorder.notify(
            ctx,
            "plugin.version.gray.finished",
            key="run.finished",
            severity="info" if outcome in ("promoted", "dry_run") else "warning",
            title=f"{plan.id}: {ctx.plugin} -> {ctx.target_version}: {outcome}",
            channels=plan.notify.channels,
            context=detail,
        )
    _, pending = recorder.flush()
    rate = finalize.upgrade_success_rate(book, ctx.run_id)
    if rate is not None:
        metrics.gauge(
            metrics.SUCCESS_RATE,
            round(rate, 4),
            {"plan": ctx.plan_id, "plugin": ctx.plugin, "outcome": outcome},
        )
    exposed = finalize.record_exposure(book, ctx.run_id)
    if exposed is not None:
        metrics.gauge(
            metrics.EXPOSURE,
            exposed["tenant_minutes_before_detection"],
            {
                "plan": ctx.plan_id,
                "plugin": ctx.plugin,
                "outcome": outcome,
                "detected": str(exposed["detected"]).lower(),
            },
        )
    return {
        "outcome": outcome,
        "detail": detail,
        "audit_pending": pending,
        "upgrade_success_rate": rate,
        "exposure": exposed,
    }


def report(plan: Plan) -> dict[str, Any]:
    """Build the run's report from the ledger, render it, store it; the files in the XCom.

    Runs on every outcome, even when `record` failed; without a ledger (a run refused in
    preflight, a database down) the report says what the DAG itself knows.
    """
    from powerx_upgrade import reporting
    from powerx_upgrade.orchestration.operators.report import (
        airflow_base_url,
        api_base_url,
        run_identity,
    )
    from powerx_upgrade.rollout.alerts import alerts_of

    context = get_current_context()
    run_id = context["dag_run"].run_id
    identity = run_identity(plan, context, settled=_ti().xcom_pull(task_ids="finalize.record"))
    options: dict[str, Any] = {"identity": identity, "airflow_base_url": airflow_base_url()}
    try:
        book = runtime.ledger()
        document = reporting.report_from_ledger(
            book, run_id, alerts=alerts_of(book, run_id), **options
        )
    except Exception as exc:  # the ledger is unreachable: report what is known, say why
        note = f"the ledger could not be read ({type(exc).__name__}: {exc})"
        known = dataclasses.replace(identity, error="; ".join(filter(None, [identity.error, note])))
        document = reporting.build_report(
            reporting.RunRecords(None), **{**options, "identity": known}
        )
    files = reporting.store_reports(reporting.render_reports(document), plan.id, run_id)
    return {
        "outcome": document["outcome"],
        "files": files,
        "link": reporting.report_link(plan.id, run_id, api_base_url=api_base_url()),
    }


def result() -> dict[str, Any]:
    summary = _ti().xcom_pull(task_ids="finalize.record") or {}
    outcome = summary.get("outcome", "unknown")
    if outcome not in ("promoted", "dry_run"):
        raise AirflowFailException(
            f"run outcome {outcome}: the target version is not on every selected tenant "
            f"({summary.get('detail')})"
        )
    return summary
