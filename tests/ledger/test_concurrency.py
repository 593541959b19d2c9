"""Several OS processes on one ledger (an SQLite file), as Airflow's LocalExecutor runs mapped
deploys."""

from __future__ import annotations

import multiprocessing
import queue
import sqlite3
from collections import Counter

import pytest

from powerx_upgrade.ledger import Ledger
from tests.ledger import workers
from tests.ledger.conftest import sqlite_path

pytestmark = pytest.mark.unit

PROCESSES = 4
TENANTS = [f"t-{i:03d}" for i in range(60)]


def _wanted(process: int) -> list[str]:
    # every tenant is wanted by three of the four processes
    return [t for j, t in enumerate(TENANTS) if (j + process) % PROCESSES != 0]


def test_concurrent_processes_lose_no_write_and_claim_each_tenant_once(ledger_url):
    url = ledger_url
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    out = context.Queue()
    processes = [
        context.Process(target=workers.rollout, args=(url, f"run-{p}", _wanted(p), p, barrier, out))
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        results = [out.get(timeout=60) for _ in processes]
    except queue.Empty:  # pragma: no cover - a hung worker
        pytest.fail("a worker process did not report within 60 s")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():  # pragma: no cover
                process.kill()

    errors = [detail for status, _, detail, _ in results if status != "ok"]
    assert not errors, "\n\n".join(errors)
    claimed = {run_id: set(tenants) for _, run_id, tenants, _ in results}
    refused = {run_id: refusals for _, run_id, _, refusals in results}

    # each tenant has exactly one holder, and every process saw that same holder
    holders = Counter(t for tenants in claimed.values() for t in tenants)
    assert set(holders) == set(TENANTS)
    assert set(holders.values()) == {1}
    holder_of = {t: run_id for run_id, tenants in claimed.items() for t in tenants}
    for p in range(PROCESSES):
        run_id = f"run-{p}"
        assert claimed[run_id] | set(refused[run_id]) == set(_wanted(p))
        assert all(holder_of[t] == holder for t, holder in refused[run_id].items())

    ledger = Ledger(url)
    for run_id, tenants in claimed.items():
        assert set(ledger.claimed_tenants(run_id)) == tenants
        upgrades = ledger.actions(run_id, state="succeeded")
        assert sorted(a.tenant_id for a in upgrades) == sorted(tenants)
        assert all(a.attempts == 1 and a.finished_at for a in upgrades)
        refusals = ledger.actions(run_id, state="refused")
        assert {a.tenant_id: a.detail["held_by"] for a in refusals} == refused[run_id]
        assert len(ledger.actions(run_id)) == len(upgrades) + len(refusals)
        assert len(ledger.audit_records(run_id)) == len(tenants)

    # one shared run, one row per shared key, one audit record per shared id
    assert len([r for r in ledger.runs() if r.run_id == workers.SHARED_RUN]) == 1
    shared = ledger.actions(workers.SHARED_RUN)
    assert len(shared) == workers.SHARED_KEYS + 1
    assert len(ledger.audit_records(workers.SHARED_RUN)) == workers.SHARED_KEYS
    # no lost update: every process's read-then-write bump of the counter counted
    counter = ledger.get_action(workers.COUNTER_KEY)
    assert counter.attempts == PROCESSES * workers.COUNTER_BUMPS
    assert "earlier_errors" not in counter.detail  # the same error each time: nothing to keep

    if url.startswith("sqlite"):
        raw = sqlite3.connect(sqlite_path(url))
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_forked_child_opens_its_own_connections_and_both_keep_writing(ledger_url):
    # LocalExecutor forks task runners: a ledger opened before the fork must stay usable
    ledger = Ledger(ledger_url)
    ledger.start_run("run-1", dag_id="d", plan_id="p", plugin=workers.PLUGIN, target_version="2")
    assert ledger._engine.pool.checkedin() >= 1  # the parent has a pooled connection to leak
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=workers.use_inherited, args=(ledger, out))
    child.start()
    for i in range(20):
        key = f"parent:{i}"
        ledger.begin_action(
            run_id="run-1",
            plugin=workers.PLUGIN,
            tenant_id=f"p-{i}",
            batch_index=0,
            kind="upgrade",
            from_version="1",
            to_version="2",
            idempotency_key=key,
        )
        ledger.finish_action(key, "succeeded")
    result = out.get(timeout=60)
    child.join(timeout=30)

    assert result == ("ok", 0), result
    assert len(ledger.actions("run-1", state="succeeded")) == 40
