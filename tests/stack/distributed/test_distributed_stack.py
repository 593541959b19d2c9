"""The production topology on this machine (issue 13): CeleryExecutor with two workers and two
schedulers on PostgreSQL and Redis. Case B end to end through the REST API; a Celery worker
SIGKILLed in the middle of a deploy shard; a scheduler killed during a bake. Each asserts tenant
versions (the sandbox, over HTTP) and ledger rows (the ledger on PostgreSQL), not only run states.

What makes a killed worker's task come back (docs/deployment.md "A worker dies"): nothing in
Celery (the message is acknowledged late, but Redis gives it back only after the visibility
timeout, a day); the schedulers see the task instance's heartbeats stop and, after
`[scheduler] task_instance_heartbeat_timeout` (20 s on this stack, 300 s by default), fail that
try; the deploy task has retries, so it is queued again and the surviving worker runs it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from powerx_dev.devstack.distributed import DistributedStack
from powerx_upgrade.ledger import Ledger
from tests.stack.conftest import FIGURES, explain, versions
from tests.stack.distributed.conftest import (
    BAKE_DAG,
    CASE_B_DAG,
    SHARDS_DAG,
    assert_upgraded_once,
    conf_for,
    selected,
    upgrade_operations,
)
from tests.stack.runs import follow_upgrade

pytestmark = pytest.mark.stack

RUN_TIMEOUT = 420
"""Seconds a run may take: generous, for a 2-core machine under heavy load (a run usually
takes one to three minutes here)."""


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_every_component_runs_with_the_profile_settings(dist_stack: DistributedStack):
    """The settings docker-compose.yaml is checked against (tests/deploy/test_compose_profile.py)
    are the ones the processes of this stack really have; two schedulers are alive and both
    workers answer on the profile's broker.

    The schedulers, the dag-processor and the triggerer are checked in their environment
    (/proc); the Celery workers and the api-server retitle themselves (setproctitle), which
    overwrites that memory, so they are checked by what they do: the workers answer a ping
    through the profile's broker, the api-server serves the schedulers' jobs from the profile's
    metadata database."""
    assert len(dist_stack.schedulers) == 2 and len(dist_stack.workers) == 2
    readable = {
        name
        for name, component in dist_stack.components.items()
        if "POWERX_DEVSTACK_ID" in _environ(component.pid)
    }
    assert {*dist_stack.schedulers, "dag-processor", "triggerer"} <= readable, readable
    for name in readable:
        environ = _environ(dist_stack.components[name].pid)
        for key, value in dist_stack.applied.items():
            assert environ.get(key) == value, (name, key)
    assert dist_stack.applied["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert dist_stack.broker_url == dist_stack.applied["AIRFLOW__CELERY__BROKER_URL"]
    assert dist_stack.broker_url.startswith("redis://")
    assert [w.split("@")[0] for w in dist_stack.ping_workers()] == dist_stack.workers
    assert dist_stack.metadata_url in dist_stack.applied["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert dist_stack.metadata_url != dist_stack.ledger_url
    assert len(dist_stack.alive_jobs("SchedulerJob")) == 2


def test_case_b_end_to_end_through_the_rest_api(
    dist_stack: DistributedStack, dist_sandbox: httpx.Client, dist_ledger: Ledger
):
    """`powerx plugin upgrade --wait` of 2.5.0: the bronze batch fails its gate, every upgraded
    tenant rolls back, the run fails; the ledger on PostgreSQL holds the story."""
    run_id = f"dist-b-{uuid.uuid4().hex[:8]}"
    run = follow_upgrade(dist_stack, dist_sandbox, "2.5.0", run_id, timeout=RUN_TIMEOUT)
    FIGURES["distributed: case B start to run end (s)"] = run.seconds
    assert run.state == "failed", explain(dist_stack, CASE_B_DAG, run.run_id)
    assert run.cli.code == 1, run.cli
    states = dist_stack.task_states(CASE_B_DAG, run.run_id)
    assert states["batch_1.promote"] == "success"
    assert states["batch_2.rollback"] == "success"
    assert states["rollback.verify"] == "success"
    assert states["finalize.result"] == "failed"

    record = dist_ledger.get_run(run.run_id)
    assert record is not None and record.outcome == "rolled_back", record
    phases = {
        g.batch_index: g.phase for g in dist_ledger.gate_evaluations(run.run_id, final_only=True)
    }
    assert phases == {1: "pass", 2: "fail"}
    upgraded = {
        a.tenant_id
        for a in dist_ledger.actions(run.run_id, kind="upgrade")
        if a.state == "succeeded"
    }
    rolled_back = {
        a.tenant_id
        for a in dist_ledger.actions(run.run_id, kind="rollback")
        if a.state == "succeeded"
    }
    assert upgraded and rolled_back == upgraded
    assert any(run.before[t]["labels"]["tier"] == "bronze" for t in upgraded)
    for tenant in upgraded:
        assert run.after[tenant]["version"] == "2.3.1"
        assert run.after[tenant]["config_version"] == run.before[tenant]["config_version"]
        assert len(upgrade_operations(run.after[tenant], "2.5.0")) == 1
    assert all(t["version"] == "2.3.1" for t in run.after.values())


def _shard_in_flight(
    stack: DistributedStack, sandbox: httpx.Client, run_id: str
) -> tuple[dict[str, Any], str] | None:
    """A running deploy shard, the worker whose process tree runs it, once the platform has
    upgraded at least one tenant of the run (the shard is mid-way, not about to start)."""
    running = [
        ti
        for ti in stack.task_instances(SHARDS_DAG, run_id)
        if ti["task_id"] == "batch_1.deploy" and ti["state"] == "running"
    ]
    if not running:
        return None
    fleet = versions(sandbox)
    if not any(t["version"] == "2.4.0" or t["in_flight"] for t in fleet.values()):
        return None
    for ti in running:
        worker = stack.worker_running(ti["id"])
        if worker is not None:
            return ti, worker
    return None


def test_a_worker_killed_mid_shard_the_shard_is_retried_on_the_other_worker(
    dist_stack: DistributedStack, dist_sandbox: httpx.Client, dist_ledger: Ledger
):
    """SIGKILL of a Celery worker (its pool, supervisors and tasks with it) while it deploys a
    shard: the schedulers notice the silent task (heartbeat timeout), the deploy task's retry
    runs on the surviving worker, the retried tenants are replayed under their idempotency
    keys: every tenant upgraded exactly once, none left behind, the run promotes."""
    run_id = dist_stack.trigger(SHARDS_DAG, conf_for("2.4.0", "distributed: worker kill"))
    ti, victim = dist_stack.wait_for(
        lambda: _shard_in_flight(dist_stack, dist_sandbox, run_id),
        timeout=180,
        interval=0.3,
        what="a deploy shard in flight on a worker",
        describe=lambda: dist_stack.describe_run(SHARDS_DAG, run_id),
    )
    survivor = next(w for w in dist_stack.workers if w != victim)
    mid_shard = versions(dist_sandbox)
    killed_at = time.monotonic()
    killed = dist_stack.kill(victim)
    try:
        assert len(killed) >= 3  # the worker, its pool process, the task supervisor (+ task)
        state = dist_stack.wait_for_run(SHARDS_DAG, run_id, timeout=RUN_TIMEOUT)
        FIGURES["distributed: worker SIGKILL to run end (s)"] = time.monotonic() - killed_at
        assert state == "success", explain(dist_stack, SHARDS_DAG, run_id)
        final = dist_stack.task_instance(
            SHARDS_DAG, run_id, "batch_1.deploy", map_index=ti["map_index"]
        )
        assert final["state"] == "success" and final["try_number"] >= 2, final
        # The retry ran on the survivor: its log has the new try's task instance id, the dead
        # worker's has only the first one.
        survivor_log = dist_stack.components[survivor].log_path.read_text(errors="replace")
        victim_log = dist_stack.killed[victim].log_path.read_text(errors="replace")
        assert final["id"] != ti["id"] and final["id"] in survivor_log, final
        assert ti["id"] in victim_log and final["id"] not in victim_log
        fleet = versions(dist_sandbox)
        tenants = selected(dist_ledger, run_id)
        assert len(tenants) >= 12
        # The kill was mid-run: some tenants of the run were not upgraded yet.
        assert any(mid_shard[t]["version"] != "2.4.0" for t in tenants)
        assert_upgraded_once(dist_ledger, run_id, fleet, tenants)
        record = dist_ledger.get_run(run_id)
        assert record is not None and record.outcome == "promoted", record
        untouched = set(fleet) - set(tenants)
        assert all(fleet[t]["version"] == "2.3.1" for t in untouched)
    finally:
        dist_stack.restart(victim)
        dist_stack.wait_until_distributed(timeout=180)


def test_a_scheduler_killed_during_a_bake_the_other_carries_the_run(
    dist_stack: DistributedStack, dist_sandbox: httpx.Client, dist_ledger: Ledger
):
    """SIGKILL of one scheduler while batch 1 bakes (its gate deferred): the other scheduler
    schedules the rest (batch 2's deploy and gate, finalize) and the run promotes."""
    run_id = dist_stack.trigger(BAKE_DAG, conf_for("2.4.0", "distributed: scheduler kill"))
    dist_stack.wait_for_task(
        BAKE_DAG, run_id, "batch_1.gate", {"deferred"}, timeout=180, interval=0.5
    )
    victim = dist_stack.schedulers[0]
    killed_at = time.monotonic()
    dist_stack.kill(victim)
    try:
        # The kill fell in the bake: the gate still waits, batch 2 has not started.
        assert dist_stack.task_instance(BAKE_DAG, run_id, "batch_1.gate")["state"] == "deferred"
        assert not [
            ti
            for ti in dist_stack.task_instances(BAKE_DAG, run_id)
            if ti["task_id"].startswith("batch_2.") and ti["state"] not in (None, "scheduled")
        ]
        state = dist_stack.wait_for_run(BAKE_DAG, run_id, timeout=RUN_TIMEOUT)
        FIGURES["distributed: scheduler SIGKILL to run end (s)"] = time.monotonic() - killed_at
        assert state == "success", explain(dist_stack, BAKE_DAG, run_id)
        states = dist_stack.task_states(BAKE_DAG, run_id)
        assert states["batch_1.promote"] == states["batch_2.promote"] == "success"
        tenants = selected(dist_ledger, run_id)
        fleet = versions(dist_sandbox)
        assert_upgraded_once(dist_ledger, run_id, fleet, tenants)
        phases = {
            g.batch_index: g.phase for g in dist_ledger.gate_evaluations(run_id, final_only=True)
        }
        assert phases == {1: "pass", 2: "pass"}
        record = dist_ledger.get_run(run_id)
        assert record is not None and record.outcome == "promoted", record
        # Batch 2 was deployed after the kill: only the survivor can have scheduled it.
        deploy_2 = dist_stack.task_instances(BAKE_DAG, run_id)
        assert any(t["task_id"] == "batch_2.deploy" for t in deploy_2)
    finally:
        dist_stack.restart(victim)
        dist_stack.wait_until_distributed(timeout=180)
