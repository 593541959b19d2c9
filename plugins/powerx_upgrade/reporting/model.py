"""The report of one run: a versioned, JSON-ready document built from the run's ledger records.

`build_report()` takes the records (or `report_from_ledger()` reads them) and returns plain
dicts, lists, strings and numbers, timestamps as ISO 8601 UTC. The renderer and the JSON file
both read this one document, so the Markdown, the HTML and the JSON never disagree. No Airflow
import here: the DAG task hands over what only Airflow knows (run id, Airflow's base URL).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from powerx_upgrade.domain.exposure import exposure
from powerx_upgrade.domain.models import Policy
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.reporting.collector import collector_paused
from powerx_upgrade.reporting.findings import findings, headline, timeline
from powerx_upgrade.reporting.records import Facts, RunIdentity, RunRecords
from powerx_upgrade.reporting.sections import (
    alert_entry,
    batch_section,
    metrics_section,
    pauses_section,
    rates_section,
    rollback_section,
    run_section,
    tenants_section,
    versions_section,
)
from powerx_upgrade.reporting.trail import approval_trail, decision_entry
from powerx_upgrade.reporting.values import iso

SCHEMA_VERSION = 1
DOCUMENT_KIND = "powerx.grey-upgrade.report"
ROLLBACK_DEADLINE = timedelta(minutes=3)
METRIC_NAMES = (
    "version.upgrade.success_rate",
    "version.upgrade.batch_duration_minutes",
    "version.rollback.duration_ms",
    "version.upgrade.alert_total",
    "version.upgrade.paused_total",
    "version.upgrade.exposure_tenant_minutes",
)


LIMITS_KEY = "limits"
"""run.detail key: the policy's success floors and rollback deadline in force for the run."""


def run_limits(policy: Policy) -> dict[str, Any]:
    """The policy's limits a report holds a run against, as JSON for the run's ledger record
    (kept at the run's start: a report built later, anywhere, uses the limits it ran under)."""
    floors = policy.success_floors
    return {
        "rollback_deadline_s": policy.rollback.deadline.total_seconds(),
        "success_floors": [floors.upgrade, floors.batch],
    }


def limits_options(limits: Mapping[str, Any] | None) -> dict[str, Any]:
    """`build_report()` options from `run_limits()` JSON (none or partial: the defaults)."""
    options: dict[str, Any] = {}
    if not limits:
        return options
    if limits.get("rollback_deadline_s") is not None:
        options["rollback_deadline"] = timedelta(seconds=float(limits["rollback_deadline_s"]))
    floors = limits.get("success_floors")
    if floors:
        options["success_floors"] = (float(floors[0]), float(floors[1]))
    return options


def policy_options(policy: Policy | None) -> dict[str, Any]:
    """`build_report()` options from the run's policy: its rollback deadline and success floors
    (none: a plan no longer in the config, so the run's recorded limits or the defaults)."""
    return limits_options(run_limits(policy)) if policy is not None else {}


def report_from_ledger(
    ledger: Ledger, run_id: str, *, identity: RunIdentity | None = None, **options: Any
) -> dict[str, Any]:
    """`build_report()` over what the ledger holds for `run_id`; limits not given are the ones
    recorded at the run's start (`run_limits`), else the defaults."""
    records = RunRecords.from_ledger(ledger, run_id)
    recorded = (records.run.detail or {}).get(LIMITS_KEY) if records.run else None
    return build_report(records, identity=identity, **{**limits_options(recorded), **options})


def build_report(
    records: RunRecords,
    *,
    identity: RunIdentity | None = None,
    alerts: Iterable[Mapping[str, Any]] = (),
    airflow_base_url: str | None = None,
    generated_at: datetime | None = None,
    rollback_deadline: timedelta = ROLLBACK_DEADLINE,
    success_floors: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The report document (schema_version 1) of one run.

    :param records: the run's ledger records (`RunRecords.from_ledger`).
    :param identity: what the DAG knows of the run; required when the ledger has no run.
    :param alerts: the run's alerts, each `{rule, severity, batch, message, at}`.
    :param airflow_base_url: the Airflow UI's base URL, for the link to the run.
    :param generated_at: the report's time (default: now); also the end of a run still open.
    :param rollback_deadline: the rollback time the report holds the rollback against (the
        policy's `rollback.deadline`).
    :param success_floors: the policy's `success_floors` (upgrade, batch); default 98 %, 95 %.
    """
    if records.run is None and identity is None:
        raise ValueError("a report needs the run's ledger record or its identity (RunIdentity)")
    with collector_paused():  # a row per tenant, many times over: see reporting.collector
        return _build(
            records,
            identity=identity,
            alerts=alerts,
            airflow_base_url=airflow_base_url,
            now=generated_at or datetime.now(UTC),
            rollback_deadline=rollback_deadline,
            success_floors=success_floors,
        )


def _build(
    records: RunRecords,
    *,
    identity: RunIdentity | None,
    alerts: Iterable[Mapping[str, Any]],
    airflow_base_url: str | None,
    now: datetime,
    rollback_deadline: timedelta,
    success_floors: tuple[float, float] | None,
) -> dict[str, Any]:
    facts = Facts(records)
    run = run_section(records.run, identity, airflow_base_url, now)
    batches = [batch_section(planned, facts) for planned in facts.planned]
    tenants = tenants_section(records.run, facts)
    rollback = rollback_section(records.run, facts, rollback_deadline)
    pauses = pauses_section(facts.decisions)
    alert_list = [alert_entry(a) for a in alerts]
    rates = rates_section(tenants, batches, *([success_floors] if success_floors else []))
    exposed = run_exposure(records, end=(records.run.ended_at if records.run else None) or now)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": DOCUMENT_KIND,
        "generated_at": iso(now),
        "run": run,
        "plan": {"id": run["plan_id"], "dag_id": run["dag_id"]},
        "plugin": run["plugin"],
        "versions": versions_section(records.run, identity, tenants),
        "artifact": {
            "uri": records.run.artifact_uri if records.run else None,
            "sha256": records.run.artifact_sha256 if records.run else None,
        },
        "trigger": {
            "by": run["triggered_by"],
            "reason": run["reason"],
            "conf": dict(records.run.conf if records.run else (identity.conf if identity else {})),
        },
        "outcome": run["outcome"],
        "tenants": tenants,
        "batches": batches,
        "approvals": [decision_entry(d) for d in facts.decisions if d.kind == "approval"],
        "decisions": [decision_entry(d) for d in facts.decisions],
        "approval_trail": approval_trail(facts.decisions, records.approvals),
        "pauses": pauses,
        "alerts": alert_list,
        "rollback": rollback,
        "rates": rates,
        "exposure": exposed,
        "metrics": {
            **metrics_section(rates, batches, rollback, alert_list, pauses),
            "version.upgrade.exposure_tenant_minutes": exposed["tenant_minutes_before_detection"],
        },
        "links": {"airflow_run": run["airflow_url"]},
        "notes": list((records.run.detail or {}).get("notes", [])) if records.run else [],
    }
    report["timeline"] = timeline(report)
    report["findings"] = findings(report, records.run, facts, now)
    report["headline"] = headline(report)
    return report


def run_exposure(records: RunRecords, *, end: datetime) -> dict[str, Any]:
    """The run's exposure before its first failing verdict and in total (`domain.exposure`)."""
    return exposure(records.actions, records.gates, end=end).as_dict()
