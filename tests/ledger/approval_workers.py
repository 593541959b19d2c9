"""Process entry point for the approval replay race (importable under `spawn`)."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from powerx_upgrade.ledger import ApprovalReplayed, AuditEntry, Ledger


def use_once(url: str, jti: str, name: str, barrier: Any, out: Any) -> None:
    """Open the ledger, wait for the other process, then try to use the same token."""
    try:
        ledger = Ledger(url)
        barrier.wait(timeout=20)
        now = datetime.now(UTC)
        try:
            ledger.use_approval(
                jti=jti,
                action="rollback",
                plan_id="crm-sync-standard",
                run_id="run-1",
                subject=name,
                via="api",
                mfa=True,
                issued_at=now,
                expires_at=now + timedelta(minutes=5),
                audit=AuditEntry("approval.accepted", {"by": name}),
            )
        except ApprovalReplayed:
            out.put(("replayed", name))
            return
        out.put(("used", name))
    except BaseException:
        out.put(("error", traceback.format_exc()))
