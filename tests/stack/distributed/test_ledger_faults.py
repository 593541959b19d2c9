"""The ledger's faults on the production topology (issue 14, fault matrix; docs/reliability.md):
the ledger's database refusing connections mid-run, two plans on overlapping tenants at once, a
run marked failed from outside before its `finalize`. Each ends with
`tests/invariants.py::assert_nothing_lost` plus its own asserts on tenant versions (the
sandbox, over HTTP), ledger rows (PostgreSQL) and audit records, and states in `WITHIN_*` how
long the run may take to reach its outcome after the fault.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from powerx_dev.devstack.distributed import DistributedStack
from powerx_dev.devstack.profiles import LEDGER_DB
from powerx_upgrade.ledger import Ledger
from tests.invariants import assert_nothing_lost, fleet_of
from tests.stack.conftest import FIGURES, explain
from tests.stack.distributed.conftest import (
    FAILED_OUTSIDE_DAG,
    LEDGER_OUTAGE_DAG,
    OVERLAP_A_DAG,
    OVERLAP_B_DAG,
    assert_upgraded_once,
    conf_for,
    selected,
    upgrade_operations,
)
from tests.stack.distributed.test_distributed_stack import RUN_TIMEOUT

pytestmark = pytest.mark.stack

OUTAGE = 15.0
"""Seconds the ledger's database refuses every connection (batch 1's bake is 6 s: the gate's
end, its verdict and batch 2's start all fall in the outage)."""
WITHIN_OUTAGE = 240
"""Seconds from the ledger's return to the run's outcome (about 40-60 s on an idle machine; the
ledger waits up to `CONNECT_PATIENCE_S`, 120 s, per call, then the task fails)."""
WITHIN_OVERLAP = 300
"""Seconds from the two triggers to both runs' outcomes (each is a one-batch run)."""
WITHIN_FAILED_OUTSIDE = 30
"""Seconds from `PATCH dagRuns` (state failed) to the run's defined outcome in the ledger: the
plugin's `on_dag_run_failed` listener settles it at once, in the api-server (0.7 s measured)."""

# Six of the gold tenants each (tests/fixtures/distributed_config/upgrade_policies.yaml, # F4).
GOLD = ["t-0005", "t-0013", "t-0015", "t-0024", "t-0033", "t-0038"]
GOLD += ["t-0043", "t-0046", "t-0047", "t-0051", "t-0055", "t-0059"]
SIX = GOLD[:6]
OVERLAP_A = GOLD[:8]
OVERLAP_B = GOLD[4:]
SHARED = sorted(set(OVERLAP_A) & set(OVERLAP_B))


@pytest.fixture(autouse=True)
def _plans_match_the_fleet(dist_sandbox: httpx.Client) -> None:
    """The F4 plans name tenants by id: they must be the distributed sandbox's gold tenants."""
    gold = sorted(
        i
        for i, t in fleet_of(dist_sandbox, "crm-sync").items()
        if t["labels"].get("tier") == "gold" and t["labels"].get("internal") != "true"
    )
    assert gold == GOLD, f"the sandbox's gold tenants changed: {gold}; update the F4 plans"


def _admin(stack: DistributedStack) -> Engine:
    """A superuser connection to the stack's PostgreSQL, through the `postgres` database (a
    database that refuses connections refuses its superuser too)."""
    url = make_url(stack.ledger_url).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


@contextmanager
def ledger_refusing(stack: DistributedStack) -> Iterator[None]:
    """The ledger database refuses new connections and its open ones are cut (every pooled
    connection of every task process dies); allowed again when the block ends, also on errors."""
    admin = _admin(stack)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{LEDGER_DB}" ALLOW_CONNECTIONS false'))
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": LEDGER_DB},
            )
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{LEDGER_DB}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def _refused(stack: DistributedStack) -> bool:
    """Whether a fresh connection to the ledger database is refused right now."""
    conninfo = make_url(stack.ledger_url).set(drivername="postgresql").render_as_string(False)
    try:
        psycopg.connect(conninfo, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        return "not currently accepting connections" in str(exc)
    return False


@pytest.fixture
def started(dist_stack: DistributedStack) -> Iterator[list[tuple[str, str]]]:
    """The test's runs, (dag_id, run_id). Whatever the test asserts, they do not outlive it (a
    run still going would hold its tenants' claims and change the fleet under the next test):
    one not finished yet is marked failed, which the plugin's listener settles in the ledger."""
    runs: list[tuple[str, str]] = []
    yield runs
    for dag_id, run_id in runs:
        if dist_stack.run_state(dag_id, run_id) not in ("success", "failed"):
            _patch_failed(dist_stack, dag_id, run_id)


def _patch_failed(stack: DistributedStack, dag_id: str, run_id: str) -> dict[str, Any]:
    answer = stack.request(
        "PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"}
    )
    return dict(answer.json())


def _at(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


def _events(ledger: Ledger, run_id: str) -> list[str]:
    return [r.event for r in ledger.audit_records(run_id)]


def test_ledger_unavailable_mid_run_tasks_wait_for_it_and_nothing_is_lost(
    dist_stack: DistributedStack,
    dist_sandbox: httpx.Client,
    dist_ledger: Ledger,
    started: list[tuple[str, str]],
):
    """The ledger's database refuses connections for 15 s while batch 1 bakes, its open
    connections cut: the tasks that need it (the gate's verdict, the decision, batch 2) wait
    for it (connect-time patience of the ledger engine) instead of failing; the run promotes
    with every tenant upgraded once, every action settled and every audit record delivered
    once."""
    run_id = dist_stack.trigger(LEDGER_OUTAGE_DAG, conf_for("2.4.0", "F4: ledger outage"))
    started.append((LEDGER_OUTAGE_DAG, run_id))
    dist_stack.wait_for_task(
        LEDGER_OUTAGE_DAG, run_id, "batch_1.gate", {"deferred"}, timeout=RUN_TIMEOUT, interval=0.5
    )
    with ledger_refusing(dist_stack):
        closed_at = time.time()
        assert _refused(dist_stack), "the ledger database still accepts connections"
        seen: set[str] = set()
        while time.time() - closed_at < OUTAGE:  # the fault's length, watched meanwhile
            dist_stack.check_alive()
            seen |= {
                f"{t}={s}"
                for t, s in dist_stack.task_states(LEDGER_OUTAGE_DAG, run_id).items()
                if s
            }
            time.sleep(1.0)
    reopened_at = time.time()
    state = dist_stack.wait_for_run(LEDGER_OUTAGE_DAG, run_id, timeout=WITHIN_OUTAGE)
    took = time.time() - reopened_at
    FIGURES["F4: ledger back to run end (s)"] = took
    assert state == "success", explain(dist_stack, LEDGER_OUTAGE_DAG, run_id)
    assert took <= WITHIN_OUTAGE

    # The outage was met: a task was running across the ledger's return (it waited), and no
    # task needed a second try (no task failed over it).
    tis = dist_stack.task_instances(LEDGER_OUTAGE_DAG, run_id)
    across = [
        ti["task_id"]
        for ti in tis
        if (start := _at(ti.get("start_date"))) is not None
        and (end := _at(ti.get("end_date"))) is not None
        and start < reopened_at < end
    ]
    assert across, (seen, [(t["task_id"], t["start_date"], t["end_date"]) for t in tis])
    assert all(ti["try_number"] <= 1 for ti in tis if ti["state"] == "success"), tis

    settled = assert_nothing_lost(dist_ledger, dist_sandbox, run_id, outcomes={"promoted"})
    tenants = selected(dist_ledger, run_id)
    assert sorted(tenants) == sorted(SIX)
    assert_upgraded_once(dist_ledger, run_id, settled.fleet, tenants)
    phases = {g.batch_index: g.phase for g in dist_ledger.gate_evaluations(run_id, final_only=True)}
    assert phases == {1: "pass", 2: "pass"}
    events = _events(dist_ledger, run_id)
    assert events.count("run.started") == events.count("run.finished") == 1, events
    assert events.count("tenant.upgrade.succeeded") == len(SIX), events
    assert all(t["version"] == "2.3.1" for i, t in settled.fleet.items() if i not in SIX)


def test_two_plans_on_overlapping_tenants_at_once_each_tenant_is_upgraded_by_one_run(
    dist_stack: DistributedStack,
    dist_sandbox: httpx.Client,
    dist_ledger: Ledger,
    started: list[tuple[str, str]],
):
    """Two plans whose tenants overlap (four gold tenants in both) started together: the ledger's
    claims give each shared tenant to one run; the other records a `refused` action and audits
    `tenant.upgrade.refused` naming the holder, and carries on with its own tenants. Every tenant
    of either plan is upgraded by exactly one platform operation, under the key of the run that
    holds it; both runs reach an outcome."""
    began = time.time()
    run_a = dist_stack.trigger(OVERLAP_A_DAG, conf_for("2.4.0", "F4: overlap a"))
    started.append((OVERLAP_A_DAG, run_a))
    run_b = dist_stack.trigger(OVERLAP_B_DAG, conf_for("2.4.0", "F4: overlap b"))
    started.append((OVERLAP_B_DAG, run_b))
    state_a = dist_stack.wait_for_run(OVERLAP_A_DAG, run_a, timeout=WITHIN_OVERLAP)
    left = WITHIN_OVERLAP - (time.time() - began)
    state_b = dist_stack.wait_for_run(OVERLAP_B_DAG, run_b, timeout=max(left, 1))
    took = time.time() - began
    FIGURES["F4: overlapping plans, trigger to both ends (s)"] = took
    assert state_a == "success", explain(dist_stack, OVERLAP_A_DAG, run_a)
    assert state_b == "success", explain(dist_stack, OVERLAP_B_DAG, run_b)
    assert took <= WITHIN_OVERLAP

    runs = {run_a: OVERLAP_A, run_b: OVERLAP_B}
    for run_id, tenants in runs.items():
        assert sorted(selected(dist_ledger, run_id)) == sorted(tenants)
        assert_nothing_lost(
            dist_ledger, dist_sandbox, run_id, outcomes={"promoted", "partially_promoted"}
        )
    fleet = fleet_of(dist_sandbox, "crm-sync")
    upgrades = {
        run_id: {a.tenant_id: a for a in dist_ledger.actions(run_id, kind="upgrade")}
        for run_id in runs
    }
    refusals = {
        run_id: {t for t, a in actions.items() if a.state == "refused"}
        for run_id, actions in upgrades.items()
    }
    assert refusals[run_a] or refusals[run_b], (
        "no tenant was refused: the two runs did not deploy at the same time "
        "(the fault did not happen; the machine was too slow?)"
    )
    for tenant in sorted(set(OVERLAP_A) | set(OVERLAP_B)):
        holders = [
            run_id
            for run_id, actions in upgrades.items()
            if tenant in actions and actions[tenant].state == "succeeded"
        ]
        assert len(holders) == 1, (tenant, holders, upgrades)
        (holder,) = holders
        (operation,) = upgrade_operations(fleet[tenant], "2.4.0")
        assert operation["idempotency_key"].startswith(
            f"{upgrades[holder][tenant].idempotency_key}#"
        ), (tenant, operation)
        assert fleet[tenant]["version"] == "2.4.0"
        other = next(r for r in runs if r != holder)
        if tenant in runs[other]:  # a shared tenant: the other run refused it, audited
            assert tenant in SHARED
            assert tenant in refusals[other], (tenant, upgrades[other].get(tenant))
            assert f"held by run {holder}" in (upgrades[other][tenant].error or "") or (
                holder in (upgrades[other][tenant].error or "")
            ), upgrades[other][tenant]
    for run_id in runs:
        assert refusals[run_id] <= set(SHARED)
        refused_audit = [
            r for r in dist_ledger.audit_records(run_id) if r.event == "tenant.upgrade.refused"
        ]
        assert sorted(t for r in refused_audit for t in r.payload["tenants"]) == sorted(
            refusals[run_id]
        ), refused_audit
        other = next(r for r in runs if r != run_id)
        assert all(r.payload["details"]["held_by"] == other for r in refused_audit)
    # The claims were atomic per shard: one run holds all four shared tenants.
    assert sorted(refusals[run_a] | refusals[run_b]) == SHARED
    assert not (refusals[run_a] and refusals[run_b])
    untouched = set(fleet) - set(OVERLAP_A) - set(OVERLAP_B)
    assert all(fleet[t]["version"] == "2.3.1" for t in untouched)
    for run_id in runs:
        assert dist_ledger.claimed_tenants(run_id) == []


def test_a_run_marked_failed_from_outside_while_it_bakes_is_settled_in_the_ledger(
    dist_stack: DistributedStack,
    dist_sandbox: httpx.Client,
    dist_ledger: Ledger,
    started: list[tuple[str, str]],
):
    """`PATCH dagRuns/{id}` state failed while batch 1 bakes (its gate deferred). Airflow 3.3
    fails the running/deferred task instances, skips the pending ones (`finalize` included) and
    runs no DAG callback; it calls the plugin listeners' `on_dag_run_failed` in the api-server.
    The plugin's listener settles the run (reconcile's fixes for it): the ledger finishes it as
    `failed` within seconds, its claims released, the batch-1 tenants recorded and seen on
    2.4.0, the others untouched on 2.3.1, the fix audited and delivered."""
    run_id = dist_stack.trigger(FAILED_OUTSIDE_DAG, conf_for("2.4.0", "F4: failed from outside"))
    started.append((FAILED_OUTSIDE_DAG, run_id))
    dist_stack.wait_for_task(
        FAILED_OUTSIDE_DAG, run_id, "batch_1.gate", {"deferred"}, timeout=RUN_TIMEOUT, interval=0.5
    )
    held = dist_ledger.claimed_tenants(run_id)
    assert len(held) == 2, held
    patched_at = time.time()
    assert _patch_failed(dist_stack, FAILED_OUTSIDE_DAG, run_id)["state"] == "failed"

    def finished() -> Any:
        record = dist_ledger.get_run(run_id)
        return record if record is not None and not record.active else None

    record = dist_stack.wait_for(
        finished,
        timeout=WITHIN_FAILED_OUTSIDE,
        interval=0.5,
        what=f"the ledger to finish run {run_id} after it was marked failed",
        describe=lambda: dist_stack.describe_run(FAILED_OUTSIDE_DAG, run_id),
    )
    took = time.time() - patched_at
    FIGURES["F4: marked failed to settled in the ledger (s)"] = took
    assert took <= WITHIN_FAILED_OUTSIDE

    # What Airflow did: the baking gate failed, everything after it skipped, finalize never ran.
    states = dist_stack.task_states(FAILED_OUTSIDE_DAG, run_id)
    assert dist_stack.run_state(FAILED_OUTSIDE_DAG, run_id) == "failed"
    assert states["batch_1.gate"] == "failed", states
    assert states["finalize.record"] in ("skipped", None), states
    assert not any(s == "success" for t, s in states.items() if t.startswith("batch_2.")), states

    assert record.outcome == "failed", record
    assert (record.detail or {}).get("reconciled"), record.detail
    assert dist_ledger.claimed_tenants(run_id) == []
    settled = assert_nothing_lost(dist_ledger, dist_sandbox, run_id, outcomes={"failed"})
    upgraded = sorted(
        a.tenant_id for a in dist_ledger.actions(run_id, kind="upgrade") if a.state == "succeeded"
    )
    assert upgraded == sorted(held)
    assert_upgraded_once(dist_ledger, run_id, settled.fleet, upgraded)
    assert all(settled.fleet[t]["version"] == "2.3.1" for t in SIX if t not in held)
    events = _events(dist_ledger, run_id)
    assert events.count("reconcile.fix.finish_run") == 1, events
    fix = next(r for r in dist_ledger.audit_records(run_id) if r.event.endswith("finish_run"))
    assert fix.payload["actor"] == "airflow.dag_run_failed"
    assert sorted(fix.payload["tenants"]) == sorted(held)
