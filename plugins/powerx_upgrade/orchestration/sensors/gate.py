"""The batch gate: a deferrable sensor that judges a batch's bake on monitoring metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator

from powerx_upgrade.domain.gate import GateEvaluation, Phase
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import runtime
from powerx_upgrade.orchestration.triggers.gate import BatchGateTrigger
from powerx_upgrade.rollout.gating import (
    GatePoller,
    deploy_check,
    deploy_failure_evaluation,
    gate_watch,
)


class BatchGateSensor(BaseSensorOperator):
    """Judge batch `batch` of a run: first its deploy against `max_failed`, then its metrics.

    `execute()` pokes once in the worker; without a verdict yet it defers to
    `BatchGateTrigger`, which polls in the triggerer without holding a worker slot. The final
    evaluation (every measured value against its limit) goes to the ledger and the XCom.

    :param plan: the plan (its policy's gate).
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

    def execute(self, context: Any) -> dict[str, Any]:
        ti = context["ti"]
        ctx = runtime.run_context(ti)
        book = runtime.ledger()
        check = deploy_check(book, self.plan, ctx, self.batch)
        if check["too_many_failures"]:
            return self._finish(context, deploy_failure_evaluation(check, self.plan), 0)
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
                0,
            )
        watch = gate_watch(book, self.plan, ctx, self.batch, check)
        hook = runtime.monitoring()

        async def query(tenants: list[str], start: datetime, end: datetime) -> dict[str, Any]:
            return hook.query(ctx.plugin, tenants, start, end)

        poller = GatePoller(self.plan.policy.gate, watch, query)
        result = asyncio.run(poller.poke(datetime.now(UTC)))
        if result.phase.final:
            return self._finish(context, result, 1)
        self.log.info("batch %s gate: %s; deferring to the triggerer", self.batch, result.reason)
        self.defer(
            trigger=BatchGateTrigger(
                gate=self.plan.policy.gate.model_dump(mode="json"),
                watch=watch,
                state=poller.state(),
                conn_id=self.monitoring_conn_id,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "done":
            failed = GateEvaluation(
                Phase.FAIL, f"the gate broke: {event.get('message')}", (), 1, False
            )
            return self._finish(context, failed, 0)
        evaluation = event["evaluation"]
        return self._record(context, evaluation, event.get("pokes", 0) + 1)

    def _finish(self, context: Any, result: GateEvaluation, pokes: int) -> dict[str, Any]:
        return self._record(context, result.as_dict(), pokes)

    def _record(self, context: Any, evaluation: dict[str, Any], pokes: int) -> dict[str, Any]:
        ctx = runtime.run_context(context["ti"])
        book = runtime.ledger()
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
        recorder.flush()
        self.log.info(
            "batch %s verdict: %s (%s)", self.batch, evaluation["phase"], evaluation["reason"]
        )
        return {"batch": self.batch, "pokes": pokes, **evaluation}
