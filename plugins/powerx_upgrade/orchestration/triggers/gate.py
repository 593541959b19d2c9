"""The batch gate's trigger: polls monitoring on the triggerer's event loop until a verdict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from powerx_upgrade.domain.gate import MonitoringError
from powerx_upgrade.domain.models import GateSpec
from powerx_upgrade.orchestration import runtime
from powerx_upgrade.orchestration.hooks.sources import async_query
from powerx_upgrade.rollout.controls import GateControls, gate_controls, requested_evaluation
from powerx_upgrade.rollout.gate_steps import due_alert, nothing_to_judge
from powerx_upgrade.rollout.gating import GatePoller

CONTROL_POLL_S = 1.0
"""How often a waiting gate reads its run's controls between metric pokes (one indexed ledger
read): the reaction time of a rollback or pause request."""


class BatchGateTrigger(BaseTrigger):
    """Poke the gate every `poke_interval` until it reaches a final verdict.

    :param gate: the policy's gate, as JSON (`GateSpec.model_dump(mode="json")`).
    :param watch: what to watch (`rollout.gating.gate_watch`): tenants, baseline, bake.
    :param state: the poller's state so far (failures, last fresh data, alerts raised, history).
    :param limits: alert thresholds in seconds: `batch_runtime`, `missing_data`.
    :param conn_id: the monitoring connection.
    :param names: canonical metric -> the monitoring provider's name (config, not code).
    :param run_id: the run, whose controls (ledger `powerx_ledger`) are read before each poke:
        a pending rollback or pause request ends the gate at once (`rollback_requested` /
        `pause_requested`, the event names the request under `control`); adjusted limits and
        bake apply from that poke on (the event's `state.applied_controls` lists the adjust
        requests put in force, for the sensor to settle). None: no controls (tests, tools).
    :param source: the plan's metric source (`hooks.sources.monitoring_source`: provider,
        connection, PromQL...); None: the PowerX service on `conn_id` with `names`.

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
        run_id: str | None = None,
        source: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.unreadable = 0
        """Control reads that failed in a row (the ledger unreachable): logged when a streak
        starts and when it ends, with the count, not once a second."""
        self.gate = gate
        self.watch = watch
        self.state = state
        self.limits = limits or {}
        self.conn_id = conn_id
        self.names = names
        self.run_id = run_id
        self.source = source

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
                "run_id": self.run_id,
                "source": self.source,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = await self._poll()
        except Exception as exc:
            event = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
        yield TriggerEvent(event)

    async def _poll(self) -> dict[str, Any]:
        """Poke every `poke_interval` until an event is due (a verdict, a request, an alert)."""
        spec = GateSpec.model_validate(self.gate)
        source = self.source or {"conn_id": self.conn_id, "names": self.names}
        state = dict(self.state)
        applied: list[dict[str, Any]] = list(state.pop("applied_controls", None) or [])
        poller = GatePoller(spec, self.watch, async_query(source, self.watch["plugin"]), **state)
        while True:
            event = await self._poke(poller, spec, applied, datetime.now(UTC))
            if event is not None:
                return event
            wake = datetime.now(UTC) + poller.next_poke_in(datetime.now(UTC))
            event = await self._watch_controls(poller, spec, applied, wake)
            if event is not None:
                return event

    async def _watch_controls(
        self, poller: GatePoller, spec: GateSpec, applied: list[dict[str, Any]], wake: datetime
    ) -> dict[str, Any] | None:
        """Wait for the next poke at `wake`, reading the run's controls every CONTROL_POLL_S
        meanwhile: an operator's rollback or pause request (one click, the API, the CLI) ends
        the gate within about a second, not at the next metric poke (`poke_interval`, 30 s by
        default). Adjustments found meanwhile are put in force at once too."""
        while (left := (wake - datetime.now(UTC)).total_seconds()) > 0:
            await asyncio.sleep(min(left, CONTROL_POLL_S))
            if not self.run_id or datetime.now(UTC) >= wake:
                continue
            found = await self._controls(spec)
            if found is not None:
                requested = self._apply(poller, found, applied, datetime.now(UTC))
                if requested is not None:
                    return requested
        return None

    async def _poke(
        self, poller: GatePoller, spec: GateSpec, applied: list[dict[str, Any]], now: datetime
    ) -> dict[str, Any] | None:
        """One poke: the run's controls first, then the metrics (not before the bake can be
        judged: `GatePoller.can_judge`, only alerts then); the event it ends on, if any."""
        found = await self._controls(spec)
        if found is not None:
            requested = self._apply(poller, found, applied, now)
            if requested is not None:
                return requested
        if not poller.can_judge(now):
            return self._alert_due(poller, applied, now, nothing_to_judge(poller))
        result = await poller.poke(now)
        if result.error is not None:
            self._log_error(result.error)
        state = {**poller.state(), "applied_controls": applied}
        if result.phase.final:
            evaluation = result.as_dict()
            return {
                "status": "done",
                "evaluation": evaluation,
                "pokes": poller.pokes,
                "state": state,
            }
        return self._alert_due(poller, applied, now, f"{result.phase.value} ({result.reason})")

    def _alert_due(
        self, poller: GatePoller, applied: list[dict[str, Any]], now: datetime, status: str
    ) -> dict[str, Any] | None:
        """The event of an alert now due, if any; else log where the gate stands."""
        alert = due_alert(poller, now, self.limits)
        if alert is not None:
            poller.alerted.append(alert.rule)
            state = {**poller.state(), "applied_controls": applied}
            return {"status": "alert", "alert": alert.as_dict(), "state": state}
        self.log.info("batch %s gate: %s", self.watch.get("batch"), status)
        return None

    def _log_error(self, error: MonitoringError) -> None:
        self.log.warning(
            "batch %s gate: monitoring error (%s, %s in a row, %s in all): %s",
            self.watch.get("batch"),
            error.kind,
            error.consecutive,
            error.total,
            error.message,
        )

    def _apply(
        self,
        poller: GatePoller,
        found: GateControls,
        applied: list[dict[str, Any]],
        now: datetime,
    ) -> dict[str, Any] | None:
        """Put the adjustments in force (noted for the sensor to settle); a pending rollback or
        pause request ends the gate: its event."""
        known = {a["id"] for a in applied}
        applied += [{"id": i, "at": now.isoformat()} for i in found.applied if i not in known]
        if found.request is not None:
            result = requested_evaluation(found.request, int(self.watch.get("batch") or 0))
            return {
                "status": "done",
                "evaluation": result.as_dict(),
                "pokes": poller.pokes,
                "state": {**poller.state(), "applied_controls": applied},
                "control": found.request.id,
            }
        poller.gate = found.gate
        poller.watch = {**poller.watch, "bake_seconds": found.bake_seconds}
        return None

    async def _controls(self, base: GateSpec) -> GateControls | None:
        """The run's controls, read in a thread (the ledger is synchronous); None without a run
        or when the ledger cannot be read now: the gate pokes on and reads again at the next
        control read. Unreadable controls are a warning when the first read of a streak fails
        and when reading works again (with how many failed): a request made meanwhile takes
        effect at the first read that works."""
        if not self.run_id:
            return None
        try:
            found = await asyncio.to_thread(read_gate_controls, self.run_id, base, self.watch)
        except Exception as exc:
            self.unreadable += 1
            if self.unreadable == 1:
                self.log.warning(
                    "batch %s gate: run controls not readable (%s: %s); poking on, a rollback "
                    "or pause request waits until they are",
                    self.watch.get("batch"),
                    type(exc).__name__,
                    exc,
                )
            return None
        if self.unreadable:
            self.log.warning(
                "batch %s gate: run controls readable again after %d failed read(s)",
                self.watch.get("batch"),
                self.unreadable,
            )
            self.unreadable = 0
        return found


def read_gate_controls(run_id: str, gate: GateSpec, watch: dict[str, Any]) -> GateControls:
    """The run's controls from the `powerx_ledger` connection's ledger (blocking I/O)."""
    return gate_controls(runtime.ledger(), run_id, gate, watch)
