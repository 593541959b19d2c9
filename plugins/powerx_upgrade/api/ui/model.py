"""What the UI pages show, as plain dicts for the templates: a run's Rollout tab from its report
document (built from the ledger while the run goes on, the stored report once it has ended), and
the Grey upgrades page (fleet, active runs, what waits for a human). Every source that cannot be
read is logged, counted on the page and said there, never shown as "nothing"."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from powerx_upgrade.airflow_client import CONTROL_PLANE_PREFIX
from powerx_upgrade.api.auth import Caller, require
from powerx_upgrade.api.errors import Refused
from powerx_upgrade.api.settings import ApiSettings
from powerx_upgrade.ledger import Ledger, RunRecord
from powerx_upgrade.reporting.charts import format_metric, gate_charts
from powerx_upgrade.rollout import evidence

log = logging.getLogger(__name__)

TOKEN_ACTIONS = {
    "approve": "approve",
    "reject": "approve",
    "resume": "resume",
    "pause": "takeover",
    "rollback": "rollback",
}
"""The approval token's `action` each button needs (docs/control-plane.md)."""
STATUS_WORDS = {
    "passed": "passed its gate",
    "failed": "failed its gate",
    "no_verdict": "deploying or baking",
    "rejected": "rejected",
    "not_run": "not started",
}
FILTERS = {"metric": lambda v, m, relative=False: format_metric(m, v, relative=relative)}


def ui_root() -> str:
    """The Airflow UI's path prefix (`[api] base_url`'s path; '' at the root)."""
    from urllib.parse import urlsplit

    from powerx_upgrade.orchestration.operators.report import api_base_url

    try:
        base = api_base_url() or ""
    except Exception:  # no Airflow config here (unit tests): the UI at the root
        log.warning("[api] base_url unreadable: UI links assume Airflow at the root")
        return ""
    return urlsplit(base).path.rstrip("/")


def tab_path(dag_id: str, run_id: str) -> str:
    """The Rollout page of a run, opened inside the same iframe: Airflow's iframe sandbox allows
    neither popups nor navigating the top window."""
    from urllib.parse import urlencode

    query = urlencode({"dag_id": dag_id, "run_id": run_id})
    return f"{ui_root()}{CONTROL_PLANE_PREFIX}/ui/rollout?{query}"


# -- the Rollout tab ----------------------------------------------------------------------------


def rollout_page(settings: ApiSettings, caller: Caller, dag_id: str, run_id: str) -> dict[str, Any]:
    require(settings.auth, caller, method="GET", dag_id=dag_id)
    ledger = settings.ledger()
    run = ledger.get_run(run_id)
    base: dict[str, Any] = {"dag_id": dag_id, "run_id": run_id, "stamp": _now()}
    if run is None or run.dag_id != dag_id:
        return {**base, "known": False, "active": True, "waiting": [], "can_act": False}
    can_act = settings.auth.may(caller, method="PUT", dag_id=dag_id, entity="run")
    report, source = _report(settings, ledger, run)
    waiting, waiting_error = _waiting(settings, caller, run) if run.active else ([], None)
    batches = [_batch(b) for b in report["batches"]]
    return {
        **base,
        "known": True,
        "active": run.active,
        "can_act": can_act,
        "source": source,
        "run": report["run"],
        "plan_id": run.plan_id,
        "plugin": run.plugin,
        "target_version": run.target_version,
        "status": run.status,
        "outcome": run.outcome,
        "headline": report.get("headline"),
        "tenants": report["tenants"],
        "batches": batches,
        "current": next((b for b in batches if b["status"] == "no_verdict"), None),
        "rollback": report.get("rollback"),
        "decisions": report.get("decisions") or [],
        "waiting": waiting,
        "waiting_error": waiting_error,
        "report_url": f"{ui_root()}{CONTROL_PLANE_PREFIX}/runs/{run_id}/report",
        "token_actions": TOKEN_ACTIONS,
        "pokes": sum(b["pokes"] for b in batches),
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def _report(settings: ApiSettings, ledger: Ledger, run: RunRecord) -> tuple[dict[str, Any], str]:
    """The live report while the run goes on; the stored one once it has ended."""
    from powerx_upgrade.api.views import read_stored
    from powerx_upgrade.reporting import report_from_ledger
    from powerx_upgrade.rollout.alerts import alerts_of

    if not run.active:
        try:
            stored = read_stored(run.plan_id, run.run_id, "report.json", base=settings.reports_base)
        except Exception:
            log.exception("the stored report of %s could not be read", run.run_id)
            stored = None
        if stored is not None:
            return json.loads(stored), "report"
    document = report_from_ledger(ledger, run.run_id, alerts=alerts_of(ledger, run.run_id))
    return document, "live" if run.active else "ledger"


def _batch(b: dict[str, Any]) -> dict[str, Any]:
    gate = b.get("gate") or {}
    latest = []
    for series in gate.get("series") or []:
        points = series.get("points") or []
        if not points:
            continue
        last = points[-1]
        relative = bool(series.get("per_tenant"))
        latest.append(
            {
                "metric": series.get("metric"),
                "scope": series.get("scope"),
                "value": format_metric(series.get("metric"), last.get("value"), relative=relative),
                "limit": "100% of each tenant's own limit"
                if relative
                else f"{series.get('op') or ''} "
                + format_metric(series.get("metric"), last.get("threshold")),
                "phase": last.get("phase"),
                "at": last.get("at"),
                "worst": last.get("tenant"),
                "breaching": last.get("breaching"),
            }
        )
    return {
        **b,
        "status_words": STATUS_WORDS.get(b.get("status", ""), b.get("status")),
        "in_words": evidence.gate_in_words(b) if gate.get("verdict") else None,
        "latest": latest,
        "pokes": int(gate.get("pokes") or 0),
        "charts": gate_charts(b),
    }


def _waiting(
    settings: ApiSettings, caller: Caller, run: RunRecord
) -> tuple[list[dict[str, Any]], str | None]:
    """The run's waiting human decisions, with who may answer (Airflow's REST API as the
    caller); the reason when Airflow cannot be asked."""
    from powerx_upgrade.api.airflow_rest import AirflowRest

    try:
        found = AirflowRest(settings.airflow_url(), caller.token).waiting(run.dag_id, run.run_id)
    except Refused as exc:
        log.warning("waiting requests of %s unreadable: %s", run.run_id, exc.message)
        return [], f"Airflow's waiting requests could not be read ({exc.code}): {exc.message}"
    mfa = _mfa_actions(settings, run)
    return [_waiting_entry(w, run, mfa) for w in found], None


def _waiting_entry(waiting: dict[str, Any], run: RunRecord, mfa: set[str]) -> dict[str, Any]:
    task_id = str(waiting.get("task_id") or "")
    kind = "approval" if task_id.endswith(".approve") else "pause"
    action = "approve" if kind == "approval" else "resume"
    users = [u.get("name") or u.get("id") for u in waiting.get("assigned_users") or []]
    who = (
        "only " + ", ".join(str(u) for u in users)
        if users
        else f"anyone who may edit runs of {run.dag_id}"
    )
    group = task_id.split(".", 1)[0]
    return {
        "task_id": task_id,
        "kind": kind,
        "batch": int(group[6:]) if group.startswith("batch_") and group[6:].isdigit() else None,
        "line": evidence.waiting_line(task_id, waiting.get("created_at")),
        "subject": waiting.get("subject"),
        "options": waiting.get("options") or [],
        "who": who,
        "token": f"an approval token with action '{action}'"
        + (" and MFA" if action in mfa else ""),
        "run_id": run.run_id,
        "dag_id": run.dag_id,
        "plan_id": run.plan_id,
        "tab": tab_path(run.dag_id, run.run_id),
    }


def _mfa_actions(settings: ApiSettings, run: RunRecord) -> set[str]:
    from powerx_upgrade.api.steps import plan_of

    try:
        return set(plan_of(settings, run).policy.control.require_mfa_for)
    except Refused as exc:  # the plan left the config: the strictest rules apply
        log.warning("plan of %s unreadable for its MFA rules: %s", run.run_id, exc.message)
        return set(TOKEN_ACTIONS.values())


# -- the Grey upgrades page ---------------------------------------------------------------------


def fleet_page(settings: ApiSettings, caller: Caller) -> dict[str, Any]:
    ledger = settings.ledger()
    problems: list[str] = []
    runs = [r for r in ledger.runs(limit=500) if _may_see(settings, caller, r.dag_id)]
    active = [r for r in runs if r.active]
    plugins = sorted({r.plugin for r in runs} | _config_plugins(settings, problems))
    fleet = [_plugin_fleet(settings, ledger, p, runs, problems) for p in plugins]
    progress = [_progress(ledger, r) for r in active]
    waiting: list[dict[str, Any]] = []
    for run in active:
        found, error = _waiting(settings, caller, run)
        waiting += found
        if error:
            problems.append(f"run {run.run_id}: {error}")
    recent = [
        {
            "run_id": r.run_id,
            "plan_id": r.plan_id,
            "outcome": r.outcome,
            "target_version": r.target_version,
            "ended_at": r.ended_at,
            "tab": tab_path(r.dag_id, r.run_id),
        }
        for r in runs
        if not r.active
    ][:10]
    return {
        "fleet": fleet,
        "active": progress,
        "waiting": waiting,
        "recent": recent,
        "problems": problems,
        "stamp": _now(),
    }


def _may_see(settings: ApiSettings, caller: Caller, dag_id: str) -> bool:
    return settings.auth.may(caller, method="GET", dag_id=dag_id, entity="run")


def _config_plugins(settings: ApiSettings, problems: list[str]) -> set[str]:
    from powerx_upgrade.config import load_config

    try:
        return {plan.plugin for plan in load_config([settings.config_dir()]).plans.values()}
    except Exception as exc:
        log.exception("the plan config could not be read for the Grey upgrades page")
        problems.append(f"the plan config could not be read: {exc}")
        return set()


def _plugin_fleet(
    settings: ApiSettings,
    ledger: Ledger,
    plugin: str,
    runs: list[RunRecord],
    problems: list[str],
) -> dict[str, Any]:
    from powerx_upgrade.rollout.reconcile import expected_versions, version_drift

    try:
        tenants = settings.platform_tenants(plugin)
    except Exception as exc:
        log.exception("the platform's tenants of %s could not be read", plugin)
        problems.append(f"{plugin}: the platform's tenant list could not be read: {exc}")
        return {"plugin": plugin, "error": str(exc), "versions": [], "drift": [], "total": 0}
    counts = Counter(str(t.get("version")) for t in tenants)
    by_id = {str(t.get("id")): t for t in tenants}
    drift = version_drift(expected_versions(ledger, plugin, runs), by_id)
    return {
        "plugin": plugin,
        "error": None,
        "total": len(tenants),
        "versions": sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])),
        "drift": [f.as_dict() for f in drift],
    }


def _progress(ledger: Ledger, run: RunRecord) -> dict[str, Any]:
    from powerx_upgrade.reporting import report_from_ledger

    batches = report_from_ledger(ledger, run.run_id)["batches"]
    done = [b for b in batches if b["status"] in ("passed", "failed")]
    current = next((b for b in batches if b["status"] == "no_verdict"), None)
    return {
        "run_id": run.run_id,
        "plan_id": run.plan_id,
        "plugin": run.plugin,
        "target_version": run.target_version,
        "status": run.status,
        "batches": len(batches),
        "done": len(done),
        "current": current["index"] if current else None,
        "percent": round(100 * len(done) / len(batches)) if batches else 0,
        "tab": tab_path(run.dag_id, run.run_id),
    }
