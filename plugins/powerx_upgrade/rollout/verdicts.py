"""A batch's verdict in words for the ledger, the UI and notifications, with the label segment
a failure concentrates in; and which run events notify (`notify.on`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from powerx_upgrade.domain.measurement import TenantStats, metric_value
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.verdicts import (
    Segment,
    breaching_sentence,
    concentration,
    describe,
    failing_check,
    shared_labels,
)
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.preflight import LABELS_KEY, planned_batches

RUN_START, BATCH_PROMOTED, PAUSED = "run_start", "batch_promoted", "paused"
ROLLBACK, RUN_END, ALERT = "rollback", "run_end", "alert"
DEFAULT_ON = (RUN_START, PAUSED, ROLLBACK, RUN_END, ALERT)
"""NotifySpec's default, for a run whose plan is gone (the rollback DAG of an old run)."""


def should_notify(plan: Plan | None, event: str) -> bool:
    """Does the plan's `notify.on` list this event? Audit records never ask: they are always
    written. A batch waiting for approval notifies as `paused` (both wait for a person)."""
    return event in (plan.notify.on if plan is not None else DEFAULT_ON)


def tenant_labels(ledger: Ledger, run_id: str) -> dict[str, dict[str, str]]:
    """The labels preflight kept for the run's tenants ({} for runs planned before it did)."""
    run = ledger.get_run(run_id)
    return dict((run.detail or {}).get(LABELS_KEY) or {}) if run else {}


def previous_verdict(ledger: Ledger, run_id: str, batch: int) -> str | None:
    """The verdict in words of the batch before `batch` (for the next batch's approval)."""
    finals = [g for g in ledger.gate_evaluations(run_id, batch - 1, final_only=True)]
    if not finals:
        return None
    return finals[-1].summary or f"{finals[-1].phase}: {finals[-1].reason}"


def describe_verdict(
    ledger: Ledger,
    plan: Plan,
    ctx: RunContext,
    batch: int,
    evaluation: Mapping[str, Any],
    state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`{"summary": sentence, "segment": {...} | None}` for a final gate evaluation.

    The segment is computed from the evaluation's `per_tenant` stats (the batch's and every
    upgraded tenant's, at the final poke), else the gate state's, else the per-tenant
    measurements of the failing check; with the labels preflight kept in the ledger.
    """
    planned = next((b for b in planned_batches(ledger, ctx.run_id) if b["index"] == batch), {})
    checks = plan.policy.gate.checks
    baselines = {i: c.baseline for i, c in enumerate(checks) if c.limit.relative}
    segment = None
    if evaluation.get("phase") == "fail":
        segment = _segment(ledger, plan, ctx, evaluation, state or {})
    summary = describe(evaluation, batch, planned.get("name"), segment, baselines)
    named = _breaching(ledger, ctx, evaluation) if segment is None else ""
    if named:
        summary += f"; {named}"
    return {"summary": summary, "segment": segment.as_dict() if segment else None}


def _breaching(ledger: Ledger, ctx: RunContext, evaluation: Mapping[str, Any]) -> str:
    """Without a concentration (too few tenants to pool), the labels the breaching tenants of a
    failed verdict share: a representative canary's one bronze tenant still names its tier."""
    if evaluation.get("phase") != "fail":
        return ""
    tenants = sorted(
        {
            str(m["tenant"])
            for m in evaluation.get("measurements") or []
            if m.get("phase") == "fail" and m.get("tenant") and int(m.get("check") or 0) >= 0
        }
    )
    if not tenants:
        return ""
    return breaching_sentence(tenants, shared_labels(tenants, tenant_labels(ledger, ctx.run_id)))


def _segment(
    ledger: Ledger,
    plan: Plan,
    ctx: RunContext,
    evaluation: Mapping[str, Any],
    state: Mapping[str, Any],
) -> Segment | None:
    failing = failing_check(evaluation)
    if failing is None:
        return None
    labels = tenant_labels(ledger, ctx.run_id)
    stats = _stats(evaluation, state, failing)
    if not labels or not stats:
        return None
    checks = plan.policy.gate.checks
    index = int(failing.get("check") or 0)
    check = checks[index] if 0 <= index < len(checks) else None
    limit: Any = failing.get("threshold")
    if check is not None and check.limit.relative and check.baseline == "pre_upgrade":
        limit = _pre_upgrade_limit(ledger, ctx, check)
    if limit is None:
        return None
    return concentration(
        str(failing["metric"]),
        str(failing.get("op") or "<="),
        limit,
        stats,
        labels,
        min_samples=max(check.min_samples if check else 1, 1),
    )


def _stats(
    evaluation: Mapping[str, Any], state: Mapping[str, Any], failing: Mapping[str, Any]
) -> dict[str, TenantStats]:
    raw = evaluation.get("per_tenant") or state.get("per_tenant")
    if raw:
        return {str(t): TenantStats.from_json(s) for t, s in raw.items()}
    # older evaluations: the failing check's per-tenant measurements (one value per tenant)
    found: dict[str, TenantStats] = {}
    for m in evaluation.get("measurements") or []:
        if m.get("check") != failing.get("check") or not m.get("tenant") or m["value"] is None:
            continue
        samples = int(m.get("samples") or 0)
        if m["metric"] == "error_rate":
            found[m["tenant"]] = TenantStats(samples, round(m["value"] * samples), None, samples)
        else:
            found[m["tenant"]] = TenantStats(samples, 0, float(m["value"]), samples)
    return found


def _pre_upgrade_limit(ledger: Ledger, ctx: RunContext, check: Any) -> Any:
    """A pre_upgrade-relative limit as it applies to a set of tenants: against their pooled
    baseline, as the gate judges a batch. (A control baseline is one number for everyone: the
    failing measurement's own threshold.)"""
    run = ledger.get_run(ctx.run_id)
    raw = (run.baseline if run else None) or {}
    baseline = {t: TenantStats.from_json(s) for t, s in raw.items()}
    if not baseline:
        return None

    def limit(tenants: Sequence[str]) -> float | None:
        base = metric_value(check.metric, [baseline[t] for t in tenants if t in baseline])
        return None if base is None else check.limit.threshold(base)

    return limit
