"""The batch gate: a deferrable sensor that judges a batch's bake on monitoring metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator

from powerx_upgrade.config import monitoring_names
from powerx_upgrade.domain.alerts import Alert, error_rate_alert
from powerx_upgrade.domain.gate import GateEvaluation, Phase
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import metrics, runtime
from powerx_upgrade.orchestration.triggers.gate import BatchGateTrigger, due_alert
from powerx_upgrade.rollout.alerts import raise_alert
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.gating import (
    GatePoller,
    deploy_check,
    deploy_failure_evaluation,
    gate_watch,
)


class BatchGateSensor(BaseSensorOperator):
    """Judge batch `batch` of a run: first its deploy against `max_failed`, then its metrics.

    `execute()` pokes once in the worker; without a verdict yet it defers to
    `BatchGateTrigger`, which polls in the triggerer without holding a worker slot. Alerts due
    during the bake (batch runtime, missing data) come back as interim events: the sensor raises
    them and defers again. The final evaluation (every measured value against its limit) and the
    poke history go to the ledger and the XCom.

    :param plan: the plan (its policy's gate and alert thresholds).
    :param batch: the batch's number, 1-based.
    :param monitoring_conn_id: the monitoring connection.
    """

    def __init__(
        self,
        *,
        plan: Plan,
        batch: int,
        monitoring_conn_id: str = "powerx_monitoring",
        **kwargs: Any,
    ) -> None:
        gate = plan.policy.gate
        longest_bake = max(b.bake for b in plan.policy.batches)
        kwargs.setdefault("poke_interval", gate.poke_interval.total_seconds())
        kwargs.setdefault(
            "timeout",
            (
                longest_bake + gate.signal_delay + gate.missing_data.after + timedelta(minutes=10)
            ).total_seconds(),
        )
        super().__init__(**kwargs)
        self.plan = plan
        self.batch = batch
        self.monitoring_conn_id = monitoring_conn_id

    @property
    def limits(self) -> dict[str, float]:
        policy = self.plan.policy
        return {
            "batch_runtime": policy.max_batch_duration.total_seconds(),
            "missing_data": policy.alerts.missing_data.total_seconds(),
        }

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        ctx = runtime.run_context(ti)
        book = runtime.ledger()
        check = deploy_check(book, self.plan, ctx, self.batch)
        if check["too_many_failures"]:
            return self._finish(context, deploy_failure_evaluation(check, self.plan), {})
        if not check["succeeded"]:
            return self._finish(
                context,
                GateEvaluation(
                    Phase.NO_DATA,
                    "no tenant of this batch is on the new version: nothing to judge",
                    (),
                    0,
                    False,
                ),
                {},
            )
        watch = gate_watch(book, self.plan, ctx, self.batch, check)
        hook = runtime.monitoring()

        async def query(tenants: list[str], start: datetime, end: datetime) -> dict[str, Any]:
            return hook.query(ctx.plugin, tenants, start, end)

        poller = GatePoller(self.plan.policy.gate, watch, query)
        now = datetime.now(UTC)
        result = asyncio.run(poller.poke(now))
        if result.phase.final:
            return self._finish(context, result, poller.state())
        alert = due_alert(poller, now, self.limits)
        if alert is not None:
            poller.alerted.append(alert.rule)
            self._raise(ctx, alert)
        self.log.info("batch %s gate: %s; deferring to the triggerer", self.batch, result.reason)
        self._defer(watch, poller.state())

    def _defer(self, watch: dict[str, Any], state: dict[str, Any]) -> None:
        self.defer(
            trigger=BatchGateTrigger(
                gate=self.plan.policy.gate.model_dump(mode="json"),
                watch=watch,
                state=state,
                limits=self.limits,
                conn_id=self.monitoring_conn_id,
                names=monitoring_names(),
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status == "alert":
            ctx = runtime.run_context(context["ti"])
            alert = event["alert"]
            self._raise(
                ctx,
                Alert(
                    alert["rule"],
                    alert["severity"],
                    alert["batch"],
                    alert["message"],
                    alert.get("context") or {},
                ),
            )
            check = deploy_check(runtime.ledger(), self.plan, ctx, self.batch)
            watch = gate_watch(runtime.ledger(), self.plan, ctx, self.batch, check)
            self._defer(watch, event["state"])
        if status != "done":
            failed = GateEvaluation(
                Phase.FAIL, f"the gate broke: {event.get('message')}", (), 1, False
            )
            return self._finish(context, failed, event.get("state") or {})
        return self._record(context, event["evaluation"], event.get("state") or {})

    def _finish(
        self, context: Any, result: GateEvaluation, state: dict[str, Any]
    ) -> dict[str, Any]:
        return self._record(context, result.as_dict(), state)

    def _raise(self, ctx: RunContext, alert: Alert) -> None:
        raise_alert(
            runtime.recorder(), ctx, alert, channels=self.plan.notify.channels, count=metrics.count
        )

    def _record(
        self, context: Any, evaluation: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, Any]:
        ctx = runtime.run_context(context["ti"])
        book = runtime.ledger()
        history = state.get("history") or []
        for poke in history[:-1]:  # earlier pokes, for the report's charts
            book.record_gate(
                ctx.run_id,
                self.batch,
                phase=poke["phase"],
                reason="poke",
                measurements=poke["checks"],
                final=False,
                evaluated_at=datetime.fromisoformat(poke["at"]),
            )
        book.record_gate(
            ctx.run_id,
            self.batch,
            phase=evaluation["phase"],
            reason=evaluation["reason"],
            measurements=evaluation["measurements"],
            final=True,
        )
        recorder = runtime.recorder(book)
        recorder.audit(
            ctx,
            "batch.gate.verdict",
            audit_id=f"{ctx.run_id}:gate:{self.batch}",
            details={
                "batch": self.batch,
                "verdict": evaluation["phase"],
                "reason": evaluation["reason"],
                "measurements": evaluation["measurements"][:50],
            },
        )
        alert = error_rate_alert(
            self.batch, evaluation["measurements"], self.plan.policy.alerts.error_rate
        )
        if alert is not None:
            self._raise(ctx, alert)
        recorder.flush()
        started = [
            a.started_at
            for a in book.actions(ctx.run_id, kind="upgrade", batch_index=self.batch)
            if a.started_at
        ]
        if started:
            minutes = (datetime.now(UTC) - min(started)).total_seconds() / 60
            metrics.gauge(
                metrics.BATCH_DURATION,
                round(minutes, 3),
                {"plan": ctx.plan_id, "plugin": ctx.plugin, "batch": str(self.batch)},
            )
        self.log.info(
            "batch %s verdict: %s (%s)", self.batch, evaluation["phase"], evaluation["reason"]
        )
        return {"batch": self.batch, "pokes": len(history), **evaluation}
