"""A batch starts only inside the plan's window: whether it may start now, and the freeze that
stops a run before it touches anything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.windows import window_state
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.controls import replan_remaining
from powerx_upgrade.rollout.preflight import planned_batches
from powerx_upgrade.rollout.services import Services


class BatchNotPlanned(LookupError):
    """The run did not plan this batch (a small fleet merged it into an earlier one)."""


class Frozen(RuntimeError):
    """A freeze stops the run before it starts (recorded as a `stop` decision)."""


class NeverOpens(RuntimeError):
    """The window does not open again."""


@dataclass(frozen=True)
class WindowCheck:
    """Open now (`open`, with the window's state as JSON), else when it opens (`opens_at`)."""

    state: dict[str, Any]
    opens_at: datetime | None = None
    reason: str = ""

    @property
    def open(self) -> bool:
        return self.opens_at is None


def check_window(
    services: Services, plan: Plan, ctx: RunContext, batch: int | None, *, resumed: bool
) -> WindowCheck:
    """Before batch `batch` (None: in preflight): re-cut the batches not started when an
    operator adjusted their ratios (not on a resumed wait), refuse a batch the run did not plan,
    then read the window (freezes included)."""
    if batch is not None:
        if not resumed:
            replan_remaining(services.ledger, plan, ctx, batch, services.recorder)
        planned = [b["index"] for b in planned_batches(services.ledger, ctx.run_id)]
        if batch not in planned:
            raise BatchNotPlanned(f"batch {batch} is not in this run's plan (planned: {planned})")
    if plan.window is None or not ctx.respect_window:
        reason = "no window" if plan.window is None else "respect_window is off for this run"
        return WindowCheck({"open": True, "reason": reason})
    state = window_state(plan.window, datetime.now(UTC))
    if state.open or ctx.dry_run:
        return WindowCheck(state.as_dict())
    if batch is None and state.frozen_by:
        stop_for_freeze(services, ctx, state.frozen_by)
    if state.next_open is None:
        raise NeverOpens(f"the window does not open again: {state.reason}")
    if not resumed:
        note_wait(services, ctx, batch, state.next_open, state.reason)
    return WindowCheck(state.as_dict(), opens_at=state.next_open, reason=state.reason)


def note_wait(
    services: Services, ctx: RunContext, batch: int | None, opens_at: datetime, reason: str
) -> None:
    """Audit that the run waits for its window (`run.window_wait`, once per batch and opening):
    the trail shows when a batch was held back and until when."""
    services.recorder.audit(
        ctx,
        "run.window_wait",
        audit_id=f"{ctx.run_id}:window:{batch}:{opens_at.isoformat()}",
        details={"batch": batch, "opens_at": opens_at.isoformat(), "reason": reason},
    )
    services.recorder.flush()


def stop_for_freeze(services: Services, ctx: RunContext, frozen_by: str) -> None:
    """A freeze stops the run in preflight: the decision, audited; raises `Frozen`."""
    services.ledger.record_decision(
        ctx.run_id,
        batch_index=None,
        kind="stop",
        decision="stop",
        actor="window",
        via="auto",
        detail={"reason": f"frozen by {frozen_by}"},
    )
    services.recorder.audit(
        ctx,
        "run.stopped.freeze",
        audit_id=f"{ctx.run_id}:freeze",
        details={"freeze": frozen_by},
    )
    services.recorder.flush()
    raise Frozen(f"the window is frozen ({frozen_by}): not starting")
