"""The evidence a person needs to answer a batch approval or a gate pause, in words: each finished
batch's gate result (metric, value, limit, samples), the link to the run's Rollout tab, and what
the run waits for (`batch 2 waits for approval since 17:22:50`).

Built from the report document's batch sections (`reporting.report_from_ledger`), so the HITL
text, the Rollout tab and the report say the same thing. No Airflow import.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.reporting.charts import format_metric

ROLLOUT_ROUTE = "powerx-rollout"
"""The Rollout tab's `url_route` on a DAG run (api/plugin.py registers it)."""
FLEET_ROUTE = "grey-upgrades"
"""The Grey upgrades page's `url_route` in the navigation."""

VERDICT_WORDS = {
    "pass": "passed",
    "fail": "failed",
    "no_data": "had no data",
    "inconclusive": "was inconclusive",
    "rollback_requested": "was stopped by a rollback request",
    "pause_requested": "was stopped by a pause request",
}
WAIT_WORDS = {"approve": "approval", "pause": "a decision after its pause"}


def rollout_tab_url(base_url: str | None, dag_id: str, run_id: str) -> str | None:
    """The Airflow UI's Rollout tab of a run (None without the UI's base URL)."""
    if not base_url:
        return None
    return (
        f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
        f"/plugin/{ROLLOUT_ROUTE}"
    )


def measurement_in_words(m: Mapping[str, Any]) -> str:
    """`error_rate 0.40% (limit <= 5.00%, 1,200 samples): pass`; a per-tenant check names its
    tenant."""
    metric = m.get("metric") or f"check {m.get('check')}"
    value = format_metric(metric, m.get("value"))
    limit = format_metric(metric, m.get("threshold"))
    if m.get("limit") is not None and str(m.get("limit")) not in (limit, str(m.get("threshold"))):
        limit = f"{limit}, from {m.get('limit')}"
    samples = m.get("samples")
    counted = f", {samples:,} samples" if isinstance(samples, int) else ", samples unknown"
    who = f" on {m['tenant']}" if m.get("tenant") else ""
    return f"{metric}{who} {value} (limit {m.get('op') or ''} {limit}{counted}): {m.get('phase')}"


def gate_in_words(batch: Mapping[str, Any], *, per_tenant_shown: int = 3) -> str:
    """One finished batch's gate result: `Batch 1 (canary, 5 tenants) passed its gate:
    error_rate 0.40% (limit <= 5.00%, 1,200 samples): pass; ...`."""
    gate = batch.get("gate") or {}
    head = f"Batch {batch['index']} ({batch.get('name')}, {batch.get('size', 0)} tenants)"
    verdict = gate.get("verdict")
    if verdict is None:
        return f"{head}: no gate verdict ({batch.get('status', 'not run')})"
    said = f"{head} {VERDICT_WORDS.get(verdict, verdict)} its gate"
    measurements = list(gate.get("measurements") or [])
    whole = [m for m in measurements if not m.get("tenant")]
    tenants = [m for m in measurements if m.get("tenant")]
    parts = [measurement_in_words(m) for m in whole]
    if tenants:
        failing = [m for m in tenants if m.get("phase") == "fail"]
        shown = (failing or sorted(tenants, key=lambda m: -(m.get("ratio") or 0)))[
            :per_tenant_shown
        ]
        parts.append(
            f"{len(failing)} of {len(tenants)} per-tenant measurements over their limit"
            + (" (worst: " + "; ".join(measurement_in_words(m) for m in shown) + ")")
        )
    reason = gate.get("summary") or gate.get("reason")
    text = said + (": " + "; ".join(parts) if parts else "")
    return text + (f". Verdict: {reason}" if reason else "")


def finished_batches(batches: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [b for b in batches if (b.get("gate") or {}).get("verdict") is not None]


def evidence_text(batches: Iterable[Mapping[str, Any]], rollout_url: str | None) -> str:
    """Markdown for a HITL body: one bullet per finished batch, then the Rollout tab link."""
    lines = [f"- {gate_in_words(b)}" for b in finished_batches(batches)]
    text = "Gate results so far:\n" + "\n".join(lines) if lines else "No batch has finished yet."
    if rollout_url:
        text += f"\n\nLive values and the batches' timeline: [Rollout tab]({rollout_url})"
    return text


def run_evidence(ledger: Ledger, run_id: str, rollout_url: str | None) -> str:
    """`evidence_text` over what the ledger holds for the run now."""
    from powerx_upgrade.reporting import report_from_ledger

    return evidence_text(report_from_ledger(ledger, run_id)["batches"], rollout_url)


def waiting_line(task_id: str, since: datetime | str | None) -> str:
    """What a run waits for, from its waiting HITL task: `batch 2 waits for approval since
    17:22:50` (UTC clock time)."""
    group, _, kind = task_id.partition(".")
    who = group.replace("_", " ") if group.startswith("batch_") else task_id
    what = WAIT_WORDS.get(kind, "a human")
    line = f"{who} waits for {what}"
    if since is None or since == "":
        return line
    if isinstance(since, datetime):
        return f"{line} since {since:%H:%M:%S}"
    try:
        return f"{line} since {datetime.fromisoformat(since.replace('Z', '+00:00')):%H:%M:%S}"
    except ValueError:  # said as it came: the reader sees the odd value, nothing is hidden
        return f"{line} since {since!r} (not a timestamp)"
