"""Batches start only inside the plan's window: wait (deferred, no worker slot) until it opens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import runtime
from powerx_upgrade.rollout import run_steps, window
from powerx_upgrade.rollout.window import BatchNotPlanned, Frozen, NeverOpens


class WindowWaitOperator(BaseOperator):
    """Go on when the window is open; otherwise defer until it opens.

    In preflight (`batch=None`) a freeze stops the run (nothing is touched). Before a later batch,
    the operator first re-cuts the batches not started when an operator adjusted their ratios
    (`rollout.controls.replan_remaining`), skips the batch if the run did not plan it (a small
    fleet merged it into an earlier one), then waits for the window, freezes included.

    With `cut_shards` (a batch without an approval step) the open window's answer is the
    batch's deploy shards, which the mapped deploy expands over: one task instead of two.

    :param plan: the plan (its window).
    :param batch: the batch this task starts, or None for the preflight check.
    :param cut_shards: return the batch's deploy shards once the window is open.
    """

    ui_color = "#e8f0fe"

    def __init__(
        self, *, plan: Plan, batch: int | None = None, cut_shards: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.batch = batch
        self.cut_shards = cut_shards

    def execute(self, context: Any, event: Any = None) -> Any:
        ctx = runtime.run_context(context["ti"])
        try:
            check = window.check_window(
                runtime.services(), self.plan, ctx, self.batch, resumed=event is not None
            )
        except (BatchNotPlanned, Frozen) as exc:
            raise AirflowSkipException(str(exc)) from None
        except NeverOpens as exc:
            raise AirflowFailException(str(exc)) from None
        if check.opens_at is None:
            if self.cut_shards and self.batch is not None:
                return run_steps.deploy_shards(runtime.ledger(), self.plan, ctx, self.batch)
            return check.state
        self.log.info("window closed: %s; waiting", check.reason)
        self.defer(trigger=DateTimeTrigger(moment=check.opens_at), method_name="execute")
        return check.state  # pragma: no cover (defer raises)


class PreflightBeginOperator(WindowWaitOperator, BranchMixIn):
    """`preflight.begin`: wait for the window as the preflight check does (deferred while it is
    closed; a freeze stops the run, recorded as the freeze), then begin the run (`begin`:
    subscribe monitoring, take the baseline, announce) and branch to batch 1 or the dry run's
    end. One task where there were two: the baseline and the announcement belong to the moment
    the window opens, and a task costs a scheduler hop and a task process (docs/performance.md).

    :param plan: the plan (its window).
    :param begin: the step that begins the run and names the branch to follow.
    """

    def __init__(self, *, plan: Plan, begin: Callable[[Plan], str], **kwargs: Any) -> None:
        super().__init__(plan=plan, batch=None, **kwargs)
        self.begin = begin

    def execute(self, context: Any, event: Any = None) -> Any:
        super().execute(context, event)  # defers (and comes back here) while the window is shut
        return self.do_branch(context, self.begin(self.plan))
