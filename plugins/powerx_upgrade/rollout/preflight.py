"""Preflight steps: record the run, verify its artifact, plan the batches from the platform's
tenants, baseline."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from powerx_upgrade.domain.alerts import artifact_unverified_alert
from powerx_upgrade.domain.measurement import TenantStats, metric_value
from powerx_upgrade.domain.models import Plan, Policy
from powerx_upgrade.domain.planner import Tenant, plan_batches
from powerx_upgrade.domain.versions import downgrades
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.reporting.model import LIMITS_KEY, run_limits
from powerx_upgrade.rollout.alerts import Counter, raise_alert
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.security.artifacts import ArtifactRefused, SigningKeyError, verify_artifact

DOWNGRADE_REFUSED = "run.downgrade_refused"
ARTIFACT_VERIFIED = "artifact.verified"
ARTIFACT_REFUSED = "artifact.refused"
LABELS_KEY = "tenant_labels"
"""run.detail key: {tenant: {label: value}} of the run's selected tenants, kept at planning for
the verdict's segment concentration (rollout/verdicts.py)."""


def start_run(
    ledger: Ledger,
    ctx: RunContext,
    conf: dict[str, Any] | None = None,
    policy: Policy | None = None,
) -> None:
    """Record the run's start with the policy's limits in its detail (`reporting.run_limits`):
    every report of the run, also one built outside the DAG (the control plane, the UI), holds
    the run against the floors and deadline it ran under."""
    limits = run_limits(policy) if policy is not None else None
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
        detail={LIMITS_KEY: limits} if limits else None,
    )


def verify_run_artifact(
    recorder: Recorder,
    ctx: RunContext,
    load_keys: Callable[[], Mapping[str, Any]],
    *,
    channels: Iterable[str] = (),
    count: Counter | None = None,
    notify: bool = True,
) -> dict[str, Any]:
    """Check the Ed25519 signature over (plugin, target version, sha256) of the run's artifact
    against the trusted keys, before any tenant is touched.

    Verified: audited `artifact.verified` with the key id. Refused (unsigned, malformed, signed
    by no trusted key or for another plugin/version/sha256, no usable keys): audited
    `artifact.refused`, a critical `artifact_unverified` alert, then ArtifactRefused is raised.
    A dry run without an artifact has nothing to verify and says so.
    """
    artifact = ctx.artifact
    if not artifact.get("sha256") and ctx.dry_run:
        return {"verified": False, "skipped": "dry run without an artifact: nothing to verify"}
    keys_error: SigningKeyError | None = None
    try:
        keys = load_keys()
    except SigningKeyError as exc:
        keys, keys_error = {}, exc
    try:
        key_id = verify_artifact(
            artifact.get("signature"),
            ctx.plugin,
            ctx.target_version,
            str(artifact.get("sha256") or ""),
            keys,
        )
    except ArtifactRefused as refused:
        if refused.code == "no_keys" and keys_error is not None:
            refused = ArtifactRefused(
                "no_keys",
                f"artifact {ctx.plugin} {ctx.target_version} (sha256 {artifact.get('sha256')}) "
                f"cannot be verified: the trusted signing keys cannot be loaded: {keys_error}",
                plugin=ctx.plugin,
                version=ctx.target_version,
                sha256=artifact.get("sha256"),
            )
        _refuse(recorder, ctx, refused, channels=channels, count=count, notify=notify)
        raise refused from None
    facts = {
        "key_id": key_id,
        "plugin": ctx.plugin,
        "version": ctx.target_version,
        "sha256": str(artifact["sha256"]).lower(),
        "uri": artifact.get("uri"),
    }
    recorder.audit(
        ctx, ARTIFACT_VERIFIED, audit_id=f"{ctx.run_id}:{ARTIFACT_VERIFIED}", details=facts
    )
    recorder.flush()
    return {"verified": True, **facts}


def _refuse(
    recorder: Recorder,
    ctx: RunContext,
    refused: ArtifactRefused,
    *,
    channels: Iterable[str],
    count: Counter | None,
    notify: bool = True,
) -> None:
    details = {**refused.as_dict(), "uri": ctx.artifact.get("uri")}
    recorder.audit(
        ctx, ARTIFACT_REFUSED, audit_id=f"{ctx.run_id}:{ARTIFACT_REFUSED}", details=details
    )
    raise_alert(
        recorder,
        ctx,
        artifact_unverified_alert(details),
        channels=list(channels),
        count=count,
        notify=notify,
    )


PREFLIGHT_FAILED = "run.preflight_failed"
"""Audit event of a run that could not begin (before any tenant was touched)."""


def record_begin_failure(
    recorder: Recorder, ctx: RunContext, step: str, exc: BaseException
) -> None:
    """Preflight could not begin the run (monitoring refused the subscription or the baseline
    query, the announcement failed): the reason goes into the run record (`preflight_failed`,
    which the run's outcome and report name) and the audit trail, before the task fails. No
    batch starts after it, so no tenant was touched; the gates do not judge (docs/rollout.md)."""
    error = f"{type(exc).__name__}: {exc}"[:1000]
    recorder.ledger.merge_run_detail(
        ctx.run_id, {"preflight_failed": {"step": step, "error": error}}
    )
    recorder.audit(
        ctx,
        PREFLIGHT_FAILED,
        details={"step": step, "error": error},
        audit_id=f"{ctx.run_id}:{PREFLIGHT_FAILED}",
    )
    recorder.flush()


def clear_begin_failure(ledger: Ledger, run_id: str) -> None:
    """Begin succeeded (a person cleared the failed task, or it was retried): forget an earlier
    attempt's failure, or every gate would skip its batch and the run promote unjudged."""
    if preflight_failure(ledger, run_id) is not None:
        ledger.merge_run_detail(run_id, {"preflight_failed": None})


def preflight_failure(ledger: Ledger, run_id: str) -> dict[str, Any] | None:
    """`{"step", "error"}` when preflight could not begin the run, else None."""
    run = ledger.get_run(run_id)
    failed = (run.detail or {}).get("preflight_failed") if run is not None else None
    return dict(failed) if isinstance(failed, dict) else None


def artifact_refusal(ledger: Ledger, run_id: str) -> dict[str, Any] | None:
    """The details of the run's `artifact.refused` audit record, if preflight refused it."""
    for record in ledger.audit_records(run_id):
        if record.event == ARTIFACT_REFUSED:
            return dict(record.payload.get("details") or {})
    return None


def tenants_of(platform_tenants: list[dict[str, Any]]) -> list[Tenant]:
    return [
        Tenant(str(t["id"]), {str(k): str(v) for k, v in (t.get("labels") or {}).items()})
        for t in platform_tenants
    ]


class DowngradeRefused(Exception):
    """Preflight refused a run that would move tenants to an older version (named)."""


def plan_run(
    platform: Any,
    ledger: Ledger,
    plan: Plan,
    ctx: RunContext,
    recorder: Recorder | None = None,
) -> dict[str, Any]:
    """Fetch the plugin's tenants, plan the batches, keep them in the ledger; a summary back.
    A run that would downgrade a selected tenant is refused (audited, DowngradeRefused) before
    its batches are kept, unless the plan or the run's conf says `allow_downgrade`."""
    fleet = platform.list_tenants(ctx.plugin)
    tenants = tenants_of(fleet)
    batch_plan = plan_batches(plan, tenants)
    versions = {str(t["id"]): t.get("version") for t in fleet}
    found = downgrades(ctx.target_version, versions, batch_plan.selected)
    if found.newer and not ctx.allow_downgrade:
        message = found.message(ctx.target_version)
        if recorder is not None:
            recorder.audit(
                ctx,
                DOWNGRADE_REFUSED,
                tenants=[t for t, _ in found.newer],
                audit_id=f"{ctx.run_id}:{DOWNGRADE_REFUSED}",
                details={"target_version": ctx.target_version, "newer": dict(found.newer)},
            )
            recorder.flush()
        raise DowngradeRefused(message)
    batches = [b.as_dict() for b in batch_plan.batches]
    known = ledger.get_run(ctx.run_id)
    ledger.update_run(
        ctx.run_id,
        batches=batches,
        detail={
            **((known.detail or {}) if known else {}),
            "notes": list(batch_plan.notes),
            "fleet": len(fleet),
            "versions_before": {t: versions.get(t) for t in batch_plan.selected},
            "downgrades": dict(found.newer),
            "versions_not_compared": dict(found.unparsed),
            LABELS_KEY: _labels_of(tenants, batch_plan.selected),
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


def _labels_of(tenants: list[Tenant], selected: Iterable[str]) -> dict[str, dict[str, str]]:
    wanted = set(selected)
    return {t.id: dict(t.labels) for t in tenants if t.id in wanted and t.labels}


def planned_batches(ledger: Ledger, run_id: str) -> list[dict[str, Any]]:
    run = ledger.get_run(run_id)
    return list(run.batches or []) if run else []


def selected_tenants(ledger: Ledger, run_id: str) -> list[str]:
    return [t for b in planned_batches(ledger, run_id) for t in b["tenants"]]


def take_baseline(
    monitoring: Any, ledger: Ledger, plan: Plan, ctx: RunContext, now: datetime | None = None
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
