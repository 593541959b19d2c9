"""The batch gate's trigger: polls monitoring on the triggerer's event loop until a verdict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from powerx_upgrade.domain.alerts import (
    BATCH_RUNTIME,
    MONITORING_DATA_MISSING,
    Alert,
    batch_runtime_alert,
    missing_data_alert,
)
from powerx_upgrade.domain.models import GateSpec
from powerx_upgrade.orchestration.hooks.monitoring import PowerXMonitoringAsyncHook
from powerx_upgrade.rollout.gating import GatePoller


class BatchGateTrigger(BaseTrigger):
    """Poke the gate every `poke_interval` until it reaches a final verdict.

    :param gate: the policy's gate, as JSON (`GateSpec.model_dump(mode="json")`).
    :param watch: what to watch (`rollout.gating.gate_watch`): tenants, baseline, bake.
    :param state: the poller's state so far (failures, last fresh data, alerts raised, history).
    :param limits: alert thresholds in seconds: `batch_runtime`, `missing_data`.
    :param conn_id: the monitoring connection.
    :param names: canonical metric -> the monitoring provider's name (config, not code).

    It always ends with exactly one event:
    `{"status": "done", "evaluation": {...}, "state": {...}}` at a verdict;
    `{"status": "alert", "alert": {...}, "state": {...}}` when an alert is due while the bake
    goes on (the sensor raises it and defers again with the state);
    `{"status": "error", "message": ...}` if something unexpected broke (the sensor then
    treats the gate as failed: a gate never passes by accident).
    """

    def __init__(
        self,
        gate: dict[str, Any],
        watch: dict[str, Any],
        state: dict[str, Any],
        limits: dict[str, float] | None = None,
        conn_id: str = "powerx_monitoring",
        names: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.gate = gate
        self.watch = watch
        self.state = state
        self.limits = limits or {}
        self.conn_id = conn_id
        self.names = names

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "gate": self.gate,
                "watch": self.watch,
                "state": self.state,
                "limits": self.limits,
                "conn_id": self.conn_id,
                "names": self.names,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            spec = GateSpec.model_validate(self.gate)
            hook = PowerXMonitoringAsyncHook(self.conn_id, names=self.names)
            plugin = self.watch["plugin"]

            async def query(tenants: list[str], start: datetime, end: datetime) -> dict[str, Any]:
                return await hook.query(plugin, tenants, start, end)

            poller = GatePoller(spec, self.watch, query, **self.state)
            interval = spec.poke_interval.total_seconds()
            while True:
                now = datetime.now(UTC)
                result = await poller.poke(now)
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
                alert = due_alert(poller, now, self.limits)
                if alert is not None:
                    poller.alerted.append(alert.rule)
                    yield TriggerEvent(
                        {"status": "alert", "alert": alert.as_dict(), "state": poller.state()}
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


def due_alert(poller: GatePoller, now: datetime, limits: dict[str, float]) -> Alert | None:
    """The first alert that is due and not yet raised for this batch."""
    batch = int(poller.watch.get("batch") or 0)
    if BATCH_RUNTIME not in poller.alerted and "batch_runtime" in limits:
        alert = batch_runtime_alert(
            batch, poller.runtime(now), timedelta(seconds=limits["batch_runtime"])
        )
        if alert:
            return alert
    if MONITORING_DATA_MISSING not in poller.alerted and "missing_data" in limits:
        return missing_data_alert(
            batch, poller.silent_for(now), timedelta(seconds=limits["missing_data"])
        )
    return None
