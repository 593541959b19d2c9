"""The audit service: every upgrade, rollback, verdict and decision, delivered from the outbox."""

from __future__ import annotations

from typing import Any

from powerx_upgrade.orchestration.hooks.base import PowerXHttpHook


class PowerXAuditHook(PowerXHttpHook):
    """`POST /internal/audit/version`; idempotent by `id`, so redelivery is safe."""

    default_conn_name = "powerx_audit"
    hook_name = "PowerX audit"

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "internal/audit/version", record)
