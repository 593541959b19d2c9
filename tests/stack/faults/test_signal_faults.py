"""The fault matrix's signal and bookkeeping faults on the session's live stack (issue 14): a
monitoring gap during the bake, monitoring lag, an audit outage, a notify outage and a rollback
that fails on a named tenant. Each test injects its fault into the sandbox over HTTP
(`POST /sandbox/faults`), follows one run of `crm-sync-faults-signal` (six gold tenants, two
batches with 6 s bakes; every gate outcome but a pass rolls back on its own) to its end, then
asserts `tests/invariants.py::assert_nothing_lost` plus what the fault must leave behind: tenant
versions at the sandbox, the ledger's action and decision rows, audit events, and an end within
`WITHIN` seconds of the trigger. Rows in docs/reliability.md "Fault matrix"."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import pytest

from powerx_dev.devstack import AirflowStack
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.record import stable_id
from tests.invariants import Settled, assert_nothing_lost
from tests.stack.conftest import FIGURES, artifact_for, explain, versions

pytestmark = pytest.mark.stack

PLAN = "crm-sync-faults-signal"
DAG = f"plugin_upgrade__{PLAN}"
SELECTED = ("t-0003", "t-0006", "t-0010", "t-0025", "t-0029", "t-0034")
"""The plan's tenants: gold, internal and six named ids excluded (the sandbox's seeded fleet)."""
OLD, NEW = "2.3.1", "2.4.0"
WITHIN = 300
"""Seconds from the trigger to the run's end (ledger finished, DAG run over, report included),
for every fault here: two 6 s bakes, the gate's waits and a rollback take 40-75 s on a quiet
machine; with five live stacks on two cores a run was seen to take over 150 s, hence the slack."""

T = TypeVar("T")


# -- helpers (the fault tests' own: trigger, wait with a deadline, inject and remove) ----------


def inject(sandbox: httpx.Client, *faults: dict[str, Any]) -> list[str]:
    """Inject faults now (their windows count from this moment); returns their ids."""
    answer = sandbox.post("/sandbox/faults", json={"faults": list(faults)})
    answer.raise_for_status()
    return [f["id"] for f in answer.json()["faults"]]


def remove(sandbox: httpx.Client, ids: list[str]) -> None:
    """Remove injected faults (one already gone is fine): the next test starts clean."""
    for fault_id in ids:
        sandbox.delete(f"/sandbox/faults/{fault_id}")


@contextmanager
def injected(sandbox: httpx.Client, *faults: dict[str, Any]) -> Iterator[list[str]]:
    ids = inject(sandbox, *faults)
    try:
        yield ids
    finally:
        remove(sandbox, ids)


def trigger(stack: AirflowStack, version: str = NEW) -> tuple[str, float]:
    """Trigger one run of the plan with a signed artifact; (run id, monotonic start)."""
    stack.wait_for_dags([DAG], timeout=180)
    started = time.monotonic()
    run_id = stack.trigger(DAG, {"target_version": version, **artifact_for(version)})
    return run_id, started


def wait_until(
    stack: AirflowStack, run_id: str, probe: Callable[[], T], what: str, timeout: float = WITHIN
) -> T:
    """Poll `probe` (never a fixed sleep) until it is truthy; the run's tasks on a timeout."""
    return stack.wait_for(
        probe,
        timeout=timeout,
        interval=0.5,
        what=what,
        describe=lambda: explain(stack, DAG, run_id),
    )


def finish(stack: AirflowStack, ledger: Ledger, run_id: str, started: float, name: str) -> float:
    """Wait for the run's end (finished in the ledger, DAG run over) and assert it came within
    WITHIN seconds of the trigger; returns the seconds it took (kept as a figure)."""
    left = WITHIN - (time.monotonic() - started)

    def ended() -> bool:
        run = ledger.get_run(run_id)
        return (
            run is not None
            and run.ended_at is not None
            and stack.run_state(DAG, run_id) in ("success", "failed")
        )

    wait_until(stack, run_id, ended, f"run {run_id} to end", timeout=max(left, 1))
    seconds = time.monotonic() - started
    assert seconds <= WITHIN, f"{name}: the run took {seconds:.0f}s > {WITHIN}s"
    FIGURES[f"fault {name}: trigger to run end (s)"] = seconds
    return seconds


def nothing_lost(
    stack: AirflowStack, ledger: Ledger, sandbox: httpx.Client, run_id: str, **expected: Any
) -> Settled:
    """`assert_nothing_lost`, with the run's tasks (and failed tasks' logs) when it fails."""
    try:
        return assert_nothing_lost(ledger, sandbox, run_id, **expected)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(stack, DAG, run_id)}") from None


def planned(ledger: Ledger, run_id: str) -> list[list[str]]:
    """The run's batches as preflight planned them (tenant ids per batch)."""
    run = ledger.get_run(run_id)
    assert run is not None and run.batches, f"run {run_id} has no planned batches"
    return [list(b["tenants"]) for b in run.batches]


def batches_planned(ledger: Ledger, run_id: str) -> list[list[str]] | None:
    run = ledger.get_run(run_id)
    return [list(b["tenants"]) for b in run.batches] if run is not None and run.batches else None


def decided(ledger: Ledger, run_id: str, batch: int) -> str | None:
    """The decision of `batch`'s gate (promote / rollback / ...), once there is one."""
    found = [d for d in ledger.decisions(run_id) if d.kind == "decide" and d.batch_index == batch]
    return found[-1].decision if found else None


def events(ledger: Ledger, run_id: str) -> list[str]:
    return [r.event for r in ledger.audit_records(run_id)]


def sandbox_events(sandbox: httpx.Client, prefix: str) -> list[dict[str, Any]]:
    answer = sandbox.get("/sandbox/events", params={"prefix": prefix})
    answer.raise_for_status()
    return list(answer.json()["events"])


def upgraded_all(ledger: Ledger, run_id: str, tenants: list[str]) -> bool:
    done = {a.tenant_id for a in ledger.actions(run_id, kind="upgrade") if a.state == "succeeded"}
    return set(tenants) <= done


def final_gates(ledger: Ledger, run_id: str) -> dict[int, Any]:
    return {g.batch_index: g for g in ledger.gate_evaluations(run_id, final_only=True)}


def at_sandbox(sandbox: httpx.Client) -> dict[str, str]:
    return {t: v["version"] for t, v in versions(sandbox).items() if t in SELECTED}


# -- a monitoring gap during the bake ------------------------------------------------------------


def test_metrics_gap_from_the_deploy_on_is_no_data_never_a_pass_and_rolls_back(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
) -> None:
    """Monitoring has nothing from a tenant once it runs 2.4.0 (a metrics_gap keyed on the
    version: the plugin crashed, or its exporter did), so the canary's whole bake is silent.
    Silence is not health: the gate's verdict is `no_data`, the plan's `missing_data.action`
    (rollback) follows, the canary is back on 2.3.1 and the rest never upgraded; the run ends
    `rolled_back`."""
    gap = {"type": "metrics_gap", "version": NEW, "tenants": list(SELECTED)}
    with injected(sandbox, gap):
        run_id, started = trigger(stack)
        canary, rest = wait_until(
            stack, run_id, lambda: batches_planned(ledger, run_id), "planning"
        )
        finish(stack, ledger, run_id, started, "metrics_gap")

    settled = nothing_lost(stack, ledger, sandbox, run_id, outcomes={"rolled_back"})
    gate = final_gates(ledger, run_id)[1]
    assert gate.phase == "no_data", (gate.phase, gate.reason)
    assert decided(ledger, run_id, 1) == "rollback"
    assert decided(ledger, run_id, 2) is None, "batch 2 must never be judged"
    # the tenants: the canary back where it was, the rest never touched
    assert at_sandbox(sandbox) == dict.fromkeys(SELECTED, OLD)
    assert {a.tenant_id for a in ledger.actions(run_id, kind="upgrade")} == set(canary)
    rollbacks = ledger.actions(run_id, kind="rollback")
    assert {a.tenant_id: a.state for a in rollbacks} == dict.fromkeys(canary, "succeeded")
    assert not set(rest) & settled.tenants
    assert "batch.rollback" in events(ledger, run_id)
    assert "run.rolled_back" in events(ledger, run_id)


# -- monitoring lag ------------------------------------------------------------------------------


LAG = "5s"
"""The monitoring lag the sandbox adds (over the plan's own `signal_delay: 2s`): longer than a
poke, shorter than `missing_data.after` (20 s)."""


def test_signal_delay_the_gate_waits_for_lagging_data_and_promotes(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
) -> None:
    """Monitoring lags 5 s behind (on top of the gate's 2 s `signal_delay`) for the whole run.
    The gate must not judge a window that holds no data yet: each batch's final `pass` rests on
    measured samples, no poke calls the lag silence (`no_data`), both batches promote (2.4.0 is
    healthy) and every tenant is on 2.4.0."""
    with injected(sandbox, {"type": "signal_delay", "tenants": list(SELECTED), "value": LAG}):
        run_id, started = trigger(stack)
        finish(stack, ledger, run_id, started, "signal_delay")

    nothing_lost(stack, ledger, sandbox, run_id, outcomes={"promoted"})
    gates = final_gates(ledger, run_id)
    assert sorted(gates) == [1, 2]
    for batch, gate in gates.items():
        assert gate.phase == "pass", (batch, gate.phase, gate.reason)
        samples = [m.get("samples") or 0 for m in gate.measurements]
        assert samples and all(n > 0 for n in samples), (batch, gate.measurements)
    # no poke took the lag for silence (the lag is shorter than missing_data.after)
    phases = {g.phase for g in ledger.gate_evaluations(run_id)}
    assert phases <= {"running", "pass"}, phases
    assert [decided(ledger, run_id, b) for b in (1, 2)] == ["promote", "promote"]
    assert at_sandbox(sandbox) == dict.fromkeys(SELECTED, NEW)
    upgrades = ledger.actions(run_id, kind="upgrade")
    assert sorted(a.tenant_id for a in upgrades) == sorted(SELECTED)
    assert all(a.state == "succeeded" for a in upgrades)
    assert not ledger.actions(run_id, kind="rollback")


# -- an audit outage during the run --------------------------------------------------------------


def test_audit_outage_every_record_is_delivered_later_exactly_once(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
) -> None:
    """The audit service answers 503 from the trigger until batch 1 has been decided: the run
    goes on (nothing waits for the audit service), its records wait in the ledger's outbox, and
    after the outage every one of them reaches the service exactly once."""
    ids = inject(sandbox, {"type": "audit_outage", "after": "0s"})
    try:
        run_id, started = trigger(stack)
        wait_until(stack, run_id, lambda: decided(ledger, run_id, 1), "batch 1's decision")
        held = [r for r in ledger.audit_records(run_id) if r.delivered_at is None]
    finally:
        remove(sandbox, ids)
    finish(stack, ledger, run_id, started, "audit_outage")

    # during the outage: the run's records were kept, undelivered (the outbox's oldest record,
    # of any run, is the one each flush tries first: its attempts count, not these)
    assert {"run.started", "batch.promote"} <= {r.event for r in held}, [r.event for r in held]
    refused = [e for e in sandbox_events(sandbox, "/internal/audit") if e["status"] == 503]
    assert refused, "the audit outage was never hit"
    # afterwards: all delivered, each once at the service (assert_nothing_lost), the run promoted
    settled = nothing_lost(stack, ledger, sandbox, run_id, outcomes={"promoted"})
    assert {r.audit_id for r in held} <= set(settled.audit_ids)
    assert at_sandbox(sandbox) == dict.fromkeys(SELECTED, NEW)
    assert "run.finished" in events(ledger, run_id)


# -- a notify outage -----------------------------------------------------------------------------


def notification_ids(run_id: str, *keys: str) -> set[str]:
    """The ids `Recorder.notify` gives the run's notifications (`<run>:<key>` hashed)."""
    return {stable_id(f"{run_id}:{key}") for key in keys}


def test_notify_outage_is_retried_never_blocks_and_every_notification_arrives_once(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
) -> None:
    """The notification service answers 503 from the trigger until batch 2 deploys.
    Each notification is retried, the run is not held up (it promotes), every notification it
    could not send is audited `notify.failed`, and once the service is back the run's end sends
    them again: the service holds each of the run's notifications exactly once."""
    ids = inject(sandbox, {"type": "http_error", "endpoint": "notify", "status": 503})
    try:
        run_id, started = trigger(stack)
        # batch 2 deploying: batch 1's decision and its `batch_promoted` notification are behind
        wait_until(
            stack,
            run_id,
            lambda: any(a.batch_index == 2 for a in ledger.actions(run_id, kind="upgrade")),
            "batch 2's deploy",
        )
    finally:
        remove(sandbox, ids)
    finish(stack, ledger, run_id, started, "notify_outage")

    nothing_lost(stack, ledger, sandbox, run_id, outcomes={"promoted"})
    assert at_sandbox(sandbox) == dict.fromkeys(SELECTED, NEW)
    failed = [r for r in ledger.audit_records(run_id) if r.event == "notify.failed"]
    failed_keys = {r.payload["details"]["key"] for r in failed}
    assert {"run.started", "promoted:1"} <= failed_keys, failed_keys
    # retried: more refused attempts than notifications that failed
    refused = [e for e in sandbox_events(sandbox, "/internal/notify") if e["status"] == 503]
    assert len(refused) >= 2 * len(failed), (len(refused), len(failed))
    # delivered afterwards, once each (the service keeps one record per id)
    answer = sandbox.get("/sandbox/notifications")
    answer.raise_for_status()
    mine = [n for n in answer.json()["notifications"] if n.get("run_id") == run_id]
    got = [str(n["id"]) for n in mine]
    assert len(got) == len(set(got))
    wanted = notification_ids(run_id, "run.started", "promoted:1", "promoted:2", "run.finished")
    assert set(got) == wanted, sorted(n.get("event") for n in mine)
    resent = {
        r.payload["details"]["key"]
        for r in ledger.audit_records(run_id)
        if r.event == "notify.resent"
    }
    assert resent == failed_keys


# -- a rollback that fails on a named tenant -----------------------------------------------------


def test_deploy_failure_on_rollback_is_retried_alerted_and_named_by_reconcile(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
) -> None:
    """2.4.0 fails 20 % of the selected tenants' requests, so batch 1's gate fails and the run
    rolls the canary back; the platform refuses every rollback of one canary tenant. The
    rollback is retried (deploy.retries 2: three attempts), then `rollback_failure` is raised
    naming that tenant, the run ends `rollback_failed`, the other canary tenant is back on 2.3.1,
    and reconcile names exactly the stuck tenant."""
    faults = [{"type": "error_rate", "version": NEW, "tenants": list(SELECTED), "value": 0.2}]
    ids = inject(sandbox, *faults)
    try:
        run_id, started = trigger(stack)
        canary, _ = wait_until(stack, run_id, lambda: batches_planned(ledger, run_id), "planning")
        stuck = sorted(canary)[0]
        ids += inject(
            sandbox,
            {"type": "deploy_failure", "operation": "rollback", "tenants": [stuck], "rate": 1.0},
        )
        finish(stack, ledger, run_id, started, "rollback_failure")
    finally:
        remove(sandbox, ids)

    settled = nothing_lost(
        stack,
        ledger,
        sandbox,
        run_id,
        outcomes={"rollback_failed"},
        expected_findings={"rollback_unverified": {stuck}},
    )
    assert settled.run.outcome == "rollback_failed"
    back = {t: v for t, v in at_sandbox(sandbox).items() if t in canary}
    assert back == {t: (NEW if t == stuck else OLD) for t in canary}
    rollbacks = {a.tenant_id: a for a in ledger.actions(run_id, kind="rollback")}
    assert rollbacks[stuck].state == "failed"
    assert rollbacks[stuck].attempts == 3, rollbacks[stuck]
    assert all(rollbacks[t].state == "succeeded" for t in canary if t != stuck)
    alerts = [r for r in ledger.audit_records(run_id) if r.event == "alert.rollback_failure"]
    assert len(alerts) == 1
    assert stuck in alerts[0].payload["details"]["message"]
    assert all(t not in alerts[0].payload["details"]["message"] for t in canary if t != stuck)
