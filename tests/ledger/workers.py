"""Process entry points for the ledger concurrency test (importable under `spawn`)."""

from __future__ import annotations

import random
import traceback
from typing import Any

from powerx_upgrade.ledger import AuditEntry, Ledger

PLUGIN = "crm-sync"
SHARED_PLUGIN = "billing"
SHARED_RUN = "shared-run"
SHARED_KEYS = 15
COUNTER_KEY = "shared:counter"
COUNTER_BUMPS = 10


def rollout(url: str, run_id: str, tenants: list[str], seed: int, barrier: Any, out: Any) -> None:
    """One "deploy task" process: claims its tenants, upgrades the claimed, refuses the rest,
    and races the other processes on a shared run, shared keys and a shared counter."""
    try:
        barrier.wait(timeout=20)  # every process opens the fresh database at once
        ledger = Ledger(url)
        ledger.start_run(run_id, dag_id="d", plan_id="p", plugin=PLUGIN, target_version="2.4.0")
        ledger.start_run(
            SHARED_RUN, dag_id="d", plan_id="shared", plugin=SHARED_PLUGIN, target_version="1.1"
        )
        barrier.wait(timeout=20)
        order = list(tenants)
        random.Random(seed).shuffle(order)
        refused: dict[str, str] = {}
        for start in range(0, len(order), 7):
            refused.update(ledger.claim_tenants(run_id, PLUGIN, order[start : start + 7]))
        claimed = sorted(set(tenants) - set(refused))
        for tenant in claimed:
            key = f"{run_id}:{tenant}:upgrade"
            ledger.begin_action(
                run_id=run_id,
                plugin=PLUGIN,
                tenant_id=tenant,
                batch_index=0,
                kind="upgrade",
                from_version="2.3.1",
                to_version="2.4.0",
                idempotency_key=key,
            )
            ledger.finish_action(
                key, "succeeded", audit=AuditEntry("upgrade", {"tenant": tenant}, f"done:{key}")
            )
        for tenant, holder in sorted(refused.items()):
            ledger.record_refusal(
                run_id=run_id,
                plugin=PLUGIN,
                tenant_id=tenant,
                batch_index=0,
                reason=f"held by {holder}",
            )
        _race_on_shared_rows(ledger, seed)
        out.put(("ok", run_id, claimed, refused))
    except BaseException:  # every failure, "database is locked" included, goes to the test
        out.put(("error", run_id, traceback.format_exc(), None))


def _race_on_shared_rows(ledger: Ledger, seed: int) -> None:
    keys = list(range(SHARED_KEYS))
    random.Random(seed + 1).shuffle(keys)
    for i in keys:
        ledger.begin_action(
            run_id=SHARED_RUN,
            plugin=SHARED_PLUGIN,
            tenant_id=f"s-{i}",
            batch_index=None,
            kind="upgrade",
            from_version="1.0",
            to_version="1.1",
            idempotency_key=f"shared:{i}",
        )
        ledger.enqueue_audit(run_id=SHARED_RUN, event="shared", payload={"i": i}, audit_id=f"s{i}")
    ledger.begin_action(
        run_id=SHARED_RUN,
        plugin=SHARED_PLUGIN,
        tenant_id="counter",
        batch_index=None,
        kind="upgrade",
        from_version="1.0",
        to_version="1.1",
        idempotency_key=COUNTER_KEY,
    )
    for _ in range(COUNTER_BUMPS):
        # read-then-write in one transaction: attempts = attempts + 1 must lose no bump
        ledger.finish_action(COUNTER_KEY, "failed", error="again")


def use_inherited(ledger: Ledger, out: Any) -> None:
    """In a forked child: report whether the inherited pool was emptied, then write."""
    try:
        inherited = ledger._engine.pool.checkedin()
        for i in range(20):
            key = f"child:{i}"
            ledger.begin_action(
                run_id="run-1",
                plugin=PLUGIN,
                tenant_id=f"c-{i}",
                batch_index=0,
                kind="upgrade",
                from_version="1",
                to_version="2",
                idempotency_key=key,
            )
            ledger.finish_action(key, "succeeded")
        out.put(("ok", inherited))
    except BaseException:
        out.put(("error", traceback.format_exc()))
