"""The report of one run: a versioned, JSON-ready document built from the run's ledger records.

`build_report()` takes the records (or `report_from_ledger()` reads them) and returns plain
dicts, lists, strings and numbers, timestamps as ISO 8601 UTC. The renderer and the JSON file
both read this one document, so the Markdown, the HTML and the JSON never disagree. No Airflow
import here: the DAG task hands over what only Airflow knows (run id, Airflow's base URL).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from powerx_upgrade.domain.exposure import exposure
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger.records import (
    ActionRecord,
    ApprovalRecord,
    DecisionRecord,
    GateRecord,
    RunRecord,
)
from powerx_upgrade.reporting.findings import (
    findings,
    headline,
    timeline,
)
from powerx_upgrade.reporting.values import (
    iso,
    minutes_between,
    parse_time,
    ratio,
    seconds_between,
)

SCHEMA_VERSION = 1
DOCUMENT_KIND = "powerx.grey-upgrade.report"
UPGRADE_SUCCESS_FLOOR = 0.98
BATCH_SUCCESS_FLOOR = 0.95
ROLLBACK_DEADLINE = timedelta(minutes=3)
METRIC_NAMES = (
    "version.upgrade.success_rate",
    "version.upgrade.batch_duration_minutes",
    "version.rollback.duration_ms",
    "version.upgrade.alert_total",
    "version.upgrade.paused_total",
    "version.upgrade.exposure_tenant_minutes",
)
_OK_UPGRADE = ("succeeded", "skipped")
HUMAN_DECISION_KINDS = ("pause", "approval", "rollback", "stop", "takeover")
"""Decisions a person takes (or that a timeout takes for them); `decide` is the DAG's own."""


@dataclass(frozen=True)
class RunIdentity:
    """What the DAG knows of a run even when the ledger holds nothing (refused in preflight).

    :param error: why the run ended early, in words (shown in the report and the post-mortem).
    :param outcome: the outcome the finalize step settled, when the ledger has none.
    """

    run_id: str
    dag_id: str
    plan_id: str
    plugin: str | None = None
    target_version: str | None = None
    triggered_by: str | None = None
    reason: str | None = None
    conf: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class RunRecords:
    """Everything the ledger holds about one run; `run` is None for a run it never saw."""

    run: RunRecord | None
    actions: Sequence[ActionRecord] = ()
    gates: Sequence[GateRecord] = ()
    decisions: Sequence[DecisionRecord] = ()
    approvals: Sequence[ApprovalRecord] = ()
    """Approval tokens used on this run (never the tokens: who, what, when, token id)."""

    @classmethod
    def from_ledger(cls, ledger: Ledger, run_id: str) -> RunRecords:
        run = ledger.get_run(run_id)
        if run is None:
            return cls(None)
        return cls(
            run,
            tuple(ledger.actions(run_id)),
            tuple(ledger.gate_evaluations(run_id)),
            tuple(ledger.decisions(run_id)),
            tuple(ledger.approvals(run_id=run_id)),
        )


def report_from_ledger(
    ledger: Ledger, run_id: str, *, identity: RunIdentity | None = None, **options: Any
) -> dict[str, Any]:
    """`build_report()` over what the ledger holds for `run_id`."""
    return build_report(RunRecords.from_ledger(ledger, run_id), identity=identity, **options)


def airflow_run_url(base_url: str | None, dag_id: str, run_id: str) -> str | None:
    """`{base}/dags/{dag_id}/runs/{run_id}`, ids escaped for a URL path (`+`, `:` in run ids)."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def build_report(
    records: RunRecords,
    *,
    identity: RunIdentity | None = None,
    alerts: Iterable[Mapping[str, Any]] = (),
    airflow_base_url: str | None = None,
    generated_at: datetime | None = None,
    rollback_deadline: timedelta = ROLLBACK_DEADLINE,
) -> dict[str, Any]:
    """The report document (schema_version 1) of one run.

    :param records: the run's ledger records (`RunRecords.from_ledger`).
    :param identity: what the DAG knows of the run; required when the ledger has no run.
    :param alerts: the run's alerts, each `{rule, severity, batch, message, at}`.
    :param airflow_base_url: the Airflow UI's base URL, for the link to the run.
    :param generated_at: the report's time (default: now); also the end of a run still open.
    :param rollback_deadline: the rollback time the report holds the rollback against.
    """
    if records.run is None and identity is None:
        raise ValueError("a report needs the run's ledger record or its identity (RunIdentity)")
    now = generated_at or datetime.now(UTC)
    facts = Facts(records)
    run = _run_section(records.run, identity, airflow_base_url, now)
    batches = [_batch(planned, facts) for planned in facts.planned]
    tenants = _tenants(records.run, facts)
    rollback = _rollback(records.run, facts, rollback_deadline)
    pauses = _pauses(facts.decisions)
    alert_list = [_alert(a) for a in alerts]
    rates = _rates(tenants, batches)
    exposed = run_exposure(records, end=(records.run.ended_at if records.run else None) or now)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": DOCUMENT_KIND,
        "generated_at": iso(now),
        "run": run,
        "plan": {"id": run["plan_id"], "dag_id": run["dag_id"]},
        "plugin": run["plugin"],
        "versions": _versions(records.run, identity, tenants),
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
        "approvals": [_decision(d) for d in facts.decisions if d.kind == "approval"],
        "decisions": [_decision(d) for d in facts.decisions],
        "approval_trail": _approval_trail(facts.decisions, records.approvals),
        "pauses": pauses,
        "alerts": alert_list,
        "rollback": rollback,
        "rates": rates,
        "exposure": exposed,
        "metrics": {
            **_metrics(rates, batches, rollback, alert_list, pauses),
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


# -- indexes ------------------------------------------------------------------------------------


class Facts:
    """The records indexed the ways the report reads them (one pass each: 10,000 tenants)."""

    def __init__(self, records: RunRecords) -> None:
        run = records.run
        self.planned: list[dict[str, Any]] = list(run.batches or []) if run else []
        self.upgrades: dict[str, ActionRecord] = {}
        self.rollbacks: dict[str, ActionRecord] = {}
        self.upgrades_by_batch: dict[int, list[ActionRecord]] = {}
        for action in sorted(records.actions, key=lambda a: a.id):
            if action.kind == "rollback":
                self.rollbacks[action.tenant_id] = action
                continue
            self.upgrades[action.tenant_id] = action
            self.upgrades_by_batch.setdefault(action.batch_index or 0, []).append(action)
        self.gates_by_batch: dict[int, list[GateRecord]] = {}
        for gate in sorted(records.gates, key=lambda g: (g.evaluated_at, g.id)):
            self.gates_by_batch.setdefault(gate.batch_index, []).append(gate)
        self.decisions: list[DecisionRecord] = sorted(
            records.decisions, key=lambda d: (d.decided_at, d.id)
        )
        self.baseline: dict[str, Any] = dict(run.baseline or {}) if run else {}
        self.target = run.target_version if run else None

    def final_gate(self, batch: int) -> GateRecord | None:
        finals = [g for g in self.gates_by_batch.get(batch, []) if g.final]
        return finals[-1] if finals else None

    def decisions_of(self, batch: int, kind: str) -> list[DecisionRecord]:
        return [d for d in self.decisions if d.batch_index == batch and d.kind == kind]


# -- sections -----------------------------------------------------------------------------------


def _run_section(
    run: RunRecord | None, identity: RunIdentity | None, base_url: str | None, now: datetime
) -> dict[str, Any]:
    known = identity or RunIdentity(run_id=run.run_id, dag_id=run.dag_id, plan_id=run.plan_id)  # type: ignore[union-attr]
    outcome = (run.outcome if run else None) or known.outcome
    if outcome is None:
        outcome = "failed" if run is None else "unfinished"
    error = known.error
    detail = (run.detail or {}) if run else {}
    if error is None and outcome == "failed":
        error = (detail.get("outcome_detail") or {}).get("note")
    started = run.started_at if run else None
    ended = run.ended_at if run else None
    return {
        "run_id": run.run_id if run else known.run_id,
        "dag_id": run.dag_id if run else known.dag_id,
        "plan_id": run.plan_id if run else known.plan_id,
        "plugin": run.plugin if run else known.plugin,
        "target_version": run.target_version if run else known.target_version,
        "triggered_by": (run.triggered_by if run else None) or known.triggered_by,
        "reason": (run.reason if run else None) or known.reason,
        "dry_run": bool(run.dry_run) if run else False,
        "status": run.status if run else "not_recorded",
        "outcome": outcome,
        "outcome_detail": detail.get("outcome_detail") or {},
        "error": error,
        "in_ledger": run is not None,
        "started_at": iso(started),
        "ended_at": iso(ended),
        "duration_seconds": seconds_between(started, ended or (now if started else None)),
        "airflow_url": airflow_run_url(
            base_url,
            run.dag_id if run else known.dag_id,
            run.run_id if run else known.run_id,
        ),
    }


def _versions(
    run: RunRecord | None, identity: RunIdentity | None, tenants: dict[str, Any]
) -> dict[str, Any]:
    before = Counter(v or "unknown" for v in tenants["versions_before"].values())
    common = before.most_common(1)[0][0] if before else None
    return {
        "from": common if len(before) <= 1 else "mixed",
        "from_versions": dict(before.most_common()),
        "to": run.target_version if run else (identity.target_version if identity else None),
    }


def _tenants(run: RunRecord | None, facts: Facts) -> dict[str, Any]:
    selected = [t for b in facts.planned for t in b.get("tenants", [])]
    before: dict[str, Any] = dict(((run.detail or {}) if run else {}).get("versions_before") or {})
    states = Counter(a.state for a in facts.upgrades.values())
    upgraded = {t for t, a in facts.upgrades.items() if a.state == "succeeded" and not a.noop}
    rolled_back = {t for t, a in facts.rollbacks.items() if a.state == "succeeded"}
    on_target = {
        t
        for t in selected
        if t not in rolled_back
        and (
            (t in facts.upgrades and facts.upgrades[t].state in _OK_UPGRADE)
            or (facts.target is not None and before.get(t) == facts.target)
        )
    }
    return {
        "selected": len(selected),
        "fleet": ((run.detail or {}) if run else {}).get("fleet"),
        "upgraded": len(upgraded),
        "already_on_target": sum(
            1 for a in facts.upgrades.values() if a.state == "skipped" or a.noop
        ),
        "deploy_failed": states["failed"] + states["started"],
        "deploy_succeeded": states["succeeded"],
        "deploy_attempted": states["succeeded"] + states["failed"],
        "refused": states["refused"],
        "rolled_back": len(rolled_back),
        "on_target": len(on_target),
        "not_on_target": len(selected) - len(on_target),
        "versions_before": {t: before.get(t) for t in selected},
    }


def _batch(planned: Mapping[str, Any], facts: Facts) -> dict[str, Any]:
    index = int(planned["index"])
    actions = facts.upgrades_by_batch.get(index, [])
    touched = [a for a in actions if a.state != "refused"]
    started = min((a.started_at for a in touched), default=None)
    deploy_ended = max((a.finished_at for a in touched if a.finished_at), default=None)
    final = facts.final_gate(index)
    ended = final.evaluated_at if final else deploy_ended
    approvals = facts.decisions_of(index, "approval")
    decides = facts.decisions_of(index, "decide")
    return {
        "index": index,
        "name": planned.get("name") or f"batch_{index}",
        "size": len(planned.get("tenants", [])),
        "tenants": list(planned.get("tenants", [])),
        "cumulative_count": planned.get("cumulative_count"),
        "cumulative_ratio": planned.get("cumulative_ratio"),
        "bake_seconds": planned.get("bake_seconds"),
        "approval_required": bool(planned.get("approval_required")),
        "merged": list(planned.get("merged") or []),
        "status": _batch_status(actions, final, approvals),
        "started_at": iso(started),
        "deploy_ended_at": iso(deploy_ended),
        "ended_at": iso(ended),
        "duration_minutes": minutes_between(started, ended),
        "approval": _decision(approvals[-1]) if approvals else None,
        "deploy": _deploy(actions),
        "gate": _gate(facts.gates_by_batch.get(index, []), final, deploy_ended),
        "decision": _decision(decides[-1]) if decides else None,
    }


def _batch_status(
    actions: list[ActionRecord], final: GateRecord | None, approvals: list[DecisionRecord]
) -> str:
    if final is not None:
        return "passed" if final.phase == "pass" else "failed"
    if actions:
        return "no_verdict"
    if approvals and approvals[-1].decision == "reject":
        return "rejected"
    return "not_run"


def _deploy(actions: list[ActionRecord]) -> dict[str, Any]:
    states = Counter(a.state for a in actions)
    return {
        "succeeded": states["succeeded"],
        "skipped": states["skipped"],
        "failed": states["failed"],
        "not_finished": states["started"],
        "refused": states["refused"],
        "failed_tenants": [
            {"tenant": a.tenant_id, "error": a.error, "attempts": a.attempts}
            for a in actions
            if a.state in ("failed", "started")
        ],
        "refused_tenants": [
            {"tenant": a.tenant_id, "held_by": (a.detail or {}).get("held_by"), "error": a.error}
            for a in actions
            if a.state == "refused"
        ],
    }


def _gate(
    evaluations: list[GateRecord], final: GateRecord | None, bake_started: datetime | None
) -> dict[str, Any]:
    measurements = [_measurement(m) for m in (final.measurements if final else [])]
    measurements.sort(key=_measurement_order)
    return {
        "verdict": final.phase if final else None,
        "reason": final.reason if final else None,
        "summary": (final.summary or final.reason) if final else None,
        "segment": final.segment if final else None,
        "evaluated_at": iso(final.evaluated_at) if final else None,
        "bake_started_at": iso(bake_started),
        "pokes": len(evaluations),
        "measurements": measurements,
        "breaching": sorted(
            {m["tenant"] for m in measurements if m["tenant"] and m["phase"] == "fail"}
        ),
        "series": _series(evaluations),
    }


def _measurement(raw: Mapping[str, Any]) -> dict[str, Any]:
    value, threshold = raw.get("value"), raw.get("threshold")
    return {
        "check": raw.get("check"),
        "metric": raw.get("metric"),
        "scope": raw.get("scope"),
        "tenant": raw.get("tenant"),
        "op": raw.get("op"),
        "limit": raw.get("limit"),
        "threshold": threshold,
        "value": value,
        "samples": raw.get("samples"),
        "phase": raw.get("phase"),
        "detail": raw.get("detail") or "",
        "ratio": ratio(value, threshold),
    }


def _measurement_order(m: Mapping[str, Any]) -> tuple[Any, ...]:
    per_tenant = m["tenant"] is not None
    return (
        per_tenant,
        m["phase"] != "fail",
        m["check"] or 0,
        -(m["ratio"] or 0),
        m["tenant"] or "",
    )


def _series(evaluations: list[GateRecord]) -> list[dict[str, Any]]:
    """The gate's pokes per check, for charts: a value per poke (the worst tenant's for a
    per-tenant check, as a share of that tenant's own limit, since limits differ by tenant)."""
    series: dict[tuple[Any, ...], dict[str, Any]] = {}
    for evaluation in evaluations:
        groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
        for m in evaluation.measurements:
            key = (m.get("check"), m.get("metric"), m.get("scope"))
            groups.setdefault(key, []).append(m)
        for key, found in groups.items():
            entry = series.setdefault(
                key,
                {
                    "check": key[0],
                    "metric": key[1],
                    "scope": key[2],
                    "op": None,
                    "limit": None,
                    "per_tenant": key[2] == "per_tenant" or any(m.get("tenant") for m in found),
                    "points": [],
                },
            )
            # pokes may be recorded compactly (no limit text): take it from any that has it
            entry["op"] = entry["op"] or found[0].get("op")
            entry["limit"] = entry["limit"] or found[0].get("limit")
            entry["points"].append(_point(evaluation, found, entry["per_tenant"]))
    return list(series.values())


def _point(
    evaluation: GateRecord, found: list[Mapping[str, Any]], per_tenant: bool
) -> dict[str, Any]:
    at = iso(evaluation.evaluated_at)
    if not per_tenant:
        m = found[0]
        return {
            "at": at,
            "final": evaluation.final,
            "value": m.get("value"),
            "threshold": m.get("threshold"),
            "phase": m.get("phase"),
        }
    rated = [(r, m) for m in found if (r := ratio(m.get("value"), m.get("threshold"))) is not None]
    worst = max(rated, key=lambda pair: pair[0], default=(None, {}))
    return {
        "at": at,
        "final": evaluation.final,
        "value": worst[0],
        "threshold": 1.0,
        "tenant": worst[1].get("tenant"),
        "measured": len(found),
        "breaching": sum(1 for m in found if m.get("phase") == "fail"),
        "phase": "fail" if any(m.get("phase") == "fail" for m in found) else "pass",
    }


def _rollback(run: RunRecord | None, facts: Facts, deadline: timedelta) -> dict[str, Any] | None:
    detail = (run.detail or {}) if run else {}
    chosen = [d for d in facts.decisions if d.decision == "rollback"]
    if not (detail.get("rollback_targets") or facts.rollbacks or chosen):
        return None
    verification = detail.get("rollback_verification") or {}
    verified = {v["tenant"] for v in verification.get("verified", [])}
    broken = {b["tenant"]: b.get("problems", []) for b in verification.get("broken", [])}
    tenants = []
    for target in detail.get("rollback_targets") or []:
        name = target["tenant"]
        action = facts.rollbacks.get(name)
        tenants.append(
            {
                "tenant": name,
                "batch": target.get("batch"),
                "from_version": target.get("from_version"),
                "state": action.state if action else "not_started",
                "attempts": action.attempts if action else 0,
                "error": action.error if action else None,
                "finished_at": iso(action.finished_at) if action else None,
                "verified": True if name in verified else (False if name in broken else None),
                "problems": broken.get(name, []),
            }
        )
    started = parse_time(detail.get("rollback_started_at")) or (
        chosen[-1].decided_at if chosen else None
    )
    finished = [a.finished_at for a in facts.rollbacks.values() if a.finished_at]
    ended = parse_time(verification.get("checked_at")) or max(finished, default=None)
    duration_ms = verification.get("duration_ms")
    if duration_ms is None and started and ended:
        duration_ms = int((ended - started).total_seconds() * 1000)
    # the ones that did not come back first: they are what a reader looks for
    tenants.sort(key=lambda t: (t["verified"] is True and t["state"] == "succeeded", t["tenant"]))
    states = Counter(t["state"] for t in tenants)
    deadline_ms = int(deadline.total_seconds() * 1000)
    return {
        "scope": detail.get("rollback_scope"),
        "trigger": _decision(chosen[-1]) if chosen else None,
        "started_at": iso(started),
        "ended_at": iso(ended),
        "duration_ms": duration_ms,
        "deadline_ms": deadline_ms,
        "within_deadline": None if duration_ms is None else duration_ms <= deadline_ms,
        "counts": {
            "targets": len(tenants),
            "succeeded": states["succeeded"],
            "failed": states["failed"] + states["started"],
            "not_started": states["not_started"],
            "verified": len(verified),
            "broken": len(broken),
        },
        "tenants": tenants,
        "note": verification.get("note"),
    }


def _pauses(decisions: list[DecisionRecord]) -> list[dict[str, Any]]:
    """Each pause: when the gate's decision asked for a human, and the answer (if any)."""
    pauses: list[dict[str, Any]] = []
    for asked in (d for d in decisions if d.kind == "decide" and d.decision == "pause"):
        answer = next(
            (
                d
                for d in decisions
                if d.kind == "pause"
                and d.batch_index == asked.batch_index
                and d.decided_at >= asked.decided_at
            ),
            None,
        )
        pauses.append(
            {
                "batch": asked.batch_index,
                "reason": (asked.detail or {}).get("reason"),
                "verdict": (asked.detail or {}).get("verdict"),
                "started_at": iso(asked.decided_at),
                "answered_at": iso(answer.decided_at) if answer else None,
                "answer": answer.decision if answer else None,
                "actor": answer.actor if answer else None,
                "via": answer.via if answer else None,
                "timed_out": bool((answer.detail or {}).get("timed_out")) if answer else None,
                "waited_seconds": seconds_between(
                    asked.decided_at, answer.decided_at if answer else None
                ),
            }
        )
    # answers without a recorded request (e.g. a pause requested by an operator) still count
    asked_batches = {p["batch"] for p in pauses}
    for answer in (d for d in decisions if d.kind == "pause"):
        if answer.batch_index not in asked_batches:
            pauses.append(
                {
                    "batch": answer.batch_index,
                    "reason": None,
                    "verdict": None,
                    "started_at": None,
                    "answered_at": iso(answer.decided_at),
                    "answer": answer.decision,
                    "actor": answer.actor,
                    "via": answer.via,
                    "timed_out": bool((answer.detail or {}).get("timed_out")),
                    "waited_seconds": None,
                }
            )
    return pauses


def _alert(raw: Mapping[str, Any]) -> dict[str, Any]:
    at = raw.get("at")
    return {
        "rule": raw.get("rule"),
        "severity": raw.get("severity"),
        "batch": raw.get("batch"),
        "message": raw.get("message"),
        "at": iso(at) if isinstance(at, datetime) else at,
    }


def _rates(tenants: Mapping[str, Any], batches: list[dict[str, Any]]) -> dict[str, Any]:
    run = [b for b in batches if b["status"] not in ("not_run", "rejected")]
    passed = [b for b in run if b["status"] == "passed"]
    return {
        "upgrade_success": _rate(tenants["on_target"], tenants["selected"], UPGRADE_SUCCESS_FLOOR),
        # per upgrade attempt, as the version.upgrade.success_rate gauge counts it
        "deploy_success": _rate(
            tenants["deploy_succeeded"], tenants["deploy_attempted"], UPGRADE_SUCCESS_FLOOR
        ),
        "batch_success": _rate(len(passed), len(run), BATCH_SUCCESS_FLOOR),
    }


def _rate(numerator: int, denominator: int, floor: float) -> dict[str, Any]:
    value = numerator / denominator if denominator else None
    return {
        "value": None if value is None else round(value, 6),
        "numerator": numerator,
        "denominator": denominator,
        "floor": floor,
        "met": None if value is None else value >= floor,
    }


def _metrics(
    rates: Mapping[str, Any],
    batches: list[dict[str, Any]],
    rollback: Mapping[str, Any] | None,
    alerts: list[dict[str, Any]],
    pauses: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "version.upgrade.success_rate": rates["deploy_success"]["value"],
        "version.upgrade.batch_duration_minutes": {
            str(b["index"]): b["duration_minutes"]
            for b in batches
            if b["duration_minutes"] is not None
        },
        "version.rollback.duration_ms": rollback["duration_ms"] if rollback else None,
        "version.upgrade.alert_total": len(alerts),
        "version.upgrade.paused_total": len(pauses),
    }


def _decision(d: DecisionRecord) -> dict[str, Any]:
    detail = d.detail or {}
    return {
        "batch": d.batch_index,
        "kind": d.kind,
        "decision": d.decision,
        "actor": d.actor,
        "via": d.via,
        "at": iso(d.decided_at),
        "reason": detail.get("reason"),
        "timed_out": detail.get("timed_out"),
        "approval_jti": _jti_of(d),
        "detail": detail,
    }


def _jti_of(d: DecisionRecord) -> str | None:
    """The id of the approval token behind a decision (the run controls keep it as
    `detail.approval`), if any."""
    detail = d.detail or {}
    for key in ("approval_jti", "approval", "jti"):
        jti = detail.get(key)
        if isinstance(jti, str) and jti:
            return jti
    return None


def _human(d: DecisionRecord) -> bool:
    # a DAG decision credited to an operator (a requested rollback, a takeover's pause) counts
    if d.decision == "not_required":
        return False
    return d.kind in HUMAN_DECISION_KINDS or d.via not in (None, "auto")


def _approval_trail(
    decisions: Sequence[DecisionRecord], approvals: Sequence[ApprovalRecord]
) -> list[dict[str, Any]]:
    """Every human decision and every approval token used, in time order: who, when, through
    which path (ui, api, cli; auto when a timeout decided), the action, the token id (jti) and
    the batch. A decision taken with a token shows the token's approver on the same line."""
    tokens = {a.jti: a for a in approvals}
    shown: set[str] = set()
    trail: list[tuple[datetime, dict[str, Any]]] = []
    for d in decisions:
        if not _human(d):
            continue
        jti = _jti_of(d)
        token = tokens.get(jti) if jti else None
        if token is not None:
            shown.add(token.jti)
        timed_out = bool((d.detail or {}).get("timed_out"))
        entry = {
            "at": iso(d.decided_at),
            "batch": d.batch_index,
            "action": d.kind,
            "decision": d.decision,
            "who": d.actor,
            "approver": token.subject if token else None,
            "via": "auto" if timed_out else d.via,
            "jti": jti,
            "mfa": token.mfa if token else None,
            "token_used_at": iso(token.used_at) if token else None,
            "timed_out": timed_out,
            "source": "decision",
        }
        trail.append((d.decided_at, entry))
    for a in approvals:
        if a.jti in shown:
            continue
        detail = a.detail or {}
        entry = {
            "at": iso(a.used_at),
            "batch": detail.get("batch"),
            "action": a.action,
            "decision": detail.get("operation"),
            "who": detail.get("actor") or a.subject,
            "approver": a.subject,
            "via": a.via,
            "jti": a.jti,
            "mfa": a.mfa,
            "token_used_at": iso(a.used_at),
            "timed_out": False,
            "source": "approval_token",
        }
        trail.append((a.used_at, entry))
    return [entry for _, entry in sorted(trail, key=lambda item: item[0])]
