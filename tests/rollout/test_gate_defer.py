"""The gate defers at once when nothing can be judged yet (issue 16 point 2): before the bake's
start plus `signal_delay` a poke's monitoring window is empty, so neither the sensor nor the
trigger pokes then; from that moment on they poke as before. Without Airflow."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from powerx_upgrade.domain.gate import Phase
from powerx_upgrade.domain.models import GateSpec, Plan, Policy, SourceRef, TenantSelection
from powerx_upgrade.domain.planner import Tenant, plan_batches
from powerx_upgrade.ledger import ActionOutcome, ActionStart, Ledger
from powerx_upgrade.rollout import gate_steps
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.gating import JUDGEABLE_MARGIN, GatePoller
from powerx_upgrade.rollout.metrics import NoMetrics
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.rollout.services import Services

pytestmark = pytest.mark.unit

START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
GATE = GateSpec.model_validate(
    {
        "poke_interval": "30s",
        "signal_delay": "1m",
        "checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}],
    }
)
CTX = RunContext("run-1", "plugin_upgrade__crm", "crm", "crm-sync", "2.4.0")


def poller(gate: GateSpec = GATE, bake_seconds: int = 300, query: Any = None) -> GatePoller:
    watch = {
        "plugin": "crm-sync",
        "batch": 1,
        "batch_tenants": ["t-00"],
        "cumulative_tenants": ["t-00"],
        "control_tenants": [],
        "pre_upgrade": {},
        "bake_started": START.isoformat(),
        "batch_started": START.isoformat(),
        "bake_seconds": bake_seconds,
    }
    return GatePoller(gate, watch, query)


def test_nothing_can_be_judged_before_the_bake_start_plus_signal_delay():
    gate = poller()
    assert gate.judgeable_from() == START + timedelta(minutes=1)
    assert not gate.can_judge(START)
    assert not gate.can_judge(START + timedelta(seconds=59, milliseconds=999))
    assert gate.can_judge(START + timedelta(minutes=1))  # inclusive: a 0 s bake ends right here
    assert gate.can_judge(START + timedelta(minutes=7))


def test_an_adjusted_signal_delay_moves_the_moment():
    gate = poller()
    gate.gate = GATE.model_copy(update={"signal_delay": timedelta(seconds=5)})
    assert gate.can_judge(START + timedelta(seconds=5))


def test_a_poke_before_that_moment_could_only_have_said_running_without_a_query():
    """What the skipped poke would have given (the reason it may be skipped)."""

    async def never(*_: Any) -> dict[str, Any]:
        raise AssertionError("no monitoring window yet: nothing to query")

    for bake in (0, 300):
        gate = poller(bake_seconds=bake, query=never)
        result = asyncio.run(gate.poke(START + timedelta(seconds=59)))
        assert result.phase is Phase.RUNNING and result.failures == 0
        assert gate.last_data_at is None and gate.errors_in_row == 0


def test_the_trigger_wakes_when_the_first_judged_poke_is_due():
    gate = poller(gate=GATE.model_copy(update={"poke_interval": timedelta(seconds=45)}))
    left = gate.next_poke_in(START + timedelta(seconds=20))
    assert left == timedelta(seconds=40) + JUDGEABLE_MARGIN
    assert gate.next_poke_in(START + timedelta(minutes=2)) == timedelta(seconds=45)


class Sent(NoMetrics):
    """The notify client (notifications kept) and the metrics sink (dropped) of the tests."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []

    def send(self, notification: dict[str, Any]) -> dict[str, Any]:
        self.notes.append(notification)
        return {}


def plan(signal_delay: str, max_batch_duration: str = "30m") -> Plan:
    policy = Policy.model_validate(
        {
            "batches": [{"ratio": 0.1, "bake": "5m"}, {"ratio": 1.0, "bake": "5m"}],
            "max_batch_duration": max_batch_duration,
            "gate": {
                "poke_interval": "30s",
                "signal_delay": signal_delay,
                "checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}],
            },
        }
    )
    return Plan(
        id="crm",
        source=SourceRef(file="plans.yaml"),
        plugin="crm-sync",
        policy_id="grey",
        policy=policy,
        tenants=TenantSelection(),
    )


@pytest.fixture
def services(tmp_path: Path) -> Services:
    """A run whose batch 1 (2 of 20 tenants) was deployed just now."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.start_run(
        CTX.run_id,
        dag_id=CTX.dag_id,
        plan_id=CTX.plan_id,
        plugin=CTX.plugin,
        target_version=CTX.target_version,
    )
    fleet = [Tenant(f"t-{i:02d}") for i in range(20)]
    batches = plan_batches(plan("1m"), fleet).batches
    ledger.update_run(CTX.run_id, batches=[b.as_dict() for b in batches])
    first = list(batches[0].as_dict()["tenants"])
    keys = [f"{CTX.run_id}:upgrade:{t}#1" for t in first]
    ledger.begin_actions(
        run_id=CTX.run_id,
        plugin=CTX.plugin,
        kind="upgrade",
        starts=[
            ActionStart(t, k, "2.4.0", batch_index=1, from_version="2.3.1")
            for t, k in zip(first, keys, strict=True)
        ],
    )
    ledger.finish_actions([ActionOutcome(k, "succeeded", to_version="2.4.0") for k in keys])
    sent = Sent()
    return Services(ledger, Recorder(ledger, None, sent), None, sent)  # type: ignore[arg-type]


class Counted:
    """A monitoring query that counts its calls and answers healthy data for every tenant."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, tenants: list[str], start: datetime, end: datetime) -> dict[str, Any]:
        self.calls += 1
        stats = {"requests": 1000, "errors": 1, "latency_p95_ms": 100, "samples": 10}
        return {"tenants": {t: stats for t in tenants}}


def test_the_sensor_defers_at_once_before_the_bake_can_be_judged(services):
    query = Counted()
    step = gate_steps.first_poke(services, plan("1m"), CTX, 1, query)
    assert step.verdict is None and query.calls == 0
    assert step.state["history"] == [] and step.state["failures"] == 0
    assert step.state["deadline"] is not None  # fixed now, as after a poke
    assert step.watch["batch"] == 1 and len(step.watch["batch_tenants"]) == 2
    assert "nothing to judge before" in step.reason
    assert services.ledger.gate_evaluations(CTX.run_id) == []


def test_the_sensor_pokes_first_once_the_bake_can_be_judged(services):
    query = Counted()
    step = gate_steps.first_poke(services, plan("0s"), CTX, 1, query)
    assert step.verdict is None and query.calls == 2  # the bake so far and who reports now
    assert [h["phase"] for h in step.state["history"]] == ["running"]


def test_an_alert_due_is_still_raised_when_the_sensor_defers_at_once(services):
    query = Counted()
    step = gate_steps.first_poke(services, plan("1m", max_batch_duration="0s"), CTX, 1, query)
    assert step.verdict is None and query.calls == 0
    assert step.state["alerted"] == ["batch_runtime"]
    events = [r.event for r in services.ledger.audit_records(CTX.run_id)]
    assert "alert.batch_runtime" in events


def test_an_operator_request_still_ends_the_gate_before_it_could_judge(services):
    asked = services.ledger.request_control(CTX.run_id, "rollback", actor="bob", via="cli")
    query = Counted()
    step = gate_steps.first_poke(services, plan("1m"), CTX, 1, query)
    assert step.verdict is not None and step.verdict["control"] == asked.id
    assert step.verdict["phase"] == Phase.ROLLBACK_REQUESTED.value and query.calls == 0
    assert services.ledger.get_control(asked.id).pending is False
