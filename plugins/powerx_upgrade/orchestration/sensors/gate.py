"""The batch gate: a deferrable sensor that judges a batch's bake on monitoring metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferralTimeout

from powerx_upgrade.config import monitoring_names
from powerx_upgrade.domain.gate import GateEvaluation
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import names, runtime
from powerx_upgrade.orchestration.hooks.sources import monitoring_source, sync_query
from powerx_upgrade.orchestration.triggers.gate import BatchGateTrigger
from powerx_upgrade.rollout import gate_steps
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.gate_steps import GateStep


class BatchGateSensor(BaseSensorOperator):
    """Judge batch `batch` of a run: first its deploy against `max_failed`, then its metrics.

    `execute()` pokes once in the worker (not before the bake can be judged, bake start +
    signal_delay: then it defers at once, `gate_steps.first_poke`); without a verdict yet it
    defers to `BatchGateTrigger`, which polls in the triggerer without holding a worker slot.
    Alerts due during the bake (batch runtime, missing data) come back as interim events: the
    sensor raises them and defers again. The final evaluation (every measured value against its
    limit) and the poke history go to the ledger and the XCom.

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
        return gate_steps.limits(self.plan)

    def execute(self, context: Any) -> dict[str, Any]:
        ctx = self._live_run(context["ti"])
        query = sync_query(self._source(ctx), ctx.plugin)
        step = gate_steps.first_poke(runtime.services(), self.plan, ctx, self.batch, query)
        return self._step(ctx, step)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        ctx = runtime.run_context(context["ti"])
        step = gate_steps.on_event(runtime.services(), self.plan, ctx, self.batch, event)
        return self._step(ctx, step)

    def _step(self, ctx: RunContext, step: GateStep) -> dict[str, Any]:
        """A verdict goes to the XCom; otherwise defer to the trigger with the step's state."""
        if step.verdict is not None:
            verdict = step.verdict
            self.log.info(
                "batch %s verdict: %s (%s)", self.batch, verdict["phase"], verdict["summary"]
            )
            return verdict
        self.log.info("batch %s gate: %s; deferring to the triggerer", self.batch, step.reason)
        self._defer(ctx, step.watch, step.state)
        raise AssertionError("defer() returns only by raising TaskDeferred")  # pragma: no cover

    def _live_run(self, ti: Any) -> RunContext:
        """The run, when preflight planned this batch; else skip the gate.

        The gate runs after a failed deploy (its trigger rule is none_skipped) so that failed
        deploys are judged; but when preflight itself stopped the run (conf refused, artifact
        refused, planning failed, begin failed: no baseline, a monitoring refusal) nothing was
        deployed and there is nothing to judge: without this skip the empty gate would read "no
        data" and park the run at a pause, or count every planned deploy as failed.
        """
        if not ti.xcom_pull(task_ids=names.VALIDATE):
            raise AirflowSkipException("preflight refused the run: no batch was deployed")
        ctx = runtime.run_context(ti)
        failed = gate_steps.preflight_failure(runtime.services(), ctx)
        if failed is not None:
            # begin failed (recorded in the ledger): no batch started; judging the batch would
            # count its never-attempted deploys as failures and "roll back" nobody
            raise AirflowSkipException(
                f"preflight could not begin the run ({failed.get('step')}): no batch was deployed"
            )
        if not gate_steps.is_planned(runtime.services(), ctx, self.batch):
            raise AirflowSkipException(
                f"batch {self.batch} was never planned (preflight stopped the run before "
                "planning, or the fleet is too small for it): nothing to judge"
            )
        return ctx

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
            return self._finish(context, gate_steps.TIMED_OUT, {})

    def _finish(
        self, context: Any, result: GateEvaluation, state: dict[str, Any]
    ) -> dict[str, Any]:
        ctx = runtime.run_context(context["ti"])
        step = gate_steps.finish(runtime.services(), self.plan, ctx, self.batch, result, state)
        return self._step(ctx, step)

    def _source(self, ctx: RunContext) -> dict[str, Any]:
        """The plan's metric source (PowerX service or Prometheus), as plain JSON."""
        return monitoring_source(
            self.plan,
            ctx.target_version,
            names=monitoring_names(),
            powerx_conn_id=self.monitoring_conn_id,
        )
