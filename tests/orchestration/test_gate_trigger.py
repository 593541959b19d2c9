"""The gate trigger: exact serialisation, and `run()` driven directly against the sandbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.domain.models import GateSpec
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.triggers.gate import BatchGateTrigger
from powerx_upgrade.rollout.gating import GatePoller
from tests.conftest import CONFIG_DIR

GATE = GateSpec.model_validate(
    {
        "poke_interval": "1s",
        "signal_delay": "1s",
        "missing_data": {"after": "3s", "action": "rollback"},
        "checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}],
    }
).model_dump(mode="json")


def watch(bake_seconds: int, started: datetime) -> dict:
    return {
        "plugin": "crm-sync",
        "batch": 1,
        "batch_tenants": ["t-0001", "t-0002"],
        "cumulative_tenants": ["t-0001", "t-0002"],
        "control_tenants": ["t-0003"],
        "pre_upgrade": {},
        "bake_started": started.isoformat(),
        "batch_started": started.isoformat(),
        "bake_seconds": bake_seconds,
    }


def events(trigger: BatchGateTrigger) -> list[dict]:
    async def collect() -> list[dict]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout=60))


@pytest.mark.unit
def test_serialize_gives_the_class_path_and_plain_kwargs():
    trigger = BatchGateTrigger(
        gate=GATE,
        watch={"plugin": "p"},
        state={"failures": 0},
        limits={"missing_data": 300.0},
        conn_id="mon",
        names={"errors": "errs"},
        run_id="manual__1",
    )
    assert trigger.serialize() == (
        "powerx_upgrade.orchestration.triggers.gate.BatchGateTrigger",
        {
            "gate": GATE,
            "watch": {"plugin": "p"},
            "state": {"failures": 0},
            "limits": {"missing_data": 300.0},
            "conn_id": "mon",
            "names": {"errors": "errs"},
            "run_id": "manual__1",
            "source": None,
        },
    )


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url:
        yield url


@pytest.mark.e2e
def test_run_passes_a_healthy_batch_with_one_event(sandbox_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", sandbox_url)
    started = datetime.now(UTC) - timedelta(seconds=20)
    found = events(BatchGateTrigger(gate=GATE, watch=watch(5, started), state={}))
    assert len(found) == 1 and found[0]["status"] == "done"
    assert found[0]["evaluation"]["phase"] == "pass"
    assert found[0]["state"]["history"]


@pytest.mark.e2e
def test_run_alerts_on_batch_runtime_and_ends_there(sandbox_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", sandbox_url)
    started = datetime.now(UTC)
    trigger = BatchGateTrigger(
        gate=GATE, watch=watch(30, started), state={}, limits={"batch_runtime": 0.5}
    )
    found = events(trigger)
    assert [e["status"] for e in found] == ["alert"]
    assert found[0]["alert"]["rule"] == "batch_runtime"
    assert found[0]["state"]["alerted"] == ["batch_runtime"]


@pytest.mark.e2e
def test_unreachable_monitoring_is_an_error_streak_never_a_pass_nor_no_data(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", "http://127.0.0.1:9")
    started = datetime.now(UTC) - timedelta(seconds=5)
    found = events(BatchGateTrigger(gate=GATE, watch=watch(2, started), state={}))
    assert len(found) == 1 and found[0]["evaluation"]["phase"] == "error"
    assert "4 poke(s) in a row" in found[0]["evaluation"]["reason"]
    state = found[0]["state"]
    assert state["errors_in_row"] == 4 and state["errors_total"] == 4
    assert [e["kind"] for e in state["error_log"]] == ["unavailable"] * 4
    assert "no answer" in state["error_log"][0]["message"]


@pytest.mark.e2e
def test_a_refused_monitoring_query_ends_the_gate_at_the_first_poke(sandbox_url, monkeypatch):
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url:
        httpx.post(
            f"{url}/sandbox/faults",
            json={
                "faults": [{"type": "http_error", "endpoint": "monitoring_query", "status": 401}]
            },
        ).raise_for_status()
        monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", url)
        started = datetime.now(UTC) - timedelta(seconds=5)
        found = events(BatchGateTrigger(gate=GATE, watch=watch(30, started), state={}))
    evaluation = found[0]["evaluation"]
    assert evaluation["phase"] == "error" and "HTTP 401" in evaluation["reason"]
    assert evaluation["errors"]["kind"] == "refused" and found[0]["pokes"] == 1


@pytest.mark.unit
def test_a_broken_trigger_still_ends_with_one_error_event():
    found = events(BatchGateTrigger(gate={"checks": "nonsense"}, watch={}, state={}))
    assert len(found) == 1 and found[0]["status"] == "error"


@pytest.fixture
def run_ledger(tmp_path, monkeypatch) -> Ledger:
    """A real SQLite ledger behind the `powerx_ledger` connection, with run `run-1` started."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_POWERX_LEDGER", json.dumps({"conn_type": "generic", "extra": {"url": url}})
    )
    book = Ledger(url)
    book.start_run("run-1", dag_id="d", plan_id="p", plugin="crm-sync", target_version="2.4.0")
    return book


@pytest.mark.e2e
def test_a_pending_rollback_request_ends_the_gate_before_any_poke(
    sandbox_url, monkeypatch, run_ledger
):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", sandbox_url)
    asked = run_ledger.request_control("run-1", "rollback", actor="alice", via="api")
    started = datetime.now(UTC)
    trigger = BatchGateTrigger(gate=GATE, watch=watch(30, started), state={}, run_id="run-1")
    found = events(trigger)
    assert len(found) == 1 and found[0]["control"] == asked.id
    assert found[0]["evaluation"]["phase"] == "rollback_requested"
    assert "alice via api" in found[0]["evaluation"]["reason"]
    assert found[0]["pokes"] == 0


@pytest.mark.e2e
def test_a_tightened_limit_applies_from_the_next_poke_and_fails_a_healthy_batch(
    sandbox_url, monkeypatch, run_ledger
):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", sandbox_url)
    started = datetime.now(UTC) - timedelta(seconds=20)
    # the same healthy batch passes unadjusted (test above); 0.1 % error rate it cannot meet
    change = run_ledger.request_control(
        "run-1",
        "adjust",
        actor="carol",
        via="cli",
        payload={"checks": [{"metric": "error_rate", "limit": 0.001}]},
    )
    trigger = BatchGateTrigger(gate=GATE, watch=watch(5, started), state={}, run_id="run-1")
    found = events(trigger)
    assert len(found) == 1 and found[0]["status"] == "done"
    evaluation = found[0]["evaluation"]
    assert evaluation["phase"] == "fail"
    assert [m["threshold"] for m in evaluation["measurements"]] == [0.001]
    assert [a["id"] for a in found[0]["state"]["applied_controls"]] == [change.id]


@pytest.mark.e2e
def test_an_unreadable_ledger_does_not_break_the_gate(sandbox_url, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", sandbox_url)
    missing = tmp_path / "no" / "such" / "dir" / "ledger.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_POWERX_LEDGER",
        json.dumps({"conn_type": "generic", "extra": {"url": f"sqlite:///{missing}"}}),
    )
    started = datetime.now(UTC) - timedelta(seconds=20)
    trigger = BatchGateTrigger(gate=GATE, watch=watch(5, started), state={}, run_id="run-1")
    found = events(trigger)
    assert len(found) == 1 and found[0]["evaluation"]["phase"] == "pass"


@pytest.mark.unit
def test_before_the_bake_can_be_judged_the_trigger_reads_alerts_but_does_not_poke():
    """Before bake start + signal_delay (1 s here) a poke would judge nothing: no query, no
    history row; an alert due is still raised."""

    async def never(*_: object) -> dict:
        raise AssertionError("no monitoring window yet: nothing to query")

    started = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    spec = GateSpec.model_validate(GATE)
    trigger = BatchGateTrigger(
        gate=GATE, watch=watch(30, started), state={}, limits={"batch_runtime": 0.5}
    )
    poller = GatePoller(spec, trigger.watch, never)
    assert asyncio.run(trigger._poke(poller, spec, [], started)) is None
    event = asyncio.run(trigger._poke(poller, spec, [], started + timedelta(milliseconds=900)))
    assert event is not None and event["status"] == "alert"
    assert event["alert"]["rule"] == "batch_runtime"
    assert poller.pokes == 0 and event["state"]["history"] == []
    assert poller.next_poke_in(started + timedelta(milliseconds=900)) < timedelta(seconds=1)


@pytest.mark.e2e
def test_a_rollback_request_between_pokes_ends_the_gate_within_a_second_not_at_the_next_poke(
    sandbox_url, monkeypatch, run_ledger
):
    """The default poke_interval is 30 s: a one-click rollback must not wait for the next metric
    poke. The request, made 1.5 s after the trigger's first poke, ends the gate about a second
    later (CONTROL_POLL_S), with that single poke done."""
    import threading
    import time

    monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", sandbox_url)
    slow = {**GATE, "poke_interval": 30.0}
    started = datetime.now(UTC) - timedelta(seconds=20)
    trigger = BatchGateTrigger(gate=slow, watch=watch(600, started), state={}, run_id="run-1")
    asked: list = []

    def click() -> None:
        time.sleep(1.5)
        asked.append(run_ledger.request_control("run-1", "rollback", actor="dana", via="ui"))

    clicker = threading.Thread(target=click)
    began = time.monotonic()
    clicker.start()
    found = events(trigger)
    took = time.monotonic() - began
    clicker.join()
    assert len(found) == 1 and found[0]["control"] == asked[0].id
    assert found[0]["evaluation"]["phase"] == "rollback_requested"
    assert found[0]["pokes"] == 1  # one metric poke, then only control reads
    assert took < 10, f"the request waited {took:.1f} s for the gate"


@pytest.mark.unit
def test_unreadable_controls_are_counted_and_logged_once_per_streak(monkeypatch):
    """A ledger outage while the gate waits: each failed control read is counted, the warning
    comes when the streak starts and when reading works again (with the count), not once a
    second; the read that works returns the controls."""
    from powerx_upgrade.orchestration.triggers import gate as gate_module

    answers: list[object] = [OSError("ledger down")] * 3 + ["controls"]

    def read(*_: object) -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    warned: list[str] = []

    class Log:
        def warning(self, message: str, *args: object) -> None:
            warned.append(message % args)

    class Watched(BatchGateTrigger):
        log = Log()  # type: ignore[assignment]

    monkeypatch.setattr(gate_module, "read_gate_controls", read)
    trigger = Watched(gate=GATE, watch=watch(30, datetime.now(UTC)), state={}, run_id="run-1")
    spec = GateSpec.model_validate(GATE)
    found = [asyncio.run(trigger._controls(spec)) for _ in range(3)]
    assert found == [None, None, None] and trigger.unreadable == 3
    assert len(warned) == 1 and "not readable (OSError: ledger down)" in warned[0]
    assert asyncio.run(trigger._controls(spec)) == "controls"
    assert trigger.unreadable == 0
    assert len(warned) == 2 and "readable again after 3 failed read(s)" in warned[1]
