"""Run controls as the rollout reads them: operators' requests (rollback, pause, takeover,
adjustments, answers given through the API) from the ledger, turned into what a step does.

Airflow-free: the gate sensor and trigger, decide, the batch start, deploy and the HITL steps
call these with the run's ledger. Who settles what (docs/control-plane.md, "Run controls"):
- rollback / pause: the batch's gate, when it ends on the request (`rollback_requested` /
  `pause_requested`); a finished run's rollback: the `plugin_upgrade_rollback` DAG;
- takeover / release: the next decide, from which on it is in force;
- adjust: the first step that reads it (the gate's next poke, or the next batch's start);
- answer: the HITL task it answers.
Requests the run can no longer honour are settled `expired` when it ends (a rollback request
stays pending: the rollback DAG may still serve it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from powerx_upgrade.domain.adjust import (
    Adjustment,
    adjusted_bake,
    adjusted_gate,
    apply_adjustments,
    describe_adjustment,
    parse_adjustment,
    recut_remaining,
)
from powerx_upgrade.domain.decide import Action, Decision
from powerx_upgrade.domain.gate import GateEvaluation
from powerx_upgrade.domain.measurement import Phase
from powerx_upgrade.domain.models import GateSpec, Plan, Policy
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger.records import ControlKind, ControlOutcome, ControlRecord
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.preflight import planned_batches
from powerx_upgrade.rollout.record import Recorder, audit_entry

log = logging.getLogger(__name__)

GATE_REQUESTS = {
    ControlKind.ROLLBACK: Phase.ROLLBACK_REQUESTED,
    ControlKind.PAUSE: Phase.PAUSE_REQUESTED,
}


def _first(ledger: Ledger, run_id: str, kind: str) -> ControlRecord | None:
    pending = ledger.controls(run_id, kind=kind, pending=True)
    return pending[0] if pending else None


def pending_rollback(ledger: Ledger, run_id: str) -> ControlRecord | None:
    """The oldest rollback request of the run not settled yet."""
    return _first(ledger, run_id, ControlKind.ROLLBACK)


def pending_pause(ledger: Ledger, run_id: str) -> ControlRecord | None:
    """The oldest pause request of the run not settled yet."""
    return _first(ledger, run_id, ControlKind.PAUSE)


def gate_request(ledger: Ledger, run_id: str) -> ControlRecord | None:
    """What ends a gate at once: a pending rollback (it outranks a pause), else a pause."""
    return pending_rollback(ledger, run_id) or pending_pause(ledger, run_id)


def who(control: ControlRecord) -> str:
    """`alice via api` for messages and reasons."""
    return f"{control.actor or 'an operator'} via {control.via or 'ui'}"


def requested_evaluation(control: ControlRecord, batch: int) -> GateEvaluation:
    """The gate's verdict when an operator's request ends it (decide routes on the phase)."""
    phase = GATE_REQUESTS[ControlKind(control.kind)]
    reason = f"{control.kind} requested by {who(control)} (control {control.id}) at batch {batch}"
    note = (control.payload or {}).get("reason")
    return GateEvaluation(phase, f"{reason}: {note}" if note else reason, (), 0, False)


def takeover_active(ledger: Ledger, run_id: str) -> ControlRecord | None:
    """The takeover in force: the latest takeover/release request, when it is a takeover."""
    toggles = [
        c
        for c in ledger.controls(run_id)
        if c.kind in (ControlKind.TAKEOVER, ControlKind.RELEASE)
        and c.outcome != ControlOutcome.REFUSED
    ]
    latest = toggles[-1] if toggles else None
    return latest if latest is not None and latest.kind == ControlKind.TAKEOVER else None


# -- adjustments --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InForce:
    """The run's adjustments in force (requested and not refused), oldest first."""

    controls: tuple[ControlRecord, ...] = ()
    adjustments: tuple[Adjustment, ...] = ()
    invalid: tuple[tuple[ControlRecord, str], ...] = field(default=())

    @property
    def pending(self) -> list[ControlRecord]:
        return [c for c in self.controls if c.pending]


def adjustment_payload(control: ControlRecord) -> Any:
    """An adjust request's Adjustment: its payload (`Adjustment.model_dump(mode="json")`), or
    the payload's `adjust` key; a `reason` beside it is the operator's, not the adjustment's."""
    payload = dict(control.payload or {})
    if "adjust" in payload:
        return payload["adjust"]
    payload.pop("reason", None)
    return payload


def adjustments_in_force(ledger: Ledger, run_id: str) -> InForce:
    """Every adjust request of the run not refused, parsed; a payload that no longer parses
    (written by hand into the ledger, or by an older version) is left out and reported."""
    controls: list[ControlRecord] = []
    adjustments: list[Adjustment] = []
    invalid: list[tuple[ControlRecord, str]] = []
    for control in ledger.controls(run_id, kind=ControlKind.ADJUST):
        if control.outcome == ControlOutcome.REFUSED:
            continue
        parsed, problems = parse_adjustment(adjustment_payload(control))
        if parsed is None:
            invalid.append((control, "; ".join(str(p) for p in problems)))
            continue
        controls.append(control)
        adjustments.append(parsed)
    return InForce(tuple(controls), tuple(adjustments), tuple(invalid))


def effective_policy(plan: Plan, ledger: Ledger, run_id: str) -> Policy:
    """The plan's policy with the run's adjustments applied in order."""
    found = adjustments_in_force(ledger, run_id)
    return apply_adjustments(plan.policy, found.adjustments) if found.adjustments else plan.policy


@dataclass(frozen=True)
class GateControls:
    """What the gate reads before each poke."""

    request: ControlRecord | None
    gate: GateSpec
    bake_seconds: float
    applied: tuple[int, ...] = ()
    """Adjust requests this read put in force (the sensor settles them)."""


def gate_controls(
    ledger: Ledger, run_id: str, gate: GateSpec, watch: dict[str, Any]
) -> GateControls:
    """The pending request that ends the gate, else the gate and bake to poke with next."""
    request = gate_request(ledger, run_id)
    found = adjustments_in_force(ledger, run_id)
    bake = adjusted_bake(found.adjustments, int(watch.get("batch") or 0), watch.get("merged") or ())
    return GateControls(
        request=request,
        gate=adjusted_gate(gate, found.adjustments),
        bake_seconds=bake.total_seconds() if bake is not None else watch["bake_seconds"],
        applied=tuple(c.id for c in found.pending),
    )


def settle_adjustments(
    ledger: Ledger,
    ctx: RunContext,
    ids: Iterable[int],
    *,
    where: str,
    applied_at: datetime | None = None,
) -> list[int]:
    """Settle adjust requests as applied (first reader wins), each with an audit record."""
    settled = []
    for control_id in ids:
        control = ledger.get_control(control_id)
        if control is None or not control.pending:
            continue
        parsed, _ = parse_adjustment(adjustment_payload(control))
        what = describe_adjustment(parsed) if parsed else "?"
        entry = audit_entry(
            ctx,
            "control.adjust.applied",
            actor=control.actor,
            reason=control.payload.get("reason"),
            audit_id=f"{ctx.run_id}:control:{control_id}:applied",
            details={"control": control_id, "via": control.via, "change": what, "from": where},
        )
        note = f"in force from {where}: {what}"
        if ledger.settle_control(
            control_id, outcome="applied", note=note, applied_at=applied_at, audit=entry
        ):
            settled.append(control_id)
    return settled


def refuse_invalid(ledger: Ledger, ctx: RunContext, found: InForce) -> None:
    for control, why in found.invalid:
        ledger.settle_control(
            control.id,
            outcome="refused",
            note=f"the adjustment does not parse: {why}",
            audit=audit_entry(
                ctx,
                "control.adjust.refused",
                actor=control.actor,
                audit_id=f"{ctx.run_id}:control:{control.id}:refused",
                details={"control": control.id, "problems": why},
            ),
        )


def replan_remaining(
    ledger: Ledger, plan: Plan, ctx: RunContext, batch: int, recorder: Recorder | None = None
) -> dict[str, Any] | None:
    """At the start of batch `batch`: re-cut the batches not started under the adjusted policy
    and keep them in the ledger (audited `run.replanned`); settle the adjustments this puts in
    force. None when nothing changes."""
    found = adjustments_in_force(ledger, ctx.run_id)
    refuse_invalid(ledger, ctx, found)
    if not found.adjustments:
        return None
    policy = apply_adjustments(plan.policy, found.adjustments)
    planned = planned_batches(ledger, ctx.run_id)
    recut = recut_remaining(planned, policy, batch, canary=len(plan.tenants.canary))
    settle_adjustments(ledger, ctx, [c.id for c in found.pending], where=f"batch {batch}")
    if recut == planned:
        return None
    ledger.update_run(ctx.run_id, batches=recut)
    change = {
        "from_batch": batch,
        "before": [_outline(b) for b in planned if b["index"] >= batch],
        "after": [_outline(b) for b in recut if b["index"] >= batch],
    }
    if recorder is not None:
        recorder.audit(
            ctx,
            "run.replanned",
            audit_id=f"{ctx.run_id}:replanned:{batch}:{len(found.controls)}",
            details=change,
        )
    log.info("batches from %s re-cut: %s -> %s", batch, change["before"], change["after"])
    return change


def _outline(batch: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": batch["index"],
        "size": len(batch["tenants"]),
        "cumulative_count": batch["cumulative_count"],
        "bake_seconds": batch["bake_seconds"],
    }


# -- requests the gate ends on, takeover, answers -------------------------------------------------


def settle_request(
    ledger: Ledger, ctx: RunContext, control_id: int, *, batch: int, phase: str
) -> bool:
    """The gate ended on the request: settle it applied, audited."""
    control = ledger.get_control(control_id)
    if control is None:
        return False
    entry = audit_entry(
        ctx,
        f"control.{control.kind}.applied",
        actor=control.actor,
        reason=control.payload.get("reason"),
        audit_id=f"{ctx.run_id}:control:{control_id}:applied",
        details={
            "control": control_id,
            "via": control.via,
            "approval": control.approval_jti,
            "batch": batch,
            "verdict": phase,
        },
    )
    return ledger.settle_control(
        control_id,
        outcome="applied",
        note=f"the gate of batch {batch} ended {phase}",
        audit=entry,
    )


def settle_toggles(ledger: Ledger, ctx: RunContext, batch: int) -> None:
    """Takeover and release requests are in force from this decision on."""
    for kind in (ControlKind.TAKEOVER, ControlKind.RELEASE):
        for control in ledger.controls(ctx.run_id, kind=kind, pending=True):
            ledger.settle_control(
                control.id,
                outcome="applied",
                note=f"in force from the decision of batch {batch}",
                audit=audit_entry(
                    ctx,
                    f"control.{kind}.applied",
                    actor=control.actor,
                    audit_id=f"{ctx.run_id}:control:{control.id}:applied",
                    details={"control": control.id, "via": control.via, "batch": batch},
                ),
            )


@dataclass(frozen=True)
class Decided:
    """A batch's decision under the run's controls, and whose it is."""

    decision: Decision
    actor: str
    via: str
    detail: dict[str, Any] = field(default_factory=dict)


def decide_under_controls(
    ledger: Ledger, ctx: RunContext, decision: Decision, verdict: dict[str, Any], batch: int
) -> Decided:
    """The gate's decision, as the run's controls have it: a verdict that ended on an
    operator's request is that operator's decision; while a takeover is in force a promotion
    becomes a pause ("manual takeover by X"), so that every further batch waits for a human.
    Pending takeover/release requests are settled here: in force from this decision on."""
    settle_toggles(ledger, ctx, batch)
    asked = verdict.get("control")
    control = ledger.get_control(asked) if asked is not None else None
    if control is not None:
        detail = {"control": control.id, "approval": control.approval_jti}
        return Decided(decision, control.actor or "operator", control.via or "ui", detail)
    if decision.action is Action.PROMOTE:
        taken = takeover_active(ledger, ctx.run_id)
        if taken is not None:
            by = taken.actor or "an operator"
            return Decided(
                Decision(Action.PAUSE, f"manual takeover by {by}"),
                by,
                taken.via or "ui",
                {"takeover": taken.id, "approval": taken.approval_jti, "gate": decision.reason},
            )
    return Decided(decision, "policy", "auto")


def answer_for(ledger: Ledger, run_id: str, task_id: str) -> ControlRecord | None:
    """The pending `answer` request for a HITL task (its full task id, `batch_2.pause`)."""
    answers = [
        c
        for c in ledger.controls(run_id, kind=ControlKind.ANSWER, pending=True)
        if c.payload.get("task_id") == task_id
    ]
    return answers[-1] if answers else None


def settle_at_end(ledger: Ledger, ctx: RunContext, outcome: str) -> list[int]:
    """The run ended: settle every request it can no longer honour (`expired`), except rollback
    requests when the run did not roll back (the rollback DAG serves those)."""
    expired = []
    for control in ledger.controls(ctx.run_id, pending=True):
        if control.kind == ControlKind.ROLLBACK:
            if outcome not in ("rolled_back", "rollback_failed"):
                continue
            note, result = f"the run rolled back ({outcome})", "applied"
        else:
            note, result = f"the run ended ({outcome}) before it applied", "expired"
        if ledger.settle_control(
            control.id,
            outcome=result,
            note=note,
            applied_at=datetime.now(UTC),
            audit=audit_entry(
                ctx,
                f"control.{control.kind}.{result}",
                actor=control.actor,
                audit_id=f"{ctx.run_id}:control:{control.id}:{result}",
                details={"control": control.id, "via": control.via, "outcome": outcome},
            ),
        ):
            expired.append(control.id)
    return expired
