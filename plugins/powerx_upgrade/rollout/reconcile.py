"""Reconcile the ledger with the platform: where each tenant should be, where it is, and what
the ledger itself leaves unsettled (in-flight actions, stale claims, stuck runs, audit backlog).

Airflow-free: it takes a ledger and the platform's tenant list, and returns findings as data;
`scripts/workflows/version-upgrade-reconcile.py` fetches, prints and exits by them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from powerx_upgrade.ledger import Ledger

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Expected:
    """What the ledger says a tenant runs: the version of its last settled action."""

    tenant: str
    version: str
    run_id: str
    action: str
    at: datetime


@dataclass(frozen=True)
class Finding:
    severity: str
    kind: str
    message: str
    run_id: str | None = None
    tenant: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_versions(ledger: Ledger, plugin: str, runs: Iterable[Any]) -> dict[str, Expected]:
    """Per tenant, the version its most recently finished upgrade or rollback left it on.

    Only settled actions count (`succeeded`, `skipped`); a failed or unfinished action says
    nothing certain about the tenant (see `unsettled_actions`).
    """
    expected: dict[str, Expected] = {}
    for run in runs:
        if run.plugin != plugin or run.dry_run:
            continue
        for action in ledger.actions(run.run_id):
            if action.state not in ("succeeded", "skipped") or action.finished_at is None:
                continue
            known = expected.get(action.tenant_id)
            if known is None or action.finished_at >= known.at:
                expected[action.tenant_id] = Expected(
                    action.tenant_id, action.to_version, run.run_id, action.kind, action.finished_at
                )
    return expected


def version_drift(
    expected: Mapping[str, Expected], fleet: Mapping[str, Mapping[str, Any]]
) -> list[Finding]:
    """Tenants the platform shows on another version than the ledger's last settled action."""
    findings = []
    for tenant, want in sorted(expected.items()):
        current = fleet.get(tenant)
        if current is None:
            findings.append(
                Finding(
                    WARNING,
                    "tenant_gone",
                    f"{tenant}: the ledger's last {want.action} left it on {want.version}, "
                    "but the platform no longer lists it",
                    want.run_id,
                    tenant,
                )
            )
        elif current.get("version") != want.version:
            findings.append(
                Finding(
                    ERROR,
                    "version_drift",
                    f"{tenant}: on {current.get('version')} at the platform, but the ledger's "
                    f"last {want.action} (run {want.run_id}, {want.at.isoformat()}) left it on "
                    f"{want.version}",
                    want.run_id,
                    tenant,
                )
            )
    return findings


def unsettled_actions(
    ledger: Ledger, runs: Iterable[Any], fleet: Mapping[str, Mapping[str, Any]]
) -> list[Finding]:
    """Actions of finished runs that never finished: the tenant's version is not known from
    the ledger, so the platform's answer is quoted for a human to confirm."""
    findings = []
    for run in runs:
        if run.active:
            continue
        for action in ledger.actions(run.run_id, state="started"):
            seen = fleet.get(action.tenant_id) or {}
            findings.append(
                Finding(
                    ERROR,
                    "unsettled_action",
                    f"{action.tenant_id}: the {action.kind} to {action.to_version} of finished "
                    f"run {run.run_id} never finished; the platform shows "
                    f"{seen.get('version', 'no such tenant')} (state {seen.get('state', '-')})",
                    run.run_id,
                    action.tenant_id,
                )
            )
    return findings


def stale_claims(ledger: Ledger, runs: Iterable[Any]) -> list[Finding]:
    """Tenants still claimed by a finished run (they block every other run of the plugin)."""
    findings = []
    for run in runs:
        if run.active:
            continue
        held = ledger.claimed_tenants(run.run_id)
        if held:
            findings.append(
                Finding(
                    WARNING,
                    "stale_claim",
                    f"finished run {run.run_id} still holds {len(held)} tenant(s) "
                    f"({', '.join(held[:10])}{', ...' if len(held) > 10 else ''}); "
                    "--release-stale-claims frees them",
                    run.run_id,
                )
            )
    return findings


def stuck_runs(runs: Iterable[Any], *, now: datetime, max_age: timedelta) -> list[Finding]:
    """Runs the ledger still calls active long after they started (the DAG run died before
    `finalize.record`, or the run is waiting for a human far too long)."""
    return [
        Finding(
            WARNING,
            "stuck_run",
            f"run {run.run_id} ({run.plan_id}) has been {run.status} since "
            f"{run.started_at.isoformat()} ({(now - run.started_at) // timedelta(minutes=1)} "
            f"min, more than {max_age // timedelta(minutes=1)} min)",
            run.run_id,
        )
        for run in runs
        if run.active and now - run.started_at > max_age
    ]


def broken_rollbacks(runs: Iterable[Any]) -> list[Finding]:
    """Rolled-back runs whose verification found tenants not back on their old version."""
    findings = []
    for run in runs:
        broken = ((run.detail or {}).get("rollback_verification") or {}).get("broken") or []
        for item in broken:
            tenant = item.get("tenant") if isinstance(item, dict) else str(item)
            findings.append(
                Finding(
                    ERROR,
                    "rollback_unverified",
                    f"{tenant}: the rollback of run {run.run_id} did not verify ({item})",
                    run.run_id,
                    tenant,
                )
            )
    return findings


def audit_backlog(ledger: Ledger, *, now: datetime, max_age: timedelta) -> list[Finding]:
    """Audit records still in the outbox after `max_age` (the audit service is down, or
    nothing has flushed since)."""
    pending = ledger.pending_audit(limit=10_000)
    late = [r for r in pending if now - r.created_at > max_age]
    if not late:
        return []
    oldest = min(r.created_at for r in late)
    return [
        Finding(
            WARNING,
            "audit_backlog",
            f"{len(late)} audit record(s) undelivered for more than "
            f"{max_age // timedelta(minutes=1)} min (oldest {oldest.isoformat()}); they are kept "
            "and delivered by the next flush",
        )
    ]


def reconcile(
    ledger: Ledger,
    plugin: str,
    fleet: Iterable[Mapping[str, Any]],
    *,
    now: datetime | None = None,
    stuck_after: timedelta = timedelta(hours=24),
    audit_late_after: timedelta = timedelta(minutes=15),
    run_limit: int | None = 500,
) -> list[Finding]:
    """Every finding for one plugin, errors first."""
    now = now or datetime.now(UTC)
    by_id = {str(t["id"]): t for t in fleet}
    runs = [r for r in ledger.runs(plugin=plugin, limit=run_limit)]
    findings = [
        *version_drift(expected_versions(ledger, plugin, runs), by_id),
        *unsettled_actions(ledger, runs, by_id),
        *broken_rollbacks(runs),
        *stale_claims(ledger, runs),
        *stuck_runs(runs, now=now, max_age=stuck_after),
        *audit_backlog(ledger, now=now, max_age=audit_late_after),
    ]
    return sorted(findings, key=lambda f: (f.severity != ERROR, f.kind, f.tenant or ""))
