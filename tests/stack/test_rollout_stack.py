"""Rollouts on a live Airflow stack, started by `powerx plugin upgrade --wait` the way a CI
pipeline does (tests/stack/runs.py): case A promotes every batch and the run succeeds; case B
fails the bad tier's gate, rolls every upgraded tenant back and the run fails; the gate waits in
the triggerer (deferred), not in a worker slot. The CLI's side of the same runs (exit codes,
status, report) is tests/stack/test_cli_stack.py."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from powerx_dev.devstack import AirflowStack
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.security.approval import issue_approval
from tests.stack.conftest import APPROVAL_SECRET, AUTO_DAG, RUN_TIMEOUT, explain, versions
from tests.stack.runs import PLAN, FollowedRun, Powerx, upgrade_args

pytestmark = pytest.mark.stack


def test_case_a_every_batch_promotes_and_the_run_succeeds(
    case_a: FollowedRun, stack: AirflowStack, ledger: Ledger
):
    assert case_a.state == "success", explain(stack, AUTO_DAG, case_a.run_id)
    assert stack.run_state(AUTO_DAG, case_a.run_id) == "success"
    states = stack.task_states(AUTO_DAG, case_a.run_id)
    for k in (1, 2):
        assert states[f"batch_{k}.gate"] == "success"
        assert states[f"batch_{k}.promote"] == "success"
        assert states[f"batch_{k}.pause"] == "skipped"
        assert states[f"batch_{k}.rollback"] == "skipped"
    assert states["rollback.scope"] == "skipped"
    assert states["finalize.record"] == states["finalize.result"] == "success"

    record = ledger.get_run(case_a.run_id)
    assert record is not None and record.outcome == "promoted", record
    selected = [t for batch in record.batches for t in batch["tenants"]]
    assert len(selected) == 60
    assert all(case_a.after[t]["version"] == "2.4.0" for t in selected)
    # The excluded internal tenant is untouched.
    assert case_a.after["t-internal-1"]["version"] == case_a.before["t-internal-1"]["version"]
    phases = {
        g.batch_index: g.phase for g in ledger.gate_evaluations(case_a.run_id, final_only=True)
    }
    assert phases == {1: "pass", 2: "pass"}


def test_the_gate_defers_to_the_triggerer_while_the_batch_bakes(
    case_a: FollowedRun, stack: AirflowStack
):
    """Each batch's gate was seen `deferred`, with its trigger assigned to the running
    triggerer and counted in the pool's deferred slots, not its running slots."""
    assert case_a.timeline.first("batch_1.gate", "deferred") is not None, case_a.timeline.events
    assert case_a.timeline.first("batch_2.gate", "deferred") is not None, case_a.timeline.events
    assert len(case_a.deferred_gates) == 2
    for gate, pool, triggerers in zip(
        case_a.deferred_gates, case_a.pools, case_a.triggerers, strict=True
    ):
        assert gate["state"] == "deferred", gate
        assert gate["trigger"]["classpath"].endswith("triggers.gate.BatchGateTrigger"), gate
        # The trigger runs in the triggerer (a job of its own, not a worker of the scheduler).
        job = gate["triggerer_job"]
        assert job is not None and job["job_type"] == "TriggererJob", gate
        assert job["id"] in triggerers, (job, triggerers)
        # While it waits, the gate holds no slot: the pool counts it as deferred, and deferred
        # tasks do not occupy the default pool.
        assert pool["deferred_slots"] >= 1 and pool["include_deferred"] is False, pool
    # The gate polled from the triggerer: its verdict came back through the trigger event.
    for k in (1, 2):
        gate = stack.get(
            f"/api/v2/dags/{AUTO_DAG}/dagRuns/{case_a.run_id}/taskInstances/batch_{k}.gate"
            "/xcomEntries/return_value"
        )
        verdict = gate["value"]
        assert verdict["phase"] == "pass" and verdict["pokes"] >= 2, verdict


def test_case_b_bad_tier_fails_its_gate_every_upgraded_tenant_rolls_back_run_fails(
    case_b: FollowedRun, stack: AirflowStack, ledger: Ledger
):
    run = case_b
    assert run.state == "failed", explain(stack, AUTO_DAG, run.run_id)
    states = stack.task_states(AUTO_DAG, run.run_id)
    assert states["batch_1.promote"] == "success"
    assert states["batch_2.rollback"] == "success"
    assert states["batch_2.pause"] == "skipped"
    assert states["rollback.verify"] == states["rollback.announce"] == "success"
    assert states["finalize.record"] == "success"
    assert states["finalize.result"] == "failed"  # what fails the run, so CI sees it

    record = ledger.get_run(run.run_id)
    assert record is not None and record.outcome == "rolled_back", record
    phases = {g.batch_index: g.phase for g in ledger.gate_evaluations(run.run_id, final_only=True)}
    assert phases == {1: "pass", 2: "fail"}
    upgraded = {
        a.tenant_id for a in ledger.actions(run.run_id, kind="upgrade") if a.state == "succeeded"
    }
    assert any(run.before[t]["labels"]["tier"] == "bronze" for t in upgraded)
    for tenant in upgraded:  # back on the previous version and config
        assert run.after[tenant]["version"] == "2.3.1"
        assert run.after[tenant]["config_version"] == run.before[tenant]["config_version"]
    assert all(t["version"] == "2.3.1" for t in run.after.values())


def test_a_cli_rollback_of_a_promoted_run_brings_its_tenants_back(
    powerx: Powerx, ledger: Ledger, sandbox: httpx.Client
):
    """`powerx plugin rollback` against the live stack (no mocked transport): a run of its own
    (`upgrade --wait` of 2.4.0 from a reset fleet) promotes, then the CLI rolls it back through
    the plugin_upgrade_rollback DAG under the scope it asked for."""
    run_id = f"cli-rollback-{uuid.uuid4().hex[:8]}"
    slow = ("--http-timeout", "120")  # a crowded CI machine answers slowly; never a failure
    waited = ("--timeout", f"{3 * RUN_TIMEOUT}s")  # the last --timeout wins
    upgraded_run = powerx(
        *upgrade_args("2.4.0", run_id), *slow, *waited, timeout=3 * RUN_TIMEOUT + 120
    )
    assert upgraded_run.code == 0, upgraded_run
    before = versions(sandbox)
    token = issue_approval(
        APPROVAL_SECRET, subject="alice", action="rollback", plan_id=PLAN, run_id=run_id
    )
    asked = powerx(
        "rollback",
        "--run",
        run_id,
        "--scope",
        "all_upgraded",
        "--reason",
        "CLI live rollback",
        "--approval-token",
        token,
        *slow,
        timeout=300,
    )
    assert asked.code == 0, asked
    assert "accepted" in asked.out and token not in asked.out + asked.err
    assert "scope all_upgraded (requested)" in asked.out
    deadline = time.monotonic() + 3 * RUN_TIMEOUT
    record = ledger.get_run(run_id)
    while time.monotonic() < deadline and (record is None or record.outcome == "promoted"):
        time.sleep(1)
        record = ledger.get_run(run_id)
    assert record is not None and record.outcome == "rolled_back", record
    assert record.detail["rollback_scope"] == "all_upgraded"
    upgraded = {
        a.tenant_id: a.from_version
        for a in ledger.actions(run_id, kind="upgrade")
        if a.state == "succeeded" and not a.noop
    }
    assert upgraded and all(before[t]["version"] == "2.4.0" for t in upgraded)
    rolled = {a.tenant_id for a in ledger.actions(run_id, kind="rollback", state="succeeded")}
    assert rolled == set(upgraded)
    now = versions(sandbox)
    assert all(now[t]["version"] == back == "2.3.1" for t, back in upgraded.items()), now
    events = [r for r in ledger.audit_records(run_id) if r.event == "run.rollback.started"]
    assert len(events) == 1 and events[0].payload["details"]["scope"] == "all_upgraded"
    (control,) = [c for c in ledger.controls(run_id) if c.kind == "rollback"]
    assert (control.via, control.payload["scope"]) == ("cli", "all_upgraded")
