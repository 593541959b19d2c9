"""The notification service: run events and alerts to the plan's channels."""

from __future__ import annotations

from typing import Any

from powerx_upgrade.orchestration.hooks.base import PowerXHttpHook


class PowerXNotifyHook(PowerXHttpHook):
    """`POST /internal/notify/version`; idempotent by `id`."""

    default_conn_name = "powerx_notify"
    hook_name = "PowerX notify"

    def send(self, notification: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "internal/notify/version", notification)
