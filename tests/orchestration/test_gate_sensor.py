"""The gate sensor's deadline: it defers with a timeout, and a timeout becomes a no_data verdict
(which follows missing_data.action) instead of a task that waits forever or simply fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import TaskDeferred

from powerx_upgrade.config import load_config
from powerx_upgrade.orchestration.sensors.gate import BatchGateSensor
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.errors import PowerXRejected, PowerXUnavailable
from powerx_upgrade.rollout.gating import GatePoller, classify
from tests.airflow_harness import E2E_CONFIG

pytestmark = pytest.mark.dags

CTX = RunContext("run-1", "d", "crm-sync-e2e", "crm-sync", "2.4.0")


def sensor() -> BatchGateSensor:
    plan = load_config([E2E_CONFIG]).plans["crm-sync-e2e"]
    return BatchGateSensor(task_id="gate", plan=plan, batch=1)


def test_the_gate_defers_with_the_time_left_until_its_deadline():
    deadline = datetime.now(UTC) + timedelta(minutes=3)
    with pytest.raises(TaskDeferred) as deferred:
        sensor()._defer(CTX, {"plugin": "crm-sync"}, {"deadline": deadline.isoformat()})
    timeout = deferred.value.timeout
    assert timedelta(minutes=2, seconds=55) < timeout <= timedelta(minutes=3)


def test_a_deferral_timeout_becomes_a_no_data_verdict(monkeypatch):
    gate = sensor()
    finished = []
    monkeypatch.setattr(gate, "_finish", lambda context, result, state: finished.append(result))
    gate.resume_execution("__fail__", {"error": "Trigger timeout"}, {})
    assert finished[0].phase.value == "no_data"
    assert "deadline" in finished[0].reason


def test_the_deadline_is_fixed_at_the_first_deferral():
    plan = load_config([E2E_CONFIG]).plans["crm-sync-e2e"]
    started = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    watch = {"bake_started": started.isoformat(), "bake_seconds": 8}
    poller = GatePoller(plan.policy.gate, watch, query=None)  # type: ignore[arg-type]
    first = poller.deadline_from(started)
    # bake 8 s + signal_delay 2 s + max(missing_data.after 20 s, 4 x 2 s) + 10 min
    assert first == started + timedelta(seconds=8 + 2 + 20, minutes=10)
    assert poller.deadline_from(started + timedelta(minutes=5)) == first
    assert GatePoller(plan.policy.gate, watch, None, **poller.state()).deadline == first  # type: ignore[arg-type]


def test_monitoring_errors_are_classified_by_type_never_by_message():
    assert (
        classify(PowerXRejected("HTTP 401", method="POST", endpoint="q", status=401)) == "refused"
    )
    assert classify(PowerXUnavailable("HTTP 503", method="POST", endpoint="q")) == "unavailable"
    assert classify(ValueError("not json")) == "unavailable"


def test_the_trigger_pokes_when_the_bake_becomes_judgeable_not_a_whole_interval_later():
    plan = load_config([E2E_CONFIG]).plans["crm-sync-e2e"]
    started = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    watch = {"bake_started": started.isoformat(), "bake_seconds": 8}
    poller = GatePoller(plan.policy.gate, watch, query=None)  # type: ignore[arg-type]
    interval = plan.policy.gate.poke_interval  # 2 s; judgeable at bake 8 s + signal_delay 2 s
    assert poller.next_poke_in(started) == interval
    almost = started + timedelta(seconds=9, milliseconds=500)
    assert poller.next_poke_in(almost) == timedelta(milliseconds=550)
    assert poller.next_poke_in(started + timedelta(seconds=10)) == interval
    assert poller.next_poke_in(started + timedelta(seconds=30)) == interval
