"""The fault matrix's process faults (issue 14, docs/reliability.md "Fault matrix") on the
distributed stack: the task process itself SIGKILLed mid-shard; every scheduler restarted during
a bake; the triggerer restarted during a bake; the api-server restarted while a pause waits for a
human. After each: `tests/invariants.py::assert_nothing_lost` plus the fault's own asserts
(tenant versions and operations at the sandbox, ledger rows), and the run's end within a stated
time (the `*_WITHIN` constants, also in the docs' table).

The stack is shared with the other tests of the package: every component a test stops or kills
is started again in a `finally`, and the stack is waited for until it is whole again.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from powerx_dev.devstack.distributed import DistributedStack
from powerx_dev.devstack.errors import AirflowStackError
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.operators.human import RESUME, ROLL_BACK, STOP
from tests.invariants import assert_nothing_lost
from tests.stack.conftest import FIGURES, explain, versions
from tests.stack.distributed.conftest import (
    BAKE_DAG,
    PAUSE_DAG,
    SHARDS_DAG,
    assert_upgraded_once,
    conf_for,
    selected,
    upgrade_operations,
)

pytestmark = pytest.mark.stack

TASK_KILL_WITHIN = 240
"""Seconds from the task process's SIGKILL to the run's end (its retry waits 5 s, the rest of
the shards and a 6 s bake; usually well under two minutes, generous for a loaded 2-core box)."""
SCHEDULERS_WITHIN = 300
"""Seconds from stopping both schedulers to the run's end (their restart included)."""
TRIGGERER_WITHIN = 300
"""Seconds from stopping the triggerer to the run's end (its restart included)."""
API_SERVER_WITHIN = 240
"""Seconds from the answer given after the api-server's restart to the run's end."""
WAIT = 240
"""Seconds to wait for the moment of a fault (a shard in flight, a deferred gate, a pause)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _task_mid_shard(
    stack: DistributedStack, sandbox: httpx.Client, run_id: str
) -> tuple[dict[str, Any], str, int, list[int]] | None:
    """A running deploy shard with its worker, supervisor and task pids, once the platform has
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
        found = stack.task_processes(ti["id"])
        if found is not None:
            return (ti, *found)
    return None


def test_a_task_process_killed_mid_shard_is_retried_and_nobody_is_upgraded_twice(
    dist_stack: DistributedStack, dist_sandbox: httpx.Client, dist_ledger: Ledger
):
    """SIGKILL of the deploy task's own process (what an OOM kill or a segfault does), its
    worker and supervisor left alive: the supervisor reports the try failed, the task is retried
    (5 s later, on any worker), the retry replays the shard's tenants under their idempotency
    keys: each tenant changed by exactly one platform operation, none left behind, promoted."""
    run_id = dist_stack.trigger(SHARDS_DAG, conf_for("2.4.0", "fault matrix: task SIGKILL"))
    ti, worker, _supervisor, task = dist_stack.wait_for(
        lambda: _task_mid_shard(dist_stack, dist_sandbox, run_id),
        timeout=WAIT,
        interval=0.3,
        what="a deploy shard's task process in flight",
        describe=lambda: dist_stack.describe_run(SHARDS_DAG, run_id),
    )
    mid_shard = versions(dist_sandbox)
    killed_at = time.monotonic()
    dist_stack.kill_pids(task)
    # Only the task died: its worker is still a component of the stack, still answering.
    assert worker in dist_stack.components and _alive(dist_stack.components[worker].pid)

    state = dist_stack.wait_for_run(SHARDS_DAG, run_id, timeout=TASK_KILL_WITHIN)
    took = time.monotonic() - killed_at
    FIGURES["fault matrix: task SIGKILL to run end (s)"] = took
    assert state == "success", explain(dist_stack, SHARDS_DAG, run_id)
    assert took <= TASK_KILL_WITHIN
    final = dist_stack.task_instance(
        SHARDS_DAG, run_id, "batch_1.deploy", map_index=ti["map_index"]
    )
    assert final["state"] == "success" and final["try_number"] >= 2, final
    assert worker in [w.split("@")[0] for w in dist_stack.ping_workers()]

    settled = assert_nothing_lost(dist_ledger, dist_sandbox, run_id, outcomes={"promoted"})
    tenants = selected(dist_ledger, run_id)
    assert len(tenants) >= 12
    # The kill was mid-run: some of its tenants were not upgraded yet.
    assert any(mid_shard[t]["version"] != "2.4.0" for t in tenants)
    assert_upgraded_once(dist_ledger, run_id, settled.fleet, tenants)
    untouched = set(settled.fleet) - set(tenants)
    assert all(settled.fleet[t]["version"] == "2.3.1" for t in untouched)
    assert all(not settled.fleet[t]["operations"] for t in untouched)


def _run_state_through(stack: DistributedStack, dag_id: str, run_id: str, timeout: float) -> str:
    """The run's end state, read through a freshly restarted api-server: on a loaded machine its
    first minutes can answer a request slower than the client's 30 s; such a timeout is
    counted (FIGURES) and the read tried again, until `timeout`."""
    deadline = time.monotonic() + timeout
    slow = 0
    while True:
        try:
            state = stack.run_state(dag_id, run_id)
        except AirflowStackError as exc:
            if "Timeout" not in str(exc) or time.monotonic() >= deadline:
                raise
            slow += 1
            FIGURES["fault matrix: api-server requests timed out after its restart"] = slow
            stack.close()
            continue
        if state in ("success", "failed") or time.monotonic() >= deadline:
            return state
        time.sleep(1)


def _batch_2_started(stack: DistributedStack, run_id: str) -> list[str]:
    return [
        ti["task_id"]
        for ti in stack.task_instances(BAKE_DAG, run_id)
        if ti["task_id"].startswith("batch_2.") and ti["state"] not in (None, "scheduled")
    ]


def test_every_scheduler_restarted_during_a_bake_the_run_carries_on(
    dist_stack: DistributedStack, dist_sandbox: httpx.Client, dist_ledger: Ledger
):
    """Both schedulers stopped while batch 1 bakes (its gate deferred to the triggerer), then
    started again: nothing schedules for a while, the restarted schedulers adopt the run, batch
    2 deploys and bakes, the run promotes; every tenant upgraded once."""
    run_id = dist_stack.trigger(BAKE_DAG, conf_for("2.4.0", "fault matrix: schedulers restart"))
    dist_stack.wait_for_task(
        BAKE_DAG, run_id, "batch_1.gate", {"deferred"}, timeout=WAIT, interval=0.5
    )
    schedulers = dist_stack.schedulers
    stopped_at = time.monotonic()
    try:
        for name in schedulers:
            dist_stack.stop(name)
        assert dist_stack.schedulers == []
        # The stop fell in the bake: the gate still waits, batch 2 has not started.
        assert dist_stack.task_instance(BAKE_DAG, run_id, "batch_1.gate")["state"] == "deferred"
        assert not _batch_2_started(dist_stack, run_id)
    finally:
        for name in schedulers:
            if name not in dist_stack.components:
                dist_stack.restart(name)
    dist_stack.wait_until_distributed(timeout=180)

    state = dist_stack.wait_for_run(BAKE_DAG, run_id, timeout=SCHEDULERS_WITHIN)
    took = time.monotonic() - stopped_at
    FIGURES["fault matrix: schedulers stopped to run end (s)"] = took
    assert state == "success", explain(dist_stack, BAKE_DAG, run_id)
    assert took <= SCHEDULERS_WITHIN
    states = dist_stack.task_states(BAKE_DAG, run_id)
    assert states["batch_1.promote"] == states["batch_2.promote"] == "success"

    settled = assert_nothing_lost(dist_ledger, dist_sandbox, run_id, outcomes={"promoted"})
    tenants = selected(dist_ledger, run_id)
    assert_upgraded_once(dist_ledger, run_id, settled.fleet, tenants)
    phases = {g.batch_index: g.phase for g in dist_ledger.gate_evaluations(run_id, final_only=True)}
    assert phases == {1: "pass", 2: "pass"}


def test_the_triggerer_restarted_during_a_bake_the_gate_resumes_where_it_was(
    dist_stack: DistributedStack, dist_sandbox: httpx.Client, dist_ledger: Ledger
):
    """The triggerer stopped a few seconds into batch 1's 15 s bake and started again: the new
    triggerer takes the gate's trigger over with its serialized state (the bake's start is in
    it), so the verdict comes at the same bake end, not a full bake after the restart; the run
    promotes. (The gate defers before its first poke, so the ledger's pokes are those the
    triggerers made and reported: the old one's, made in memory, are lost with it.)"""
    bake = 15  # dist-bake's first batch
    run_id = dist_stack.trigger(BAKE_DAG, conf_for("2.4.0", "fault matrix: triggerer restart"))
    dist_stack.wait_for_task(
        BAKE_DAG, run_id, "batch_1.gate", {"deferred"}, timeout=WAIT, interval=0.5
    )
    # A few seconds into the bake, so that a bake restarted from zero would end visibly later.
    deferred_at = time.monotonic()
    dist_stack.wait_for(
        lambda: time.monotonic() - deferred_at >= 4, timeout=10, interval=0.5, what="4 s"
    )
    stopped = datetime.now(UTC)
    stopped_at = time.monotonic()
    try:
        dist_stack.stop("triggerer")
        assert dist_stack.task_instance(BAKE_DAG, run_id, "batch_1.gate")["state"] == "deferred"
    finally:
        dist_stack.restart("triggerer")
    dist_stack.wait_until_healthy(timeout=180)

    state = dist_stack.wait_for_run(BAKE_DAG, run_id, timeout=TRIGGERER_WITHIN)
    took = time.monotonic() - stopped_at
    FIGURES["fault matrix: triggerer stopped to run end (s)"] = took
    assert state == "success", explain(dist_stack, BAKE_DAG, run_id)
    assert took <= TRIGGERER_WITHIN

    evaluations = dist_ledger.gate_evaluations(run_id, batch_index=1)
    pokes = [g for g in evaluations if not g.final]
    (verdict,) = [g for g in evaluations if g.final]
    assert verdict.phase == "pass", verdict
    bake_started = max(
        a.finished_at
        for a in dist_ledger.actions(run_id, kind="upgrade")
        if a.batch_index == 1 and a.finished_at is not None
    )
    assert bake_started < stopped, (bake_started, stopped)
    after = [g.evaluated_at for g in pokes if g.evaluated_at > stopped]
    resumed = after[0] if after else verdict.evaluated_at
    # The bake was not cut short, and not started again: the verdict came after the bake's
    # planned end, and less than a whole bake after the new triggerer's first poke.
    assert verdict.evaluated_at >= bake_started + timedelta(seconds=bake), (bake_started, verdict)
    assert verdict.evaluated_at < resumed + timedelta(seconds=bake), (resumed, verdict)
    FIGURES["fault matrix: triggerer back to verdict (s)"] = (
        verdict.evaluated_at - resumed
    ).total_seconds()

    settled = assert_nothing_lost(dist_ledger, dist_sandbox, run_id, outcomes={"promoted"})
    assert_upgraded_once(dist_ledger, run_id, settled.fleet, selected(dist_ledger, run_id))
    phases = {g.batch_index: g.phase for g in dist_ledger.gate_evaluations(run_id, final_only=True)}
    assert phases == {1: "pass", 2: "pass"}


def test_the_api_server_restarted_while_a_pause_waits_the_answer_after_it_goes_through(
    dist_stack: DistributedStack, dist_sandbox: httpx.Client, dist_ledger: Ledger
):
    """The api-server stopped while batch 1's failed gate waits for a human, then started
    again: the request is still pending (it lives in the metadata database, not in the
    api-server), the answer Roll back through the REST API's HITL endpoint after the restart
    is taken, batch 1 rolls back, the run ends rolled_back."""
    run_id = dist_stack.trigger(PAUSE_DAG, conf_for("2.5.0", "fault matrix: api-server restart"))
    request = dist_stack.wait_for_hitl(PAUSE_DAG, run_id, "batch_1.pause", timeout=WAIT)
    assert request["options"] == [RESUME, ROLL_BACK, STOP]
    first, rest = [list(b["tenants"]) for b in dist_ledger.get_run(run_id).batches]
    assert all(versions(dist_sandbox)[t]["version"] == "2.5.0" for t in first)

    try:
        dist_stack.stop("api-server")
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{dist_stack.base_url}/api/v2/monitor/health", timeout=5)
        assert dist_ledger.get_run(run_id).status == "paused"
    finally:
        dist_stack.restart("api-server")
    dist_stack.close()  # drop the client's connections to the stopped server
    dist_stack.wait_until_healthy(timeout=180)

    still = dist_stack.hitl_detail(PAUSE_DAG, run_id, "batch_1.pause")
    assert still["response_received"] is False and not still["chosen_options"], still
    answered_at = time.monotonic()
    dist_stack.answer_hitl(PAUSE_DAG, run_id, "batch_1.pause", ROLL_BACK)

    state = _run_state_through(dist_stack, PAUSE_DAG, run_id, timeout=API_SERVER_WITHIN)
    took = time.monotonic() - answered_at
    FIGURES["fault matrix: answer after api-server restart to run end (s)"] = took
    assert state == "failed", explain(dist_stack, PAUSE_DAG, run_id)
    assert took <= API_SERVER_WITHIN
    states = dist_stack.task_states(PAUSE_DAG, run_id)
    assert states["batch_1.pause_rollback"] == "success"
    assert states["rollback.verify"] == "success"

    settled = assert_nothing_lost(dist_ledger, dist_sandbox, run_id, outcomes={"rolled_back"})
    for tenant in first:
        assert settled.fleet[tenant]["version"] == "2.3.1"
        assert len(upgrade_operations(settled.fleet[tenant], "2.5.0")) == 1
    for tenant in rest:  # never deployed
        assert settled.fleet[tenant]["version"] == "2.3.1"
        assert not settled.fleet[tenant]["operations"], settled.fleet[tenant]
    decisions = [
        (d.batch_index, d.kind, d.decision, d.actor, d.via)
        for d in dist_ledger.decisions(run_id)
        if d.via in ("ui", "api", "cli")
    ]
    assert decisions == [(1, "pause", "rollback", dist_stack.login[0], "ui")]
