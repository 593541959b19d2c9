"""The sections of a run's report (run, versions, tenants, batches, gates, rollback, pauses,
alerts, rates, metrics), each built from the run's indexed records (`records.Facts`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from powerx_upgrade.domain.replay import MARKER as INPUT_MARKER
from powerx_upgrade.ledger.records import (
    DecisionRecord,
    GateRecord,
    RunRecord,
)
from powerx_upgrade.reporting.records import Action, Facts, RunIdentity, airflow_run_url
from powerx_upgrade.reporting.trail import decision_entry
from powerx_upgrade.reporting.values import (
    iso,
    minutes_between,
    parse_time,
    ratio,
    seconds_between,
)

UPGRADE_SUCCESS_FLOOR = 0.98
BATCH_SUCCESS_FLOOR = 0.95
"""The defaults of a policy's `success_floors`, for a report built without its plan."""
_OK_UPGRADE = ("succeeded", "skipped")


def run_section(
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


def versions_section(
    run: RunRecord | None, identity: RunIdentity | None, tenants: dict[str, Any]
) -> dict[str, Any]:
    before = Counter(v or "unknown" for v in tenants["versions_before"].values())
    common = before.most_common(1)[0][0] if before else None
    return {
        "from": common if len(before) <= 1 else "mixed",
        "from_versions": dict(before.most_common()),
        "to": run.target_version if run else (identity.target_version if identity else None),
    }


def tenants_section(run: RunRecord | None, facts: Facts) -> dict[str, Any]:
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


def batch_section(planned: Mapping[str, Any], facts: Facts) -> dict[str, Any]:
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
        "approval": decision_entry(approvals[-1]) if approvals else None,
        "deploy": _deploy(actions),
        "gate": _gate(facts.gates_by_batch.get(index, []), final, deploy_ended),
        "decision": decision_entry(decides[-1]) if decides else None,
    }


def _batch_status(
    actions: list[Action], final: GateRecord | None, approvals: list[DecisionRecord]
) -> str:
    if final is not None:
        return "passed" if final.phase == "pass" else "failed"
    if actions:
        return "no_verdict"
    if approvals and approvals[-1].decision == "reject":
        return "rejected"
    return "not_run"


def _deploy(actions: list[Action]) -> dict[str, Any]:
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
        "pokes": sum(1 for e in evaluations if not input_only(e)),
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


def input_only(evaluation: GateRecord) -> bool:
    """A row that holds only the input of the gate's last poke (`domain.replay`)."""
    return not evaluation.final and all(
        m.get("metric") == INPUT_MARKER for m in evaluation.measurements
    )


def _series(evaluations: list[GateRecord]) -> list[dict[str, Any]]:
    """The gate's pokes per check, for charts: a value per poke (the worst tenant's for a
    per-tenant check, as a share of that tenant's own limit, since limits differ by tenant)."""
    series: dict[tuple[Any, ...], dict[str, Any]] = {}
    for evaluation in evaluations:
        groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
        for m in evaluation.measurements:
            if m.get("metric") == INPUT_MARKER:  # a poke's input, for backtests
                continue
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
    # one pass over a row per tenant: the worst (first of equals) and how many breach
    worst: float | None = None
    worst_tenant = None
    breaching = 0
    for m in found:
        if m.get("phase") == "fail":
            breaching += 1
        r = ratio(m.get("value"), m.get("threshold"))
        if r is not None and (worst is None or r > worst):
            worst, worst_tenant = r, m.get("tenant")
    return {
        "at": at,
        "final": evaluation.final,
        "value": worst,
        "threshold": 1.0,
        "tenant": worst_tenant,
        "measured": len(found),
        "breaching": breaching,
        "phase": "fail" if breaching else "pass",
    }


def rollback_section(
    run: RunRecord | None, facts: Facts, deadline: timedelta
) -> dict[str, Any] | None:
    detail = (run.detail or {}) if run else {}
    chosen = [d for d in facts.decisions if d.decision == "rollback"]
    if not (detail.get("rollback_targets") or facts.rollbacks or chosen):
        return None
    verification = detail.get("rollback_verification") or {}
    verified = {v["tenant"] for v in verification.get("verified", [])}
    broken = {b["tenant"]: b.get("problems", []) for b in verification.get("broken", [])}
    tenants = []
    rolled_back, add = (
        facts.rollbacks.get,
        tenants.append,
    )  # a row per target: 100,000 at fleet scale
    for target in detail.get("rollback_targets") or []:
        name = target["tenant"]
        action = rolled_back(name)
        add(
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
        "trigger": decision_entry(chosen[-1]) if chosen else None,
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


def pauses_section(decisions: list[DecisionRecord]) -> list[dict[str, Any]]:
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


def alert_entry(raw: Mapping[str, Any]) -> dict[str, Any]:
    at = raw.get("at")
    return {
        "rule": raw.get("rule"),
        "severity": raw.get("severity"),
        "batch": raw.get("batch"),
        "message": raw.get("message"),
        "at": iso(at) if isinstance(at, datetime) else at,
    }


def rates_section(
    tenants: Mapping[str, Any],
    batches: list[dict[str, Any]],
    floors: tuple[float, float] = (UPGRADE_SUCCESS_FLOOR, BATCH_SUCCESS_FLOOR),
) -> dict[str, Any]:
    """The run's success rates against the policy's `success_floors` (upgrade, batch)."""
    upgrade_floor, batch_floor = floors
    run = [b for b in batches if b["status"] not in ("not_run", "rejected")]
    passed = [b for b in run if b["status"] == "passed"]
    return {
        "upgrade_success": _rate(tenants["on_target"], tenants["selected"], upgrade_floor),
        # per upgrade attempt, as the version.upgrade.success_rate gauge counts it
        "deploy_success": _rate(
            tenants["deploy_succeeded"], tenants["deploy_attempted"], upgrade_floor
        ),
        "batch_success": _rate(len(passed), len(run), batch_floor),
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


def metrics_section(
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
