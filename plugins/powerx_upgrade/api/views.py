"""What the API shows of a run: its state from the ledger (through the report model, so the API
and the report never disagree) and its stored report files."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from powerx_upgrade.api.errors import Refused
from powerx_upgrade.config import airflow_setting
from powerx_upgrade.ledger import Ledger, RunRecord

MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "json": "application/json",
}


def run_view(ledger: Ledger, run: RunRecord) -> dict[str, Any]:
    """`GET /runs/{run_id}`: batches and their verdicts, decisions, controls, approvals."""
    from powerx_upgrade.reporting import report_from_ledger
    from powerx_upgrade.rollout.alerts import alerts_of
    from powerx_upgrade.rollout.controls import takeover_active

    report = report_from_ledger(ledger, run.run_id, alerts=alerts_of(ledger, run.run_id))
    tenants = {k: v for k, v in report["tenants"].items() if k != "versions_before"}
    takeover = takeover_active(ledger, run.run_id)
    return {
        "run_id": run.run_id,
        "dag_id": run.dag_id,
        "plan_id": run.plan_id,
        "plugin": run.plugin,
        "status": run.status,
        "outcome": run.outcome,
        "target_version": run.target_version,
        "dry_run": run.dry_run,
        "started_at": report["run"]["started_at"],
        "ended_at": report["run"]["ended_at"],
        "tenants": tenants,
        "batches": [_batch(b) for b in report["batches"]],
        "rollback": report["rollback"],
        "decisions": report["decisions"],
        "alerts": report["alerts"],
        "controls": [c.to_json() for c in ledger.controls(run.run_id)],
        "approvals": [a.to_json() for a in ledger.approvals(run_id=run.run_id)],
        "takeover": takeover is not None,
        "takeover_by": takeover.actor if takeover is not None else None,
    }


def _batch(batch: dict[str, Any]) -> dict[str, Any]:
    deploy = batch["deploy"]
    return {
        "index": batch["index"],
        "name": batch["name"],
        "tenants": batch["size"],
        "status": batch["status"],
        "deployed": deploy["succeeded"],
        "failed": deploy["failed"] + deploy["not_finished"],
        "verdict": batch["gate"]["verdict"],
        "reason": batch["gate"]["reason"],
        "summary": batch["gate"]["summary"],
        "segment": batch["gate"]["segment"],
        "started_at": batch["started_at"],
        "ended_at": batch["ended_at"],
    }


def started_batches(ledger: Ledger, run: RunRecord) -> int:
    """How many of the run's batches have started deploying (the highest batch with an
    upgrade action)."""
    indexes = [a.batch_index or 0 for a in ledger.actions(run.run_id) if a.kind == "upgrade"]
    return max(indexes, default=0)


def report_response(ledger: Ledger, run: RunRecord, fmt: str, *, base: str | None) -> Response:
    """The run's stored report (`report.<fmt>`); while the run has none yet (still going), the
    report built from the ledger now, marked `X-PowerX-Report: live`."""
    name = f"report.{fmt}"
    stored = read_stored(run.plan_id, run.run_id, name, base=base)
    if stored is not None:
        return Response(stored, media_type=MEDIA_TYPES[fmt], headers={"X-PowerX-Report": "stored"})
    if run.active:
        from powerx_upgrade.reporting import render_reports, report_from_ledger
        from powerx_upgrade.rollout.alerts import alerts_of

        document = report_from_ledger(ledger, run.run_id, alerts=alerts_of(ledger, run.run_id))
        files = render_reports(document, templates=airflow_setting("templates"))
        live = {"X-PowerX-Report": "live"}
        return Response(files[name], media_type=MEDIA_TYPES[fmt], headers=live)
    raise Refused(
        404,
        "no_report",
        f"run {run.run_id} has ended but no {name} is stored for it (its finalize.report task "
        "did not write one; docs/reports.md says how to rebuild it from the ledger)",
        run_id=run.run_id,
    )


def read_stored(plan_id: str, run_id: str, name: str, *, base: str | None) -> str | None:
    """A stored report file's text, or None when there is none (local or object storage).
    The run's own folder first, then the folder of releases before hashed run folders."""
    from powerx_upgrade.reporting.store import legacy_report_dir, report_dir

    for directory in (report_dir(plan_id, run_id, base), legacy_report_dir(plan_id, run_id, base)):
        text = _read_location(f"{directory}/{name}")
        if text is not None:
            return text
    return None


def _read_location(location: str) -> str | None:
    if location.startswith("file://"):
        from pathlib import Path
        from urllib.parse import unquote, urlsplit

        path = Path(unquote(urlsplit(location).path))
        return path.read_text(encoding="utf-8") if path.is_file() else None
    from airflow.sdk import ObjectStoragePath

    target = ObjectStoragePath(location)
    return target.read_text(encoding="utf-8") if target.exists() else None
