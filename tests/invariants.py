"""What every fault test of the matrix (docs/reliability.md) asserts after its fault: nothing lost.

- every tenant the run touched has a known version at the platform, and reconcile finds no drift,
  no unsettled action and no unverified rollback of the run (unless the test names the findings
  it expects, e.g. the tenants a failed rollback left behind);
- the run's audit record ids are unique in the ledger, every one was delivered, and the audit
  service holds each of them exactly once and no record of the run the ledger does not know
  (a retry under a fresh id would show up there as an extra record);
- the run reached a defined outcome, finished in the ledger.

Used by e2e and stack tests alike: it reads the ledger and the sandbox over HTTP only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger.records import RunOutcome
from powerx_upgrade.rollout.reconcile import Finding, reconcile

OUTCOMES = frozenset(RunOutcome) - {RunOutcome.DRY_RUN}
"""The outcomes a finished run may have (a run that ends without one is a bug)."""

RUN_FINDINGS = ("version_drift", "unsettled_action", "rollback_unverified", "stale_claim")
"""Reconcile findings about a run's tenants that mean something was lost or left behind."""


@dataclass(frozen=True)
class Settled:
    """What `assert_nothing_lost` saw, for the test's own further asserts."""

    run: Any
    fleet: dict[str, dict[str, Any]]
    findings: list[Finding]
    audit_ids: list[str]
    tenants: set[str]


def fleet_of(platform: httpx.Client, plugin: str) -> dict[str, dict[str, Any]]:
    """Every tenant of `plugin` as the sandbox sees it (id -> tenant)."""
    answer = platform.get("/sandbox/tenants", params={"plugin": plugin})
    answer.raise_for_status()
    return {str(t["id"]): t for t in answer.json()["tenants"]}


def audit_at_service(platform: httpx.Client) -> list[dict[str, Any]]:
    answer = platform.get("/sandbox/audit")
    answer.raise_for_status()
    return list(answer.json()["records"])


def assert_nothing_lost(
    ledger: Ledger,
    platform: httpx.Client,
    run_id: str,
    *,
    plugin: str = "crm-sync",
    outcomes: Collection[str] = OUTCOMES,
    expected_findings: Mapping[str, Collection[str]] | None = None,
) -> Settled:
    """Assert the matrix's invariants for one finished run; returns what it read.

    `outcomes`: the outcomes this fault may end in (default: any defined one).
    `expected_findings`: finding kind -> the tenants reconcile must name for this run (exactly
    those); every other run finding must be absent.
    """
    run = ledger.get_run(run_id)
    assert run is not None, f"run {run_id} is not in the ledger"
    assert not run.active and run.ended_at is not None, (
        f"run {run_id} never finished in the ledger (status {run.status})"
    )
    assert run.outcome in outcomes, (
        f"run {run_id} ended {run.outcome!r}, expected one of {sorted(outcomes)}"
    )

    fleet = fleet_of(platform, plugin)
    touched = {a.tenant_id for a in ledger.actions(run_id)}
    unknown = sorted(t for t in touched if t not in fleet or fleet[t].get("version") in (None, ""))
    assert not unknown, f"tenants of {run_id} with no known version at the platform: {unknown}"

    findings = [
        f
        for f in reconcile(ledger, plugin, fleet.values())
        if f.kind in RUN_FINDINGS and (f.run_id == run_id or f.tenant in touched)
    ]
    wanted = {kind: set(tenants) for kind, tenants in (expected_findings or {}).items()}
    seen: dict[str, set[str]] = {}
    for finding in findings:
        seen.setdefault(finding.kind, set()).add(finding.tenant or "")
    unexpected = [f.message for f in findings if f.kind not in wanted]
    assert not unexpected, "reconcile found what a fault must not leave:\n" + "\n".join(unexpected)
    for kind, tenants in wanted.items():
        assert seen.get(kind, set()) == tenants, (
            f"reconcile should name {sorted(tenants)} as {kind}, named {sorted(seen.get(kind, set()))}"
        )

    records = ledger.audit_records(run_id)
    ids = [r.audit_id for r in records]
    doubled = [i for i, n in Counter(ids).items() if n > 1]
    assert not doubled, f"audit ids twice in the ledger: {doubled}"
    undelivered = [f"{r.audit_id} {r.event} ({r.last_error})" for r in records if not r.delivered]
    assert not undelivered, f"audit records of {run_id} never delivered: {undelivered}"
    at_service = [r for r in audit_at_service(platform) if r.get("run_id") == run_id]
    service_ids = Counter(str(r["id"]) for r in at_service)
    assert all(n == 1 for n in service_ids.values()), (
        f"audit ids twice at the service: {service_ids}"
    )
    missing = sorted(set(ids) - set(service_ids))
    extra = sorted(set(service_ids) - set(ids))
    assert not missing, f"audit records of {run_id} the audit service never got: {missing}"
    assert not extra, f"audit records of {run_id} at the service the ledger does not know: {extra}"
    return Settled(run, fleet, findings, ids, touched)
