"""Per-tenant upgrades and rollbacks against the sandbox over HTTP, with a real SQLite ledger:
idempotency across task retries, retries of lost answers, refusals, rollback verification."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.operations import (
    RetryPolicy,
    deploy_shard,
    rollback_shard,
    verify_rollback,
)
from powerx_upgrade.rollout.record import Recorder
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e

TENANTS = ["t-0001", "t-0002", "t-0003", "t-0004"]


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_PLATFORM", sandbox_url)
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        client.post("/sandbox/reset").raise_for_status()
        yield client


@pytest.fixture
def book(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def context(run_id: str = "run-1") -> RunContext:
    return RunContext(
        run_id=run_id,
        dag_id="d",
        plan_id="p",
        plugin="crm-sync",
        target_version="2.4.0",
        artifact={"uri": "s3://x/crm.tgz", "sha256": "a" * 64},
    )


def start(book: Ledger, ctx: RunContext) -> None:
    book.start_run(
        ctx.run_id,
        dag_id=ctx.dag_id,
        plan_id=ctx.plan_id,
        plugin=ctx.plugin,
        target_version=ctx.target_version,
    )


def operations_of(client: httpx.Client, tenant: str, kind: str = "upgrade") -> list[dict]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    found = next(t for t in tenants if t["id"] == tenant)
    return [op for op in found["operations"] if op["kind"] == kind and not op["noop"]]


FAST = RetryPolicy(retries=2, backoff=0.01)


def deploy(book: Ledger, ctx: RunContext, tenants=TENANTS, retry=FAST, hook=None):
    return deploy_shard(
        hook or PowerXPlatformHook(retries=0),
        book,
        Recorder(book),
        ctx,
        batch=1,
        tenants=tenants,
        concurrency=4,
        retry=retry,
    )


def test_rerunning_a_deploy_shard_upgrades_nobody_twice(sandbox, book):
    ctx = context()
    start(book, ctx)
    first = deploy(book, ctx)
    assert first.count("succeeded") == 4
    again = deploy(book, ctx)
    assert again.count("skipped") == 4 and again.count("succeeded") == 0
    for tenant in TENANTS:
        assert len(operations_of(sandbox, tenant)) == 1


def test_a_task_that_died_after_the_platform_call_replays_instead_of_acting_again(sandbox, book):
    ctx = context()
    start(book, ctx)
    key = ctx.key("upgrade", "t-0001")
    book.begin_action(
        run_id=ctx.run_id,
        plugin=ctx.plugin,
        tenant_id="t-0001",
        batch_index=1,
        kind="upgrade",
        from_version="2.3.1",
        to_version="2.4.0",
        idempotency_key=key,
        from_config="cfg-1",
    )
    PowerXPlatformHook().upgrade(
        "crm-sync", "t-0001", version="2.4.0", artifact=ctx.artifact, idempotency_key=f"{key}#1"
    )  # ... and the task died here
    result = deploy(book, ctx, tenants=["t-0001"])
    assert result.results[0].state == "succeeded"  # not "already on target": this run did it
    assert book.get_action(key).from_version == "2.3.1"
    assert len(operations_of(sandbox, "t-0001")) == 1


def test_a_lost_answer_is_retried_with_the_same_key(sandbox, book):
    ctx = context()
    start(book, ctx)
    sandbox.post(
        "/sandbox/faults",
        json={
            "faults": [
                {
                    "type": "timeout",
                    "endpoint": "upgrade",
                    "rate": 1.0,
                    "hold": "3s",
                    "duration": "2s",
                    "applied": True,
                }
            ]
        },
    ).raise_for_status()
    hook = PowerXPlatformHook(retries=0, timeout=1.0)
    result = deploy(
        book, ctx, tenants=["t-0002"], hook=hook, retry=RetryPolicy(retries=3, backoff=1.5)
    )
    assert result.results[0].state == "succeeded"
    assert len(operations_of(sandbox, "t-0002")) == 1


def test_a_platform_reported_failure_is_retried_then_recorded(sandbox, book):
    ctx = context()
    start(book, ctx)
    sandbox.post(
        "/sandbox/faults",
        json={"faults": [{"type": "deploy_failure", "tenants": ["t-0003"], "rate": 1.0}]},
    ).raise_for_status()
    result = deploy(book, ctx, tenants=["t-0003"])
    outcome = result.results[0]
    assert outcome.state == "failed" and outcome.attempts == 3
    assert "health check" in (outcome.error or "")
    action = book.get_action(ctx.key("upgrade", "t-0003"))
    assert action.state == "failed" and action.attempts == 3


def test_a_tenant_held_by_another_active_run_is_refused_with_a_record(sandbox, book):
    other, ours = context("run-other"), context("run-ours")
    start(book, other)
    start(book, ours)
    book.claim_tenants(other.run_id, "crm-sync", ["t-0004"])
    result = deploy(book, ours, tenants=["t-0004", "t-0001"])
    states = {r.tenant: r.state for r in result.results}
    assert states == {"t-0004": "refused", "t-0001": "succeeded"}
    refusals = book.actions(ours.run_id, state="refused")
    assert [a.tenant_id for a in refusals] == ["t-0004"]
    assert operations_of(sandbox, "t-0004") == []


def test_rollback_restores_version_and_config_and_verification_reads_it_back(sandbox, book):
    ctx = context()
    start(book, ctx)
    before = {t["id"]: t for t in PowerXPlatformHook().list_tenants("crm-sync")}
    deploy(book, ctx)
    targets = [{"tenant": t, "from_version": "2.3.1", "batch": 1} for t in TENANTS]
    summary = rollback_shard(
        PowerXPlatformHook(retries=0),
        book,
        Recorder(book),
        ctx,
        targets=targets,
        concurrency=4,
        retry=FAST,
    )
    assert summary.count("succeeded") == 4
    upgrades = {a.tenant_id: a for a in book.actions(ctx.run_id, kind="upgrade")}
    verdict = verify_rollback(PowerXPlatformHook(), ctx, targets, upgrades)
    assert verdict["broken"] == [] and len(verdict["verified"]) == 4
    after = {t["id"]: t for t in PowerXPlatformHook().list_tenants("crm-sync")}
    assert all(after[t]["config_version"] == before[t]["config_version"] for t in TENANTS)


def test_verification_names_a_tenant_that_did_not_come_back(sandbox, book):
    ctx = context()
    start(book, ctx)
    deploy(book, ctx, tenants=["t-0001"])
    targets = [{"tenant": "t-0001", "from_version": "2.3.1", "batch": 1}]
    upgrades = {a.tenant_id: a for a in book.actions(ctx.run_id, kind="upgrade")}
    verdict = verify_rollback(PowerXPlatformHook(), ctx, targets, upgrades)  # never rolled back
    assert verdict["broken"][0]["tenant"] == "t-0001"
    assert "on 2.4.0, expected 2.3.1" in verdict["broken"][0]["problems"]


def test_a_throttled_platform_slows_the_shard_down_instead_of_failing_tenants(sandbox, book):
    ctx = context()
    start(book, ctx)
    sandbox.post(
        "/sandbox/faults",
        json={
            "faults": [
                {
                    "type": "http_error",
                    "endpoint": "upgrade",
                    "status": 429,
                    "rate": 1.0,
                    "duration": "5s",
                }
            ]
        },
    ).raise_for_status()
    result = deploy(book, ctx, retry=RetryPolicy(retries=0, backoff=0.01))
    assert result.count("succeeded") == 4  # 429s cost no retry: none of them fails
    assert result.pacing["throttled"] >= 1
    assert result.pacing["lowest"] < result.pacing["ceiling"] == 4
    assert result.as_dict()["pacing"] == result.pacing
    for tenant in TENANTS:
        assert len(operations_of(sandbox, tenant)) == 1
        assert book.get_action(ctx.key("upgrade", tenant)).state == "succeeded"


def test_a_late_rollback_rolls_back_the_free_tenants_when_another_run_holds_one(sandbox, book):
    from powerx_upgrade.ledger import TenantHeld

    ctx = context()
    start(book, ctx)
    assert deploy(book, ctx).count("succeeded") == 4
    book.finish_run(ctx.run_id, "promoted")
    newer = context("run-2")
    start(book, newer)
    book.claim_tenants(newer.run_id, "crm-sync", ["t-0002"])
    targets = [{"tenant": t, "from_version": "2.3.1", "batch": 1} for t in TENANTS]
    with pytest.raises(TenantHeld, match="t-0002"):
        rollback_shard(
            PowerXPlatformHook(retries=0),
            book,
            Recorder(book),
            ctx,
            targets=targets,
            concurrency=4,
            retry=FAST,
        )
    for tenant in ("t-0001", "t-0003", "t-0004"):
        assert len(operations_of(sandbox, tenant, "rollback")) == 1
        assert book.get_action(ctx.key("rollback", tenant)).state == "succeeded"
    assert operations_of(sandbox, "t-0002", "rollback") == []
    assert book.get_action(ctx.key("rollback", "t-0002")) is None
