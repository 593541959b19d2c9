"""The batch gate: a deferrable sensor that judges a batch's bake on monitoring metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferralTimeout

from powerx_upgrade.config import monitoring_names
from powerx_upgrade.domain.alerts import Alert, error_rate_alert
from powerx_upgrade.domain.gate import GateEvaluation, Phase
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import metrics, runtime
from powerx_upgrade.orchestration.hooks.sources import monitoring_source, sync_query
from powerx_upgrade.orchestration.triggers.gate import BatchGateTrigger, due_alert
from powerx_upgrade.rollout import controls
from powerx_upgrade.rollout.alerts import raise_alert
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.gating import (
    GatePoller,
    deploy_check,
    deploy_failure_evaluation,
    gate_watch,
    record_monitoring_errors,
)
from powerx_upgrade.rollout.preflight import planned_batches
from powerx_upgrade.rollout.verdicts import ALERT, describe_verdict, should_notify


class BatchGateSensor(BaseSensorOperator):
    """Judge batch `batch` of a run: first its deploy against `max_failed`, then its metrics.

    `execute()` pokes once in the worker; without a verdict yet it defers to
    `BatchGateTrigger`, which polls in the triggerer without holding a worker slot. Alerts due
    during the bake (batch runtime, missing data) come back as interim events: the sensor raises
    them and defers again. The final evaluation (every measured value against its limit) and the
    poke history go to the ledger and the XCom.

    Run controls: a pending rollback or pause request (made during the deploy, or while the
    trigger polls) ends the gate with `rollback_requested` / `pause_requested` and is settled
    here; adjusted limits and bake apply from the next poke (the trigger re-reads them).

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
        ctx, book = self._live_run(ti)
        # an operator's request made during the deploy ends the gate before its first poke
        request = controls.gate_request(book, ctx.run_id)
        if request is not None:
            return self._finish(
                context, controls.requested_evaluation(request, self.batch), {}, request.id
            )
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
        query = sync_query(self._source(ctx), ctx.plugin)
        found = controls.gate_controls(book, ctx.run_id, self.plan.policy.gate, watch)
        controls.settle_adjustments(
            book, ctx, found.applied, where=f"the gate of batch {self.batch}"
        )
        poller = GatePoller(found.gate, {**watch, "bake_seconds": found.bake_seconds}, query)
        now = datetime.now(UTC)
        result = asyncio.run(poller.poke(now))
        if result.phase.final:
            return self._finish(context, result, poller.state())
        alert = due_alert(poller, now, self.limits)
        if alert is not None:
            poller.alerted.append(alert.rule)
            self._raise(ctx, alert)
        poller.deadline_from(now)
        self.log.info("batch %s gate: %s; deferring to the triggerer", self.batch, result.reason)
        self._defer(ctx, watch, poller.state())

    def _live_run(self, ti: Any) -> tuple[RunContext, Any]:
        """The run and its ledger, when preflight planned this batch; else skip the gate.

        The gate runs after a failed deploy (its trigger rule is none_skipped) so that failed
        deploys are judged; but when preflight itself stopped the run (conf refused, artifact
        refused, planning failed) nothing was deployed and there is nothing to judge: without
        this skip the empty gate would read "no data" and park the run at a pause.
        """
        if not ti.xcom_pull(task_ids="preflight.validate"):
            raise AirflowSkipException("preflight refused the run: no batch was deployed")
        ctx = runtime.run_context(ti)
        book = runtime.ledger()
        if not any(b["index"] == self.batch for b in planned_batches(book, ctx.run_id)):
            raise AirflowSkipException(
                f"batch {self.batch} was never planned (preflight stopped the run before "
                "planning, or the fleet is too small for it): nothing to judge"
            )
        return ctx, book

    def _defer(self, ctx: RunContext, watch: dict[str, Any], state: dict[str, Any]) -> None:
        """Defer to the trigger until a verdict, at most until the gate's deadline: a trigger
        that never fires must not hold the run forever (`resume_execution` turns the timeout
        into a no_data verdict, which follows missing_data.action)."""
        deadline = datetime.fromisoformat(state["deadline"]) if state.get("deadline") else None
        now = datetime.now(UTC)
        timeout = max(deadline - now, timedelta(seconds=1)) if deadline else None
        self.defer(
            timeout=timeout,
            trigger=BatchGateTrigger(
                gate=self.plan.policy.gate.model_dump(mode="json"),
                watch=watch,
                state=state,
                limits=self.limits,
                conn_id=self.monitoring_conn_id,
                names=monitoring_names(),
                run_id=ctx.run_id,
                source=self._source(ctx),
            ),
            method_name="execute_complete",
        )

    def resume_execution(
        self, next_method: str, next_kwargs: dict[str, Any] | None, context: Any
    ) -> Any:
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except (AirflowSensorTimeout, TaskDeferralTimeout) as exc:
            self.log.error("batch %s gate: no verdict before its deadline (%s)", self.batch, exc)
            timed_out = GateEvaluation(
                Phase.NO_DATA,
                "the gate reached its deadline without a verdict (the monitoring trigger never "
                "answered): treated as missing data",
                (),
                0,
                False,
            )
            return self._finish(context, timed_out, {})

    def _source(self, ctx: RunContext) -> dict[str, Any]:
        """The plan's metric source (PowerX service or Prometheus), as plain JSON."""
        return monitoring_source(
            self.plan,
            ctx.target_version,
            names=monitoring_names(),
            powerx_conn_id=self.monitoring_conn_id,
        )

    def _settle_adjustments(self, ctx: RunContext, state: dict[str, Any]) -> None:
        """Settle the adjust requests the trigger put in force, at the poke that did."""
        book = runtime.ledger()
        for applied in state.get("applied_controls") or []:
            controls.settle_adjustments(
                book,
                ctx,
                [applied["id"]],
                where=f"the gate of batch {self.batch}",
                applied_at=datetime.fromisoformat(applied["at"]),
            )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        status = event.get("status")
        if status in ("alert", "done"):
            self._settle_adjustments(runtime.run_context(context["ti"]), event.get("state") or {})
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
            self._defer(ctx, watch, event["state"])
        if status != "done":
            failed = GateEvaluation(
                Phase.FAIL, f"the gate broke: {event.get('message')}", (), 1, False
            )
            return self._finish(context, failed, event.get("state") or {})
        return self._record(
            context, event["evaluation"], event.get("state") or {}, event.get("control")
        )

    def _finish(
        self,
        context: Any,
        result: GateEvaluation,
        state: dict[str, Any],
        control: int | None = None,
    ) -> dict[str, Any]:
        return self._record(context, result.as_dict(), state, control)

    def _raise(self, ctx: RunContext, alert: Alert) -> None:
        raise_alert(
            runtime.recorder(),
            ctx,
            alert,
            channels=self.plan.notify.channels,
            count=metrics.count,
            notify=should_notify(self.plan, ALERT),
        )

    def _record(
        self,
        context: Any,
        evaluation: dict[str, Any],
        state: dict[str, Any],
        control: int | None = None,
    ) -> dict[str, Any]:
        ctx = runtime.run_context(context["ti"])
        book = runtime.ledger()
        # the verdict in words (+ where a failure concentrates): ledger, audit, alert, XCom
        evaluation = {
            **evaluation,
            **describe_verdict(book, self.plan, ctx, self.batch, evaluation, state),
        }
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
            summary=evaluation["summary"],
            segment=evaluation["segment"],
        )
        if control is not None:  # the gate ended on an operator's request: it is applied
            controls.settle_request(book, ctx, control, batch=self.batch, phase=evaluation["phase"])
        recorder = runtime.recorder(book)
        record_monitoring_errors(
            recorder,
            ctx,
            self.batch,
            evaluation,
            state,
            channels=self.plan.notify.channels,
            count=metrics.count,
            notify=should_notify(self.plan, ALERT),
        )
        recorder.audit(
            ctx,
            "batch.gate.verdict",
            audit_id=f"{ctx.run_id}:gate:{self.batch}",
            details={
                "batch": self.batch,
                "verdict": evaluation["phase"],
                "reason": evaluation["reason"],
                "summary": evaluation["summary"],
                "segment": evaluation["segment"],
                "measurements": evaluation["measurements"][:50],
            },
        )
        alert = error_rate_alert(
            self.batch,
            evaluation["measurements"],
            self.plan.policy.alerts.error_rate,
            summary=evaluation["summary"],
            segment=evaluation["segment"],
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
            "batch %s verdict: %s (%s)", self.batch, evaluation["phase"], evaluation["summary"]
        )
        result = {"batch": self.batch, "pokes": len(history), **evaluation}
        return {**result, "control": control} if control is not None else result
