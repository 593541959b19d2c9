"""Preflight steps: record the run, plan the batches from the platform's tenants, baseline."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from powerx_upgrade.domain.gate import TenantStats, metric_value
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.planner import Tenant, plan_batches
from powerx_upgrade.rollout.context import RunContext


def start_run(ledger: Any, ctx: RunContext, conf: dict[str, Any] | None = None) -> None:
    ledger.start_run(
        ctx.run_id,
        dag_id=ctx.dag_id,
        plan_id=ctx.plan_id,
        plugin=ctx.plugin,
        target_version=ctx.target_version,
        artifact_uri=ctx.artifact.get("uri"),
        artifact_sha256=ctx.artifact.get("sha256"),
        triggered_by=ctx.triggered_by,
        reason=ctx.reason,
        dry_run=ctx.dry_run,
        conf=conf or {},
    )


def tenants_of(platform_tenants: list[dict[str, Any]]) -> list[Tenant]:
    return [
        Tenant(str(t["id"]), {str(k): str(v) for k, v in (t.get("labels") or {}).items()})
        for t in platform_tenants
    ]


def plan_run(platform: Any, ledger: Any, plan: Plan, ctx: RunContext) -> dict[str, Any]:
    """Fetch the plugin's tenants, plan the batches, keep them in the ledger; a summary back."""
    fleet = platform.list_tenants(ctx.plugin)
    batch_plan = plan_batches(plan, tenants_of(fleet))
    versions = {str(t["id"]): t.get("version") for t in fleet}
    batches = [b.as_dict() for b in batch_plan.batches]
    ledger.update_run(
        ctx.run_id,
        batches=batches,
        detail={
            "notes": list(batch_plan.notes),
            "fleet": len(fleet),
            "versions_before": {t: versions.get(t) for t in batch_plan.selected},
        },
    )
    return {
        "selected": len(batch_plan.selected),
        "fleet": len(fleet),
        "already_on_target": sum(
            1 for t in batch_plan.selected if versions.get(t) == ctx.target_version
        ),
        "batches": [{k: v for k, v in b.items() if k != "tenants"} for b in batches],
        "notes": list(batch_plan.notes),
    }


def planned_batches(ledger: Any, run_id: str) -> list[dict[str, Any]]:
    run = ledger.get_run(run_id)
    return list(run.batches or []) if run else []


def selected_tenants(ledger: Any, run_id: str) -> list[str]:
    return [t for b in planned_batches(ledger, run_id) for t in b["tenants"]]


def take_baseline(
    monitoring: Any, ledger: Any, plan: Plan, ctx: RunContext, now: datetime | None = None
) -> dict[str, Any]:
    """Query the selected tenants before anything changes: the pre_upgrade baseline."""
    now = now or datetime.now(UTC)
    gate = plan.policy.gate
    end = now - gate.signal_delay
    start = end - gate.baseline_window
    tenants = selected_tenants(ledger, ctx.run_id)
    answer = monitoring.query(ctx.plugin, tenants, start, end)
    baseline = {t: dict(m) for t, m in (answer.get("tenants") or {}).items()}
    ledger.update_run(ctx.run_id, baseline=baseline)
    stats = [TenantStats.from_json(m) for m in baseline.values()]
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "tenants": len(tenants),
        "with_data": len(baseline),
        "error_rate": metric_value("error_rate", stats),
        "latency_p95_ms": metric_value("latency_p95_ms", stats),
    }
