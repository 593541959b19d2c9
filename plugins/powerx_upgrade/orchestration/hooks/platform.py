"""The PowerX platform: tenants of a plugin, and per-tenant upgrade and rollback."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from powerx_upgrade.orchestration.hooks.base import PowerXHttpHook


class PowerXPlatformHook(PowerXHttpHook):
    """Tenant listing, upgrade and rollback (docs/platform-contract.md)."""

    default_conn_name = "powerx_platform"
    hook_name = "PowerX platform"

    def list_tenants(self, plugin: str) -> list[dict[str, Any]]:
        return self.call("GET", f"internal/plugins/{quote(plugin)}/tenants")["tenants"]

    def get_tenant(self, plugin: str, tenant: str) -> dict[str, Any]:
        return self.call("GET", f"internal/plugins/{quote(plugin)}/tenants/{quote(tenant)}")

    def upgrade(
        self,
        plugin: str,
        tenant: str,
        *,
        version: str,
        artifact: dict[str, Any],
        idempotency_key: str,
    ) -> dict[str, Any]:
        """Upgrade one tenant; a replay with the same key returns the first answer."""
        return self.call(
            "POST",
            f"internal/plugins/{quote(plugin)}/tenants/{quote(tenant)}/upgrade",
            {"version": version, "artifact": artifact, "idempotency_key": idempotency_key},
        )

    def rollback(
        self,
        plugin: str,
        tenant: str,
        *,
        to_version: str | None,
        idempotency_key: str,
        restore_config: bool = True,
    ) -> dict[str, Any]:
        """Roll one tenant back to `to_version` (its previous version) and restore its config."""
        return self.call(
            "POST",
            f"internal/plugins/{quote(plugin)}/tenants/{quote(tenant)}/rollback",
            {
                "to_version": to_version,
                "restore_config": restore_config,
                "idempotency_key": idempotency_key,
            },
        )
