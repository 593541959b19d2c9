"""The fault matrix's platform faults on the live session stack (docs/reliability.md, "Fault
matrix"): what the PowerX platform can do to a run (5xx bursts, answers that never arrive for
work that was done, tenants busy with someone else's operation, a forged artifact, a clock that
runs ahead) and what every run still guarantees afterwards (tests/invariants.py) within a stated
time. Each test runs the plan crm-sync-faults-platform: six gold tenants, two batches of 6 s."""

from __future__ import annotations

import base64

import httpx
import pytest

from powerx_dev.devstack import AirflowStack
from powerx_upgrade.ledger import Ledger
from tests.invariants import assert_nothing_lost
from tests.stack.conftest import FAULTS_PLATFORM_DAG, explain, versions
from tests.stack.faults.conftest import (
    applied_per_tenant,
    audit_events,
    injected,
    planned,
    run_to_end,
)

pytestmark = pytest.mark.stack

DAG = FAULTS_PLATFORM_DAG
TARGET = "2.4.0"


def events(sandbox: httpx.Client, path_end: str) -> list[dict]:
    """The sandbox's request log for one kind of call (e.g. `/upgrade`)."""
    answer = sandbox.get("/sandbox/events", params={"prefix": "/internal/plugins/"})
    answer.raise_for_status()
    return [e for e in answer.json()["events"] if str(e.get("path", "")).endswith(path_end)]


def assert_promoted_once_each(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger, run_id: str, state: str
) -> list[str]:
    """The run promoted: every planned tenant on the target, upgraded exactly once at the
    platform (however many calls it took), one succeeded upgrade action each in the ledger."""
    assert state == "success", explain(stack, DAG, run_id)
    settled = assert_nothing_lost(ledger, sandbox, run_id, outcomes={"promoted"})
    tenants = planned(ledger, run_id)
    assert len(tenants) == 6, tenants
    now = versions(sandbox)
    assert {t: now[t]["version"] for t in tenants} == dict.fromkeys(tenants, TARGET)
    assert applied_per_tenant(sandbox) == dict.fromkeys(tenants, 1)
    actions = ledger.actions(run_id, kind="upgrade")
    assert sorted(a.tenant_id for a in actions if a.state == "succeeded") == sorted(tenants)
    assert settled.tenants == set(tenants)
    return tenants


# -- 5xx bursts during deploy -----------------------------------------------------------------

BURST_WITHIN = 240


def test_platform_5xx_burst_during_deploy_is_retried_and_every_tenant_upgrades_once(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    """Four upgrade calls in a row answered 503 (refused before any work): each tenant's
    deploy retries with backoff (the policy's 3 retries; the first batch's two tenants share
    the burst, so neither runs out), the run promotes, nobody is upgraded twice."""
    burst = {"type": "http_error", "endpoint": "upgrade", "status": 503, "times": 4}
    with injected(sandbox, burst):
        run = run_to_end(
            stack, DAG, TARGET, within=BURST_WITHIN, figure="faults: 5xx burst, run (s)"
        )
        refused = [e for e in events(sandbox, "/upgrade") if e["status"] == 503]
    assert len(refused) == 4, refused  # the burst really hit the deploy
    assert_promoted_once_each(stack, sandbox, ledger, run.run_id, run.state)


# -- timeouts whose work was applied -----------------------------------------------------------

TIMEOUT_WITHIN = 300
HOLD = "35s"
"""Longer than the platform hook's 30 s request timeout: the client gives up, the work is done."""


def test_platform_timeout_after_applied_work_is_retried_with_the_same_key_nobody_twice(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    """Two upgrade answers held past the client's timeout after the platform did the work:
    the client retries with the same idempotency key and learns the outcome from the replay;
    each tenant has exactly one real upgrade at the platform."""
    held = {"type": "timeout", "endpoint": "upgrade", "hold": HOLD, "applied": True, "times": 2}
    with injected(sandbox, held):
        run = run_to_end(
            stack, DAG, TARGET, within=TIMEOUT_WITHIN, figure="faults: timeout, run (s)"
        )
    tenants = assert_promoted_once_each(stack, sandbox, ledger, run.run_id, run.state)
    upgrades = events(sandbox, "/upgrade")
    timed_out = [e for e in upgrades if e["status"] == 504]
    assert len(timed_out) == 2, upgrades
    for event in timed_out:  # the same key came back and was answered from the first result
        again = [
            e
            for e in upgrades
            if e["idempotency_key"] == event["idempotency_key"] and e["status"] == 200
        ]
        assert again, (event, upgrades)
        assert event["tenant"] in tenants
    # the ledger's action for a held tenant kept one key (no `#2`: the work was not redone)
    for action in ledger.actions(run.run_id, kind="upgrade"):
        assert action.state == "succeeded" and action.detail.get("operation"), action


# -- 409 operation_in_flight -------------------------------------------------------------------

IN_FLIGHT_WITHIN = 240


def test_operation_in_flight_409_is_retried_until_the_tenant_is_free(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    """Every gold tenant is busy with someone else's operation once (409 operation_in_flight,
    Retry-After 1): the deploy waits and retries the same key, the run promotes, each tenant
    upgraded once, in two attempts."""
    busy = {"type": "in_flight", "where": {"tier": "gold"}, "times": 1}
    with injected(sandbox, busy):
        run = run_to_end(
            stack, DAG, TARGET, within=IN_FLIGHT_WITHIN, figure="faults: 409 in flight, run (s)"
        )
    tenants = assert_promoted_once_each(stack, sandbox, ledger, run.run_id, run.state)
    conflicts = [e for e in events(sandbox, "/upgrade") if e["status"] == 409]
    assert sorted(e["tenant"] for e in conflicts) == sorted(tenants)
    attempts = {a.tenant_id: a.attempts for a in ledger.actions(run.run_id, kind="upgrade")}
    assert attempts == dict.fromkeys(tenants, 2), attempts


# -- a forged artifact signature ---------------------------------------------------------------

FORGED_WITHIN = 180
FORGED = base64.b64encode(bytes(range(64))).decode()
"""A well-formed Ed25519-sized signature that no trusted key made."""


def test_forged_artifact_signature_is_refused_before_any_tenant_and_audited(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    run = run_to_end(
        stack,
        DAG,
        TARGET,
        within=FORGED_WITHIN,
        conf={"artifact_signature": FORGED},
        figure="faults: forged signature, run (s)",
    )
    assert run.state == "failed", explain(stack, DAG, run.run_id)
    states = stack.task_states(DAG, run.run_id)
    assert states["preflight.verify_artifact"] == "failed", states
    assert not any(k.startswith("batch_") and v == "success" for k, v in states.items()), states
    # nothing at the platform: no upgrade call at all, every tenant where it was
    assert events(sandbox, "/upgrade") == []
    assert applied_per_tenant(sandbox) == {}
    assert {t["version"] for t in versions(sandbox).values()} == {"2.3.1"}
    assert ledger.actions(run.run_id) == []
    settled = assert_nothing_lost(ledger, sandbox, run.run_id, outcomes={"failed"})
    assert settled.tenants == set()
    assert "artifact.refused" in audit_events(ledger, run.run_id)
    (refusal,) = [r for r in ledger.audit_records(run.run_id) if r.event == "artifact.refused"]
    assert FORGED not in str(refusal.payload)  # the forged value is not repeated into the audit


# -- the platform's clock ahead of Airflow's ----------------------------------------------------

SKEW_WITHIN = 240


def test_platform_clock_two_minutes_ahead_the_gate_still_judges_the_new_version(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    """The platform's clock (its operation times and monitoring timeline) runs 2 minutes ahead
    of Airflow's, and the target version fails 9 % of the gold tenants' requests. The gate must
    judge the bake's data (the new version: fail, roll back), not the platform's two-minute-old
    past (the old version, which would pass)."""
    sandbox.post("/sandbox/clock", json={"offset": "2m"}).raise_for_status()
    bad = {"type": "error_rate", "version": TARGET, "where": {"tier": "gold"}, "value": 0.09}
    try:
        with injected(sandbox, bad):
            run = run_to_end(
                stack, DAG, TARGET, within=SKEW_WITHIN, figure="faults: clock +2m, run (s)"
            )
            assert run.state == "failed", explain(stack, DAG, run.run_id)
            settled = assert_nothing_lost(ledger, sandbox, run.run_id, outcomes={"rolled_back"})
    finally:
        sandbox.post("/sandbox/clock", json={"offset": "0s"}).raise_for_status()
    phases = {g.batch_index: g.phase for g in ledger.gate_evaluations(run.run_id, final_only=True)}
    assert phases == {1: "fail"}, phases
    first = planned(ledger, run.run_id)[:2]
    assert settled.tenants == set(first)
    assert all(versions(sandbox)[t]["version"] == "2.3.1" for t in first)
