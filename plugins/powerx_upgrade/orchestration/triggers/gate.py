"""The batch gate's trigger: polls monitoring on the triggerer's event loop until a verdict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from powerx_upgrade.domain.models import GateSpec
from powerx_upgrade.orchestration.hooks.monitoring import PowerXMonitoringAsyncHook
from powerx_upgrade.rollout.gating import GatePoller


class BatchGateTrigger(BaseTrigger):
    """Poke the gate every `poke_interval` until it reaches a final verdict.

    :param gate: the policy's gate, as JSON (`GateSpec.model_dump(mode="json")`).
    :param watch: what to watch (`rollout.gating.gate_watch`): tenants, baseline, bake.
    :param state: the poller's state so far (failures, last fresh data).
    :param conn_id: the monitoring connection.

    It always ends with exactly one event: `{"status": "done", "evaluation": {...}}`, or
    `{"status": "error", "message": ...}` if something unexpected broke (the sensor then treats
    the gate as failed: a gate never passes by accident).
    """

    def __init__(
        self,
        gate: dict[str, Any],
        watch: dict[str, Any],
        state: dict[str, Any],
        conn_id: str = "powerx_monitoring",
    ) -> None:
        super().__init__()
        self.gate = gate
        self.watch = watch
        self.state = state
        self.conn_id = conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"gate": self.gate, "watch": self.watch, "state": self.state, "conn_id": self.conn_id},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            spec = GateSpec.model_validate(self.gate)
            hook = PowerXMonitoringAsyncHook(self.conn_id)
            plugin = self.watch["plugin"]

            async def query(tenants: list[str], start: datetime, end: datetime) -> dict[str, Any]:
                return await hook.query(plugin, tenants, start, end)

            poller = GatePoller(spec, self.watch, query, **self.state)
            interval = spec.poke_interval.total_seconds()
            while True:
                result = await poller.poke(datetime.now(UTC))
                if result.phase.final:
                    yield TriggerEvent(
                        {
                            "status": "done",
                            "evaluation": result.as_dict(),
                            "pokes": poller.pokes,
                            "state": poller.state(),
                        }
                    )
                    return
                self.log.info(
                    "batch %s gate: %s (%s)",
                    self.watch.get("batch"),
                    result.phase.value,
                    result.reason,
                )
                await asyncio.sleep(interval)
        except Exception as exc:
            yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
