"""Raising an alert: once per run, rule and batch; notified, audited and counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from powerx_upgrade.domain.alerts import EVENT, Alert
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.record import Recorder, stable_id

Counter = Callable[[str, dict[str, str]], None]
"""Counts a metric: (name, tags)."""

AUDIT_PREFIX = "alert."


def alert_key(ctx: RunContext, alert: Alert) -> str:
    return f"{ctx.run_id}:alert:{alert.rule}:{alert.batch}"


def raise_alert(
    recorder: Recorder,
    ctx: RunContext,
    alert: Alert,
    *,
    channels: list[str] | None = None,
    count: Counter | None = None,
    notify: bool = True,
) -> bool:
    """Send the alert unless this run already raised it for the same rule and batch; `notify`
    False (the plan's `notify.on` leaves out `alert`) audits and counts it without a message.

    The audit record (deterministic id) is the memory: it lives in the ledger's outbox, so the
    once-only rule holds across task retries and processes. Returns whether it was new.
    """
    key = alert_key(ctx, alert)
    audit_id = stable_id(key)
    if any(r.audit_id == audit_id for r in recorder.ledger.audit_records(ctx.run_id)):
        return False
    recorder.audit(
        ctx,
        f"{AUDIT_PREFIX}{alert.rule}",
        audit_id=key,
        details={**alert.as_dict(), "event": EVENT},
    )
    if notify:
        recorder.notify(
            ctx,
            EVENT,
            key=f"alert:{alert.rule}:{alert.batch}",
            severity=alert.severity,
            title=f"[{alert.severity}] {ctx.plan_id}: {alert.rule.replace('_', ' ')}",
            message=alert.message,
            channels=channels or [],
            context={"rule": alert.rule, "batch": alert.batch, **dict(alert.context)},
        )
    if count is not None:
        count(
            "version.upgrade.alert_total",
            {
                "plan": ctx.plan_id,
                "plugin": ctx.plugin,
                "rule": alert.rule,
                "batch": str(alert.batch or "-"),
            },
        )
    recorder.flush()
    return True


def alerts_of(ledger: Ledger, run_id: str) -> list[dict[str, Any]]:
    """The alerts a run raised, oldest first (for the report)."""
    found = []
    for record in ledger.audit_records(run_id):
        if record.event.startswith(AUDIT_PREFIX):
            details = dict(record.payload.get("details") or {})
            found.append({**details, "at": record.created_at.isoformat()})
    return found
