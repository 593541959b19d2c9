"""What a report concludes from its facts: the timeline, what tripped, the impact, the metric
deviations from the baseline and a follow-up checklist (the post-mortem's substance)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from powerx_upgrade.domain.measurement import TenantStats, metric_value
from powerx_upgrade.ledger.records import RunRecord
from powerx_upgrade.reporting.values import iso, minutes_between, ratio

if TYPE_CHECKING:
    from powerx_upgrade.reporting.records import Facts

POSTMORTEM_OUTCOMES = frozenset(
    {"rolled_back", "rollback_failed", "stopped", "failed", "partially_promoted"}
)
_LISTED_FAILING_MEASUREMENTS = 20
_LISTED_DEVIATIONS = 50


def needs_postmortem(outcome: str | None) -> bool:
    return outcome in POSTMORTEM_OUTCOMES


def timeline(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    run = report["run"]
    events: list[dict[str, Any]] = []

    def add(at: str | None, kind: str, text: str, batch: int | None = None) -> None:
        if at:
            events.append({"at": at, "kind": kind, "batch": batch, "text": text})

    add(run["started_at"], "run", f"run started ({run['target_version']})")
    for b in report["batches"]:
        k, deploy = b["index"], b["deploy"]
        if b["approval"]:
            add(
                b["approval"]["at"],
                "approval",
                f"batch {k} approval: {b['approval']['decision']}",
                k,
            )
        add(
            b["started_at"],
            "deploy",
            f"batch {k} ({b['name']}) deploy started, {b['size']} tenants",
            k,
        )
        ok = deploy["succeeded"] + deploy["skipped"]
        failed = deploy["failed"] + deploy["not_finished"]
        add(b["deploy_ended_at"], "deploy", f"batch {k} deployed: {ok} ok, {failed} failed", k)
        gate = b["gate"]
        said = gate["summary"] or gate["reason"]
        add(gate["evaluated_at"], "gate", f"batch {k} gate {gate['verdict']}: {said}", k)
        if b["decision"]:
            add(
                b["decision"]["at"],
                "decision",
                f"batch {k} decision: {b['decision']['decision']}",
                k,
            )
    for p in report["pauses"]:
        add(
            p["started_at"],
            "pause",
            f"batch {p['batch']} paused: {p['reason'] or 'gate'}",
            p["batch"],
        )
        answer = f"{p['answer']} by {p['actor'] or '?'}" + (
            " (timed out)" if p["timed_out"] else ""
        )
        add(p["answered_at"], "pause", f"batch {p['batch']} pause answered: {answer}", p["batch"])
    for d in report["decisions"]:
        if d["kind"] == "stop":
            add(d["at"], "stop", f"run stopped by {d['actor'] or '?'}: {d['reason'] or ''}".strip())
    for a in report["alerts"]:
        add(a["at"], "alert", f"alert {a['rule']} ({a['severity']}): {a['message']}", a["batch"])
    rollback = report["rollback"]
    if rollback:
        counts = rollback["counts"]
        add(rollback["started_at"], "rollback", f"rollback started: {counts['targets']} tenants")
        add(
            rollback["ended_at"],
            "rollback",
            f"rollback ended: {counts['verified']} verified, {counts['broken']} not back",
        )
    add(run["ended_at"], "run", f"run ended: {run['outcome']}")
    events.sort(key=lambda e: e["at"])
    return events


def findings(
    report: Mapping[str, Any], run: RunRecord | None, facts: Facts, now: datetime
) -> dict[str, Any]:
    outcome = report["run"]["outcome"]
    tripped = _tripped(report)
    deviations = _deviations(report["batches"], facts)
    impact = _impact(report, run, facts, now)
    return {
        "postmortem_required": needs_postmortem(outcome),
        "tripped": tripped,
        "impact": impact,
        "deviations": deviations,
        "follow_up": _follow_up(report, tripped, impact),
    }


def headline(report: Mapping[str, Any]) -> str:
    """The report's one line: the outcome and, when something tripped, the first verdict in
    words (metric, value, limit, samples, batch and the segment it concentrates in)."""
    outcome = str(report["outcome"]).replace("_", " ")
    tripped = report["findings"]["tripped"]
    if tripped:
        first = tripped[0]
        return f"{outcome.capitalize()}: {first['summary'] or first['reason'] or first['what']}"
    tenants = report["tenants"]
    if report["outcome"] == "promoted":
        return (
            f"Promoted: {report['versions']['to']} on {tenants.get('on_target')} of "
            f"{tenants.get('selected')} tenants; every gate held"
        )
    return outcome.capitalize()


def _trip(
    what: str,
    batch: int | None,
    at: str | None,
    reason: str | None,
    *,
    phase: str | None = None,
    failing: list[dict[str, Any]] | None = None,
    summary: str | None = None,
    segment: dict[str, Any] | None = None,
) -> dict[str, Any]:
    failing = failing or []
    return {
        "what": what,
        "batch": batch,
        "at": at,
        "phase": phase,
        "reason": reason,
        "summary": summary or reason,
        "segment": segment,
        "measurements": failing[:_LISTED_FAILING_MEASUREMENTS],
        "failing_measurements": len(failing),
    }


def _tripped(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What ended the run or made it go wrong: a refused preflight, a gate that did not pass,
    a stop or a refused approval, a rollback that left tenants behind."""
    run = report["run"]
    found = [_trip("preflight", None, run["ended_at"], run["error"])] if run["error"] else []
    for b in report["batches"]:
        gate = b["gate"]
        if gate["verdict"] and gate["verdict"] != "pass":
            failing = [m for m in gate["measurements"] if m["phase"] != "pass"]
            found.append(
                _trip(
                    "gate",
                    b["index"],
                    gate["evaluated_at"],
                    gate["reason"],
                    phase=gate["verdict"],
                    failing=failing,
                    summary=gate["summary"],
                    segment=gate["segment"],
                )
            )
    for d in report["decisions"]:
        if d["decision"] in ("stop", "reject"):
            why = (
                f"{d['kind']} {d['decision']} by {d['actor'] or '?'}"
                + (" (timed out)" if d["timed_out"] else "")
                + (f": {d['reason']}" if d["reason"] else "")
            )
            what = "stop" if d["decision"] == "stop" else "approval"
            found.append(_trip(what, d["batch"], d["at"], why, phase=d["decision"]))
    rollback = report["rollback"]
    counts = rollback["counts"] if rollback else {}
    if rollback and (counts["broken"] or counts["failed"]):
        why = f"{counts['failed']} rollback(s) failed, {counts['broken']} tenant(s) not back"
        found.append(_trip("rollback", None, rollback["ended_at"], why, phase="rollback_failed"))
    return found


def _deviations(batches: list[dict[str, Any]], facts: Facts) -> list[dict[str, Any]]:
    """Each judged value of a batch that did not pass, against the same metric in the
    pre-upgrade baseline (the batch's tenants pooled, or the tenant's own)."""
    rows: list[dict[str, Any]] = []
    for b in batches:
        if b["gate"]["verdict"] in (None, "pass"):
            continue
        listed = 0
        for m in b["gate"]["measurements"]:
            if m["tenant"] and m["phase"] == "pass":
                continue
            if listed >= _LISTED_DEVIATIONS:
                break
            tenants = (
                [m["tenant"]]
                if m["tenant"]
                else (
                    _cumulative(batches, b["index"]) if m["scope"] == "cumulative" else b["tenants"]
                )
            )
            base = _baseline_value(m["metric"], tenants, facts.baseline)
            value = m["value"]
            rows.append(
                {
                    "batch": b["index"],
                    "metric": m["metric"],
                    "scope": m["scope"],
                    "tenant": m["tenant"],
                    "value": value,
                    "baseline": base,
                    "delta": None if value is None or base is None else value - base,
                    "relative": ratio(value, base, minus_one=True),
                    "limit": m["limit"],
                    "threshold": m["threshold"],
                    "phase": m["phase"],
                }
            )
            listed += 1
    return rows


def _cumulative(batches: list[dict[str, Any]], up_to: int) -> list[str]:
    return [t for x in batches if x["index"] <= up_to for t in x["tenants"]]


def _baseline_value(
    metric: str | None, tenants: list[str], baseline: Mapping[str, Any]
) -> float | None:
    stats = [TenantStats.from_json(baseline[t]) for t in tenants if t in baseline]
    try:
        return metric_value(metric or "", stats)
    except ValueError:  # not a monitoring metric (e.g. failed_deploys): no baseline
        return None


def _impact(
    report: Mapping[str, Any], run: RunRecord | None, facts: Facts, now: datetime
) -> dict[str, Any]:
    """Who ran the new version, and for how long: from each tenant's upgrade to its rollback
    (or to the run's end, when it stayed on it)."""
    end_of_run = (run.ended_at if run else None) or now
    exposed: list[tuple[str, datetime, datetime]] = []
    for tenant, action in facts.upgrades.items():
        if action.state != "succeeded" or action.noop or action.finished_at is None:
            continue
        back = facts.rollbacks.get(tenant)
        until = (
            back.finished_at
            if back and back.state == "succeeded" and back.finished_at
            else end_of_run
        )
        exposed.append((tenant, action.finished_at, until))
    minutes = [max(0.0, (until - since).total_seconds() / 60) for _, since, until in exposed]
    first = min((since for _, since, _ in exposed), default=None)
    last = max((until for _, _, until in exposed), default=None)
    recovered = sum(
        1 for t, _, _ in exposed if t in facts.rollbacks and facts.rollbacks[t].state == "succeeded"
    )
    return {
        "tenants_exposed": len(exposed),
        "tenants_recovered": recovered,
        "tenants_still_on_new_version": len(exposed) - recovered,
        "first_exposed_at": iso(first),
        "last_exposed_at": iso(last),
        "exposure_minutes": minutes_between(first, last),
        "tenant_minutes": round(sum(minutes), 2),
        "max_tenant_minutes": round(max(minutes), 2) if minutes else 0.0,
        "exposed_batches": sorted(
            {b["index"] for b in report["batches"] if b["deploy"]["succeeded"]}
        ),
    }


def _follow_up(
    report: Mapping[str, Any], tripped: list[dict[str, Any]], impact: Mapping[str, Any]
) -> list[str]:
    """A checklist tailored to what went wrong; generic items last."""
    run, versions = report["run"], report["versions"]
    items: list[str] = []
    for t in tripped:
        items.extend(_follow_up_for(t, run, versions))
    rollback = report["rollback"]
    if rollback and rollback["within_deadline"] is False:
        items.append(
            f"Find why the rollback took {rollback['duration_ms'] / 1000:.0f}s, over the "
            f"{rollback['deadline_ms'] / 1000:.0f}s deadline (concurrency, platform latency)."
        )
    if run["outcome"] == "partially_promoted":
        items.append(
            f"Bring the {report['tenants']['not_on_target']} tenant(s) not on "
            f"{versions['to']} to one version: retry them or roll them back."
        )
    if impact["tenants_still_on_new_version"] and run["outcome"] != "partially_promoted":
        items.append(
            f"{impact['tenants_still_on_new_version']} tenant(s) still run {versions['to']}: "
            "decide whether they stay there."
        )
    if run["outcome"] in POSTMORTEM_OUTCOMES:
        items += [
            "Decide how to go on: a fixed version, or stay on "
            f"{versions['from'] or 'the old version'}.",
            "If the gate was wrong (false alarm), tune its checks in the policy and say why.",
            "Link this post-mortem and report.json in the change record; tell the owners.",
        ]
    return items


def _follow_up_for(
    t: Mapping[str, Any], run: Mapping[str, Any], versions: Mapping[str, Any]
) -> list[str]:
    what = t["what"]
    if what == "preflight":
        return [f"Fix what stopped the run before its batches: {t['reason']}; then trigger again."]
    if what == "gate":
        metrics = sorted({m["metric"] for m in t.get("measurements", [])})
        if t["phase"] == "no_data":
            return [
                f"Check monitoring coverage of batch {t['batch']} ({t['reason']}): a tenant "
                "silent since its upgrade may have crashed."
            ]
        if t["phase"] == "error":
            return [
                f"Fix the monitoring source the gate of batch {t['batch']} could not read "
                f"({t['reason']}): check the connection, its credentials and the queries."
            ]
        return [
            f"Find the cause of the {', '.join(metrics) or t['phase']} breach in batch "
            f"{t['batch']} on {versions['to']} ({t['reason']})."
        ]
    if what == "rollback":
        return ["Repair the tenants that did not come back (rollback.tenants, verified = false)."]
    return [f"Record why the run stopped ({t['reason']}) and when it may go on."]
