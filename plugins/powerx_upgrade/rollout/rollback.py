"""The one rollback implementation: the batch rollback group of a plan DAG and the
`plugin_upgrade_rollback` DAG both choose their tenants here, roll them back, verify them and
record the result with these functions (they differ only in how the scope is chosen and which
run record they finish).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast, get_args

from powerx_upgrade.domain.alerts import Alert, rollback_failure_alert
from powerx_upgrade.domain.models import DeploySpec, Plan, RollbackScope, RollbackSpec
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger.records import ControlRecord
from powerx_upgrade.rollout import controls, finalize, late_rollback, metrics, operations
from powerx_upgrade.rollout.alerts import raise_alert
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.late_rollback import LateRollbackContext, RollbackRefused
from powerx_upgrade.rollout.operations import RetryPolicy
from powerx_upgrade.rollout.services import Services
from powerx_upgrade.rollout.verdicts import ALERT, ROLLBACK, should_notify

# -- shared by both DAGs -----------------------------------------------------------------------

SCOPES: tuple[str, ...] = get_args(RollbackScope)


def applied_scope(requested: str | None, policy: RollbackSpec | None) -> tuple[RollbackScope, str]:
    """The scope a rollback applies, with where it comes from: the one asked for (API, CLI,
    the rollback DAG's form), else the policy's (`rollback.scope`), else `all_upgraded` (a plan
    no longer in the config). The same rule for running and finished runs."""
    if requested:
        if requested not in SCOPES:
            raise RollbackRefused(f"scope: {requested!r} is not one of {', '.join(SCOPES)}")
        return cast(RollbackScope, requested), "requested"
    if policy is not None:
        return policy.scope, "policy"
    return "all_upgraded", "default"


def requested_scope(ledger: Ledger, run_id: str) -> str | None:
    """The scope the run's latest rollback request asked for (its control's payload), if any."""
    asked = [
        c
        for c in ledger.controls(run_id, kind="rollback")
        if c.payload.get("scope") and c.outcome in (None, "applied")
    ]
    return str(asked[-1].payload["scope"]) if asked else None


def shards(count: int, size: int, most: int | None = None) -> list[dict[str, Any]]:
    """The mapped rollback tasks' kwargs for `count` targets, `size` tenants each: references
    (`start`, `end`, and `of` = how many targets the list had) into the target list the ledger
    keeps for the rollback, never the tenants themselves. Like the deploy shards, each is a
    fixed size however large the fleet (issue 16): XCom does not grow with the tenants.

    `most`: at most that many shards (larger ones when `count / size` is more). Shards beyond
    what the executor runs at once add a task process each and no concurrency (a shard's
    concurrency is per task), so the orchestration passes the executor's slots here."""
    if most is not None and most > 0 and count > size * most:
        size = -(-count // most)  # ceil: `most` shards, the last one possibly shorter
    return [
        {"shard": {"start": i, "end": min(count, i + size), "of": count}}
        for i in range(0, count, size)
    ]


class StaleShard(RuntimeError):
    """A shard's reference no longer fits the stored targets (another scope replaced them)."""


def shard_targets(targets: list[dict[str, Any]], shard: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets a shard reference points at; `StaleShard` when the stored list is not the
    one the shard was cut from (rolling back someone else's slice would be worse than failing)."""
    if len(targets) != shard["of"]:
        raise StaleShard(
            f"shard {shard['start']}-{shard['end']} was cut from {shard['of']} target(s), "
            f"the ledger now holds {len(targets)}: the rollback scope ran again; retry the scope"
        )
    return targets[shard["start"] : shard["end"]]


def execute(
    services: Services,
    ctx: RunContext,
    targets: list[dict[str, Any]],
    *,
    rollback: RollbackSpec,
    deploy: DeploySpec,
) -> dict[str, Any]:
    """Roll `targets` back, concurrently and idempotently (one mapped task's shard)."""
    summary = operations.rollback_shard(
        services.platform,
        services.ledger,
        services.recorder,
        ctx,
        targets=targets,
        concurrency=rollback.concurrency,
        retry=RetryPolicy(retries=deploy.retries),
    )
    return summary.as_dict()


def verify(
    services: Services, ctx: RunContext, targets: list[dict[str, Any]], started: datetime
) -> dict[str, Any]:
    """Read every target back from the platform; with the rollback's duration since `started`."""
    upgrades = {a.tenant_id: a for a in services.ledger.actions(ctx.run_id, kind="upgrade")}
    verification = operations.verify_rollback(services.platform, ctx, targets, upgrades)
    verification["duration_ms"] = int((datetime.now(UTC) - started).total_seconds() * 1000)
    return verification


def alert_failures(
    services: Services,
    plan: Plan | None,
    ctx: RunContext,
    failed: list[str],
    broken: list[dict[str, Any]],
    duration_ms: int | None = None,
) -> Alert | None:
    """Raise `rollback_failure` when a tenant could not be rolled back or read back wrong, or
    the rollback took longer than the policy's `rollback.deadline`."""
    deadline = (plan.policy.rollback if plan else RollbackSpec()).deadline
    duration = None if duration_ms is None else timedelta(milliseconds=duration_ms)
    alert = rollback_failure_alert(failed, broken, duration=duration, deadline=deadline)
    if alert is not None:
        raise_alert(
            services.recorder,
            ctx,
            alert,
            channels=plan.notify.channels if plan else [],
            count=services.metrics.count,
            notify=should_notify(plan, ALERT),
        )
    return alert


def time_it(services: Services, ctx: RunContext, duration_ms: int) -> None:
    tags = {"plan": ctx.plan_id, "plugin": ctx.plugin}
    services.metrics.timing(metrics.ROLLBACK_DURATION, duration_ms, tags)


# -- the batch rollback group of a plan DAG ----------------------------------------------------


def start_batch_rollback(
    services: Services, plan: Plan, ctx: RunContext, *, most_shards: int | None = None
) -> list[dict[str, Any]]:
    """The run's rollback targets (the last rollback decision's batch and breaching tenants)
    under the scope an operator asked for, else the policy's, in the run record
    (`rolling_back`), cut into shards (at most `most_shards`, see `shards`)."""
    ledger = services.ledger
    chosen = [d for d in ledger.decisions(ctx.run_id) if d.decision == "rollback"]
    last = chosen[-1] if chosen else None
    failing = last.batch_index if last else None
    breaching = list((last.detail or {}).get("breaching", [])) if last else []
    scope, source = applied_scope(requested_scope(ledger, ctx.run_id), plan.policy.rollback)
    targets = finalize.rollback_candidates(
        services.platform, ledger, ctx, scope, failing, breaching
    )
    run = ledger.get_run(ctx.run_id)
    detail = dict(run.detail or {}) if run else {}
    detail.update(
        {
            "rollback_started_at": (last.decided_at if last else datetime.now(UTC)).isoformat(),
            "rollback_scope": scope,
            "rollback_scope_source": source,
            "rollback_targets": targets,
        }
    )
    if not targets:
        detail["rollback_verification"] = {
            "verified": [],
            "broken": [],
            "note": "no tenant was on the new version",
        }
    ledger.update_run(ctx.run_id, status="rolling_back", detail=detail)
    return shards(len(targets), plan.policy.deploy.shard_size, most_shards)


def execute_batch_rollback(
    services: Services, plan: Plan, ctx: RunContext, shard: dict[str, Any]
) -> dict[str, Any]:
    """One shard of the run's rollback (its targets read from the run record by reference), at
    the concurrency in force (adjustable)."""
    run = services.ledger.get_run(ctx.run_id)
    stored = list(((run.detail or {}) if run else {}).get("rollback_targets", []))
    targets = shard_targets(stored, shard)
    spec = controls.effective_policy(plan, services.ledger, ctx.run_id).rollback
    return execute(services, ctx, targets, rollback=spec, deploy=plan.policy.deploy)


def verify_batch_rollback(services: Services, plan: Plan, ctx: RunContext) -> dict[str, Any]:
    """Verify the run's rollback targets, keep the verification in the run record, alert on a
    tenant not back, time it."""
    ledger = services.ledger
    run = ledger.get_run(ctx.run_id)
    detail = dict(run.detail or {}) if run else {}
    started = datetime.fromisoformat(
        detail.get("rollback_started_at") or datetime.now(UTC).isoformat()
    )
    verification = verify(services, ctx, detail.get("rollback_targets", []), started)
    detail["rollback_verification"] = verification
    ledger.update_run(ctx.run_id, detail=detail)
    failed = [a.tenant_id for a in ledger.actions(ctx.run_id, kind="rollback", state="failed")]
    alert_failures(services, plan, ctx, failed, verification["broken"], verification["duration_ms"])
    time_it(services, ctx, verification["duration_ms"])
    return {
        "verified": len(verification["verified"]),
        "broken": verification["broken"][:50],
        "duration_ms": verification["duration_ms"],
    }


def announce_batch_rollback(
    services: Services, plan: Plan, ctx: RunContext, result: dict[str, Any]
) -> dict[str, Any]:
    """Audit `run.rolled_back` and notify it."""
    recorder = services.recorder
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


# -- the `plugin_upgrade_rollback` DAG ---------------------------------------------------------


def specs(plan: Plan | None) -> tuple[RollbackSpec, DeploySpec]:
    """The plan's rollback and deploy settings; defaults for a plan no longer in the config."""
    return (plan.policy.rollback, plan.policy.deploy) if plan else (RollbackSpec(), DeploySpec())


def resolve_late(
    services: Services, form: dict[str, Any], *, dag_run_id: str, user: str | None
) -> dict[str, Any]:
    """The run to roll back and who asks, from the DAG's form (refused without a reason)."""
    reason = str(form.get("reason") or "").strip()
    if not reason:
        raise RollbackRefused("reason: say why the run is rolled back (audit and report)")
    ledger = services.ledger
    run = late_rollback.resolve_target_run(
        ledger, run_id=form.get("run_id") or None, plan_id=form.get("plan_id") or None
    )
    request = late_rollback.request_of(ledger, run, form.get("request_id"))
    return {
        "run_id": run.run_id,
        "plan_id": run.plan_id,
        "scope": form.get("scope") or "all_upgraded",
        "reason": reason,
        "request_id": request.id if request else None,
        "actor": (request.actor if request else None) or user or "unknown",
        "via": (request.via if request else None) or "ui",
        "dag_run_id": dag_run_id,
        "requested_at": (request.requested_at if request else datetime.now(UTC)).isoformat(),
    }


def late_context(services: Services, data: dict[str, Any]) -> LateRollbackContext:
    run = services.ledger.get_run(data["run_id"])
    if run is None:
        raise RollbackRefused(f"run {data['run_id']!r} is not in the ledger")
    return late_rollback.context_for(
        run, by_run=data["dag_run_id"], actor=data["actor"], reason=data["reason"]
    )


def run_active(services: Services, run_id: str) -> str | None:
    """The run's status while it is still active (the rollback waits), else None."""
    run = services.ledger.get_run(run_id)
    return run.status if run is not None and run.active else None


def _request(services: Services, ctx: RunContext, data: dict[str, Any]) -> ControlRecord | None:
    run = services.ledger.get_run(ctx.run_id)
    if run is None:
        return None
    return late_rollback.request_of(services.ledger, run, data["request_id"])


def start_late_rollback(
    services: Services, ctx: LateRollbackContext, data: dict[str, Any]
) -> dict[str, Any]:
    """The finished run's tenants to roll back under the asked scope (and those another active
    run holds), kept in the run's detail (`LATE_CHOSEN`) for the later steps and audited as
    `run.rollback.started`. Returns their counts only."""
    ledger = services.ledger
    run = ledger.get_run(ctx.run_id)
    if run is None:
        raise RollbackRefused(f"run {ctx.run_id!r} is not in the ledger")
    batch, breaching = late_rollback.failing_batch(ledger, run, _request(services, ctx, data))
    targets, held = late_rollback.late_targets(
        services.platform, ledger, ctx, data["scope"], batch, breaching
    )
    keep_chosen(ledger, ctx, {"scope": data["scope"], "targets": targets, "held": held})
    services.recorder.audit(
        ctx,
        "run.rollback.started",
        tenants=[t["tenant"] for t in targets],
        audit_id=f"{ctx.run_id}:late-rollback-start:{ctx.by_run}",
        details={"scope": data["scope"], "held": held, "batch": batch, "by": ctx.by_run},
    )
    services.recorder.flush()
    return {"count": len(targets), "held": len(held)}


LATE_CHOSEN = "late_rollback_chosen"
"""Key of the rolled-back run's detail where a late rollback keeps its targets, the tenants left
alone (held) and, once verified, the verification, for its later steps to read by reference:
`{"by_run", "scope", "targets", "held", "verification"}`. The next late rollback replaces it."""


def keep_chosen(ledger: Ledger, ctx: LateRollbackContext, chosen: dict[str, Any]) -> None:
    ledger.merge_run_detail(ctx.run_id, {LATE_CHOSEN: {"by_run": ctx.by_run, **chosen}})


def late_chosen(services: Services, ctx: LateRollbackContext) -> dict[str, Any] | None:
    """What this rollback DAG run chose (`start_late_rollback`), from the ledger; None when its
    scope step has not run (or a later rollback replaced it)."""
    run = services.ledger.get_run(ctx.run_id)
    chosen = ((run.detail or {}) if run else {}).get(LATE_CHOSEN)
    if not isinstance(chosen, dict) or chosen.get("by_run") != ctx.by_run:
        return None
    return chosen


def execute_late(
    services: Services, plan: Plan | None, ctx: LateRollbackContext, shard: dict[str, Any]
) -> dict[str, Any]:
    """One shard of a finished run's rollback: its targets by reference from the ledger."""
    chosen = late_chosen(services, ctx)
    if chosen is None:
        raise StaleShard(
            f"no targets of rollback {ctx.by_run} in the ledger: its scope did not run"
        )
    spec, deploy = specs(plan)
    targets = shard_targets(chosen["targets"], shard)
    return execute(services, ctx, targets, rollback=spec, deploy=deploy)


def verify_late(services: Services, ctx: LateRollbackContext, started: datetime) -> dict[str, Any]:
    """Verify the chosen targets, keep the verification with them in the ledger and return its
    counts (a bounded summary: the lists stay in the ledger)."""
    chosen = late_chosen(services, ctx)
    if chosen is None:
        raise StaleShard(
            f"no targets of rollback {ctx.by_run} in the ledger: its scope did not run"
        )
    verification = verify(services, ctx, chosen["targets"], started)
    keep_chosen(services.ledger, ctx, {**chosen, "verification": verification})
    return {
        "verified": len(verification["verified"]),
        "broken": verification["broken"][:50],
        "duration_ms": verification["duration_ms"],
    }


def unverified(chosen: dict[str, Any]) -> dict[str, Any]:
    """The verification of a rollback whose verify step left nothing: no tenant verified."""
    broken = [{"tenant": t["tenant"], "problems": ["not verified"]} for t in chosen["targets"]]
    return {"verified": [], "broken": broken}


def record_late(
    services: Services,
    plan: Plan | None,
    ctx: LateRollbackContext,
    data: dict[str, Any],
    chosen: dict[str, Any],
    verification: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """The rollback under the rolled-back run (decision, audit, outcome), its alert, duration
    metric and notification. Returns the summary and whether every tenant came back."""
    ledger = services.ledger
    run = late_rollback.record_late_rollback(
        ledger,
        ctx,
        via=data["via"],
        request=_request(services, ctx, data),
        scope=data["scope"],
        targets=chosen["targets"],
        held=chosen["held"],
        verification=verification,
        started_at=datetime.fromisoformat(data["requested_at"]),
    )
    failed = [
        a.tenant_id
        for a in ledger.actions(ctx.run_id, kind="rollback", state="failed")
        if f"@{ctx.by_run}:" in a.idempotency_key
    ]
    duration = verification.get("duration_ms")
    alert = alert_failures(services, plan, ctx, failed, verification.get("broken", []), duration)
    if duration is not None and chosen["targets"]:
        time_it(services, ctx, duration)
    if should_notify(plan, ROLLBACK):
        services.recorder.notify(
            ctx,
            "plugin.version.gray.rollback",
            key=f"late-rollback:{ctx.by_run}",
            severity="critical" if alert else "warning",
            title=f"{ctx.plan_id}: run {ctx.run_id} rolled back ({run.outcome}): "
            f"{len(verification.get('verified', []))} tenant(s) in {(duration or 0) / 1000:.1f}s",
            message=f"By {ctx.triggered_by} via {data['via']}. Reason: {ctx.reason}",
            channels=plan.notify.channels if plan else [],
        )
    services.recorder.flush()
    summary = {
        "run_id": ctx.run_id,
        "outcome": run.outcome,
        "tenants": len(chosen["targets"]),
        "verified": len(verification.get("verified", [])),
        "broken": verification.get("broken", [])[:50],
        "held": dict(list(chosen["held"].items())[:50]),  # all of them in the run's detail
        "held_count": len(chosen["held"]),
        "duration_ms": duration,
    }
    return summary, alert is None
