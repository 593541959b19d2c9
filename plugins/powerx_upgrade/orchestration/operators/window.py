"""Batches start only inside the plan's window: wait (deferred, no worker slot) until it opens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.windows import window_state
from powerx_upgrade.orchestration import runtime
from powerx_upgrade.rollout.controls import replan_remaining
from powerx_upgrade.rollout.preflight import planned_batches


class WindowWaitOperator(BaseOperator):
    """Go on when the window is open; otherwise defer until it opens.

    In preflight (`batch=None`) a freeze stops the run (nothing is touched). Before a later batch,
    the operator first re-cuts the batches not started when an operator adjusted their ratios
    (`rollout.controls.replan_remaining`), skips the batch if the run did not plan it (a small
    fleet merged it into an earlier one), then waits for the window, freezes included.

    :param plan: the plan (its window).
    :param batch: the batch this task starts, or None for the preflight check.
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, plan: Plan, batch: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.batch = batch

    def execute(self, context: Any, event: Any = None) -> dict[str, Any]:
        ctx = runtime.run_context(context["ti"])
        book = runtime.ledger()
        if self.batch is not None:
            if event is None:  # adjusted ratios re-cut the batches not started (run controls)
                replan_remaining(book, self.plan, ctx, self.batch, runtime.recorder(book))
            planned = [b["index"] for b in planned_batches(book, ctx.run_id)]
            if self.batch not in planned:
                raise AirflowSkipException(
                    f"batch {self.batch} is not in this run's plan (planned: {planned})"
                )
        if self.plan.window is None or not ctx.respect_window:
            return {
                "open": True,
                "reason": "no window"
                if self.plan.window is None
                else "respect_window is off for this run",
            }
        state = window_state(self.plan.window, datetime.now(UTC))
        if state.open or ctx.dry_run:
            return state.as_dict()
        if self.batch is None and state.frozen_by:
            book.record_decision(
                ctx.run_id,
                batch_index=None,
                kind="stop",
                decision="stop",
                actor="window",
                via="auto",
                detail={"reason": f"frozen by {state.frozen_by}"},
            )
            recorder = runtime.recorder(book)
            recorder.audit(
                ctx,
                "run.stopped.freeze",
                audit_id=f"{ctx.run_id}:freeze",
                details={"freeze": state.frozen_by},
            )
            recorder.flush()
            raise AirflowSkipException(f"the window is frozen ({state.frozen_by}): not starting")
        if state.next_open is None:
            raise AirflowFailException(f"the window does not open again: {state.reason}")
        self.log.info("window closed: %s; waiting", state.reason)
        self.defer(trigger=DateTimeTrigger(moment=state.next_open), method_name="execute")
