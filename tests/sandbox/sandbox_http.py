"""Request helpers shared by the sandbox tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

SHA = hashlib.sha256(b"crm-sync").hexdigest()


def upgrade_body(version: str = "2.4.0", key: str = "k-1") -> dict:
    return {
        "version": version,
        "artifact": {"uri": f"s3://releases/crm-sync-{version}.tgz", "sha256": SHA},
        "idempotency_key": key,
    }


def tenant_path(tenant: str, action: str = "") -> str:
    path = f"/internal/plugins/crm-sync/tenants/{tenant}"
    return f"{path}/{action}" if action else path


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def window(seconds_ago: float, seconds: float, now: datetime | None = None) -> tuple[str, str]:
    """(start, end) ISO texts of an interval that started `seconds_ago` and lasts `seconds`."""
    now = now or datetime.now(UTC)
    start = now - timedelta(seconds=seconds_ago)
    return iso(start), iso(start + timedelta(seconds=seconds))
