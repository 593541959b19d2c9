"""The batch gate's steps: one call per poke of the sensor and one per trigger event, each
returning either the recorded verdict or what to defer with. Everything the gate writes (poke
history, verdict, settled controls, monitoring errors, alerts, audit, the batch's duration
metric) is written here, without Airflow.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from powerx_upgrade.domain.alerts import (
    BATCH_RUNTIME,
    MONITORING_DATA_MISSING,
    Alert,
    batch_runtime_alert,
    error_rate_alert,
    missing_data_alert,
)
from powerx_upgrade.domain.gate import GateEvaluation, Phase
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.replay import MARKER as INPUT_MARKER
from powerx_upgrade.rollout import controls, metrics
from powerx_upgrade.rollout.alerts import raise_alert
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.gating import (
    GatePoller,
    Query,
    budget_evaluation,
    deploy_check,
    deploy_failure_evaluation,
    gate_watch,
    record_monitoring_errors,
)
from powerx_upgrade.rollout.preflight import planned_batches
from powerx_upgrade.rollout.preflight import preflight_failure as recorded_failure
from powerx_upgrade.rollout.services import Services
from powerx_upgrade.rollout.verdicts import ALERT, describe_verdict, should_notify

XCOM_MEASUREMENTS = 50
"""At most this many measurements travel in the gate's XCom (the batch-scope ones first, then
failing per-tenant ones): a per-tenant check measures every tenant of the batch, and XCom must
not grow with the fleet. Every measurement is in the ledger's final gate evaluation, which is
what the decision reads (`run_steps.decide_batch`)."""

NOTHING_DEPLOYED = GateEvaluation(
    Phase.NO_DATA, "no tenant of this batch is on the new version: nothing to judge", (), 0, False
)
TIMED_OUT = GateEvaluation(
    Phase.NO_DATA,
    "the gate reached its deadline without a verdict (the monitoring trigger never answered): "
    "treated as missing data",
    (),
    0,
    False,
)


@dataclass(frozen=True)
class GateStep:
    """What a gate step leaves: the recorded verdict (`verdict`, for the XCom), or, while the
    bake goes on, what to defer to the trigger with (`watch`, `state`)."""

    verdict: dict[str, Any] | None = None
    watch: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def limits(plan: Plan) -> dict[str, float]:
    """The gate's alert thresholds in seconds (`batch_runtime`, `missing_data`)."""
    policy = plan.policy
    return {
        "batch_runtime": policy.max_batch_duration.total_seconds(),
        "missing_data": policy.alerts.missing_data.total_seconds(),
    }


def preflight_failure(services: Services, ctx: RunContext) -> dict[str, Any] | None:
    """Why preflight could not begin the run (`preflight.record_begin_failure`), else None: a
    gate then has no batch to judge."""
    return recorded_failure(services.ledger, ctx.run_id)


def is_planned(services: Services, ctx: RunContext, batch: int) -> bool:
    return any(b["index"] == batch for b in planned_batches(services.ledger, ctx.run_id))


def due_alert(poller: GatePoller, now: datetime, limits: dict[str, float]) -> Alert | None:
    """The first alert that is due and not yet raised for this batch."""
    batch = int(poller.watch.get("batch") or 0)
    if BATCH_RUNTIME not in poller.alerted and "batch_runtime" in limits:
        alert = batch_runtime_alert(
            batch, poller.runtime(now), timedelta(seconds=limits["batch_runtime"])
        )
        if alert:
            return alert
    if MONITORING_DATA_MISSING not in poller.alerted and "missing_data" in limits:
        return missing_data_alert(
            batch, poller.silent_for(now), timedelta(seconds=limits["missing_data"])
        )
    return None


def first_poke(
    services: Services, plan: Plan, ctx: RunContext, batch: int, query: Query
) -> GateStep:
    """The sensor's poke in the worker: an operator's request made during the deploy, too many
    failed deploys or nothing deployed end the gate at once; otherwise poke the metrics once
    and either record the verdict or say what to defer with (raising an alert now due).

    Before the bake can be judged (`GatePoller.judgeable_from`: bake start + signal_delay) it
    does not poke: such a poke queries nothing and always reads `running`, so the gate defers
    at once with an empty history (the requests, deploy checks, adjustments settled, alerts due
    and the deadline are handled as before)."""
    ledger = services.ledger
    request = controls.gate_request(ledger, ctx.run_id)
    if request is not None:
        evaluation = controls.requested_evaluation(request, batch)
        return finish(services, plan, ctx, batch, evaluation, {}, request.id)
    check = deploy_check(ledger, plan, ctx, batch)
    if check["too_many_failures"]:
        return finish(services, plan, ctx, batch, deploy_failure_evaluation(check, plan), {})
    over_budget = budget_evaluation(ledger, plan, ctx, batch)
    if over_budget is not None:
        return finish(services, plan, ctx, batch, over_budget, {})
    if not check["succeeded"]:
        return finish(services, plan, ctx, batch, NOTHING_DEPLOYED, {})
    watch = gate_watch(ledger, plan, ctx, batch, check)
    found = controls.gate_controls(ledger, ctx.run_id, plan.policy.gate, watch)
    controls.settle_adjustments(ledger, ctx, found.applied, where=f"the gate of batch {batch}")
    poller = GatePoller(found.gate, {**watch, "bake_seconds": found.bake_seconds}, query)
    now = datetime.now(UTC)
    if poller.can_judge(now):
        result = asyncio.run(poller.poke(now))
        if result.phase.final:
            return finish(services, plan, ctx, batch, result, poller.state())
        reason = result.reason
    else:  # a poke now would judge nothing (GatePoller.judgeable_from): defer at once
        reason = nothing_to_judge(poller)
    alert = due_alert(poller, now, limits(plan))
    if alert is not None:
        poller.alerted.append(alert.rule)
        raise_gate_alert(services, plan, ctx, alert)
    poller.deadline_from(now)
    return GateStep(watch=watch, state=poller.state(), reason=reason)


def nothing_to_judge(poller: GatePoller) -> str:
    """Why a gate does not poke yet, in words."""
    return (
        f"nothing to judge before {poller.judgeable_from().isoformat(timespec='milliseconds')} "
        "(bake start + signal_delay): not poked"
    )


def on_event(
    services: Services, plan: Plan, ctx: RunContext, batch: int, event: dict[str, Any]
) -> GateStep:
    """A trigger event: settle the adjustments it put in force; an interim alert is raised and
    the gate defers again; a verdict (or a broken trigger: a failed gate) is recorded."""
    status = event.get("status")
    state = event.get("state") or {}
    if status in ("alert", "done"):
        settle_trigger_adjustments(services, ctx, batch, state)
    if status == "alert":
        raise_gate_alert(services, plan, ctx, alert_of(event["alert"]))
        check = deploy_check(services.ledger, plan, ctx, batch)
        watch = gate_watch(services.ledger, plan, ctx, batch, check)
        return GateStep(watch=watch, state=event["state"], reason="alert raised")
    if status != "done":
        broke = GateEvaluation(Phase.FAIL, f"the gate broke: {event.get('message')}", (), 1, False)
        return finish(services, plan, ctx, batch, broke, state)
    verdict = record_verdict(
        services, plan, ctx, batch, event["evaluation"], state, event.get("control")
    )
    return GateStep(verdict=verdict)


def finish(
    services: Services,
    plan: Plan,
    ctx: RunContext,
    batch: int,
    result: GateEvaluation,
    state: dict[str, Any],
    control: int | None = None,
) -> GateStep:
    verdict = record_verdict(services, plan, ctx, batch, result.as_dict(), state, control)
    return GateStep(verdict=verdict)


def settle_trigger_adjustments(
    services: Services, ctx: RunContext, batch: int, state: dict[str, Any]
) -> None:
    """Settle the adjust requests the trigger put in force, at the poke that did."""
    for applied in state.get("applied_controls") or []:
        controls.settle_adjustments(
            services.ledger,
            ctx,
            [applied["id"]],
            where=f"the gate of batch {batch}",
            applied_at=datetime.fromisoformat(applied["at"]),
        )


def alert_of(data: dict[str, Any]) -> Alert:
    """An alert from a trigger event's JSON."""
    return Alert(
        data["rule"], data["severity"], data["batch"], data["message"], data.get("context") or {}
    )


def raise_gate_alert(services: Services, plan: Plan, ctx: RunContext, alert: Alert) -> None:
    raise_alert(
        services.recorder,
        ctx,
        alert,
        channels=plan.notify.channels,
        count=services.metrics.count,
        notify=should_notify(plan, ALERT),
    )


def record_verdict(
    services: Services,
    plan: Plan,
    ctx: RunContext,
    batch: int,
    evaluation: dict[str, Any],
    state: dict[str, Any],
    control: int | None = None,
) -> dict[str, Any]:
    """The verdict in words (and where a failure concentrates) in the ledger with the poke
    history, the operator's request it ended on settled, audited, alerted; the XCom value."""
    ledger = services.ledger
    evaluation = {**evaluation, **describe_verdict(ledger, plan, ctx, batch, evaluation, state)}
    history = state.get("history") or []
    _record_gate(services, ctx, batch, evaluation, history)
    if control is not None:  # the gate ended on an operator's request: it is applied
        controls.settle_request(ledger, ctx, control, batch=batch, phase=evaluation["phase"])
    _audit_verdict(services, plan, ctx, batch, evaluation, state)
    _batch_duration(services, ctx, batch)
    result = {"batch": batch, "pokes": len(history), **bounded(evaluation)}
    return {**result, "control": control} if control is not None else result


def bounded(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The evaluation as the XCom carries it, of a size that does not grow with the batch: at
    most XCOM_MEASUREMENTS measurements (those without a tenant, then failing ones, then the
    rest) with `measurements_total`; no per-tenant stats (the segment is already judged from
    them); at most 20 silent tenants per coverage row, with `silent_total`."""
    measured = list(evaluation.get("measurements") or [])
    if len(measured) > XCOM_MEASUREMENTS:
        measured = sorted(
            measured, key=lambda m: (m.get("tenant") is not None, m.get("phase") != "fail")
        )[:XCOM_MEASUREMENTS]
    coverage = [
        {
            **c,
            "silent": list(c.get("silent") or [])[:20],
            "silent_total": len(c.get("silent") or []),
        }
        for c in evaluation.get("coverage") or []
    ]
    return {
        **{k: v for k, v in evaluation.items() if k != "per_tenant"},
        "measurements": measured,
        "measurements_total": len(evaluation.get("measurements") or []),
        "coverage": coverage,
    }


def _record_gate(
    services: Services,
    ctx: RunContext,
    batch: int,
    evaluation: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    for number, poke in enumerate(history, start=1):
        # earlier pokes for the report's charts; every poke's input for a backtest (the last
        # one's checks are the final row's measurements: its row holds the input alone)
        last = number == len(history)
        rows = [] if last else list(poke["checks"])
        if poke.get("input"):
            rows.append({"check": -3, "metric": INPUT_MARKER, "input": poke["input"]})
        if rows or not last:
            services.ledger.record_gate(
                ctx.run_id,
                batch,
                phase=poke["phase"],
                reason="poke",
                measurements=rows,
                final=False,
                evaluated_at=datetime.fromisoformat(poke["at"]),
            )
    services.ledger.record_gate(
        ctx.run_id,
        batch,
        phase=evaluation["phase"],
        reason=evaluation["reason"],
        measurements=evaluation["measurements"],
        final=True,
        summary=evaluation["summary"],
        segment=evaluation["segment"],
    )


def _audit_verdict(
    services: Services,
    plan: Plan,
    ctx: RunContext,
    batch: int,
    evaluation: dict[str, Any],
    state: dict[str, Any],
) -> None:
    recorder = services.recorder
    record_monitoring_errors(
        recorder,
        ctx,
        batch,
        evaluation,
        state,
        channels=plan.notify.channels,
        count=services.metrics.count,
        notify=should_notify(plan, ALERT),
    )
    recorder.audit(
        ctx,
        "batch.gate.verdict",
        audit_id=f"{ctx.run_id}:gate:{batch}",
        details={
            "batch": batch,
            "verdict": evaluation["phase"],
            "reason": evaluation["reason"],
            "summary": evaluation["summary"],
            "segment": evaluation["segment"],
            "measurements": evaluation["measurements"][:50],
        },
    )
    alert = error_rate_alert(
        batch,
        evaluation["measurements"],
        plan.policy.alerts.error_rate,
        summary=evaluation["summary"],
        segment=evaluation["segment"],
    )
    if alert is not None:
        raise_gate_alert(services, plan, ctx, alert)
    recorder.flush()


def _batch_duration(services: Services, ctx: RunContext, batch: int) -> None:
    actions = services.ledger.actions(ctx.run_id, kind="upgrade", batch_index=batch)
    started = [a.started_at for a in actions if a.started_at]
    if started:
        minutes = (datetime.now(UTC) - min(started)).total_seconds() / 60
        tags = {"plan": ctx.plan_id, "plugin": ctx.plugin, "batch": str(batch)}
        services.metrics.gauge(metrics.BATCH_DURATION, round(minutes, 3), tags)
