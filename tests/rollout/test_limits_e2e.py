"""The policy's limits kept by the run's own steps, against the sandbox over HTTP with a real
SQLite ledger: preflight refuses a downgrade (naming the tenants) unless allowed; a run past
its blast-radius budget fails its gate before the first poke and rolls back (tenant versions
read back); a missed success floor raises the `success_floor` alert (audit record)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.domain.decide import Action
from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook
from powerx_upgrade.rollout import gate_steps, preflight, rollback, run_steps
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.rollout.services import Services
from tests.conftest import CONFIG_DIR
from tests.rollout.test_rollback_scope import Counted

pytestmark = pytest.mark.e2e


def plan_with(**policy: Any) -> Plan:
    body = {
        "batches": [{"count": 3, "bake": "10s"}, {"ratio": 1.0, "bake": "10s"}],
        "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
        **policy,
    }
    return Plan(
        id="p",
        source=SourceRef(file="plans.yaml"),
        plugin="crm-sync",
        policy_id="grey",
        policy=Policy.model_validate(body),
        tenants=TenantSelection(exclude=[{"internal": "true"}]),
    )


def context(target: str = "2.4.0", **kw: Any) -> RunContext:
    return RunContext(
        run_id="run-limits",
        dag_id="d",
        plan_id="p",
        plugin="crm-sync",
        target_version=target,
        artifact={"uri": "s3://x/crm.tgz", "sha256": "a" * 64},
        **kw,
    )


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
def services(sandbox: httpx.Client, tmp_path: Path) -> Services:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    return Services(ledger, Recorder(ledger), PowerXPlatformHook(retries=0), Counted())  # type: ignore[arg-type]


def versions(client: httpx.Client) -> dict[str, str]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return {t["id"]: t["version"] for t in tenants}


def begin(services: Services, plan: Plan, ctx: RunContext) -> dict[str, Any]:
    preflight.start_run(services.ledger, ctx)
    return preflight.plan_run(services.platform, services.ledger, plan, ctx, services.recorder)


def events(services: Services, ctx: RunContext) -> list[str]:
    return [r.event for r in services.ledger.audit_records(ctx.run_id)]


def test_preflight_refuses_a_downgrade_naming_the_tenants_and_plans_nothing(sandbox, services):
    ctx = context(target="2.3.0")
    with pytest.raises(preflight.DowngradeRefused, match=r"t-\d+ \(2\.3\.1\)") as refused:
        begin(services, plan_with(), ctx)
    assert "allow_downgrade" in str(refused.value)
    run = services.ledger.get_run(ctx.run_id)
    assert run is not None and not run.batches
    [record] = [
        r for r in services.ledger.audit_records(ctx.run_id) if r.event == "run.downgrade_refused"
    ]
    assert len(record.payload["details"]["newer"]) == 60  # the internal tenant is excluded
    assert set(versions(sandbox).values()) == {"2.3.1"}


def test_allow_downgrade_in_the_run_lets_preflight_plan_the_batches(sandbox, services):
    ctx = context(target="2.3.0", allow_downgrade=True)
    summary = begin(services, plan_with(), ctx)
    assert summary["selected"] == 60
    run = services.ledger.get_run(ctx.run_id)
    assert run is not None and len(run.detail["downgrades"]) == 60


FIRST = 1
"""Batches are numbered from 1."""


def deploy_first_batch(services: Services, plan: Plan, ctx: RunContext) -> None:
    for shard in run_steps.deploy_shards(services.ledger, plan, ctx, FIRST):
        run_steps.deploy_shard(services, plan, ctx, FIRST, shard["shard"])


async def never(*_: Any) -> dict[str, Any]:
    raise AssertionError("a run past its budget must not poke monitoring")


def test_a_run_past_max_exposed_fails_its_gate_unpoked_and_rolls_back(sandbox, services):
    plan, ctx = plan_with(budget={"max_exposed": 2}), context()
    begin(services, plan, ctx)
    deploy_first_batch(services, plan, ctx)
    first = services.ledger.get_run(ctx.run_id).batches[0]["tenants"]  # type: ignore[union-attr]
    assert [versions(sandbox)[t] for t in first] == ["2.4.0"] * 3
    step = gate_steps.first_poke(services, plan, ctx, FIRST, never)
    assert step.verdict is not None and step.verdict["phase"] == "fail"
    assert "budget.max_exposed 2" in step.verdict["reason"]
    assert run_steps.decide_batch(services, plan, ctx, FIRST, step.verdict) is Action.ROLLBACK
    for shard in rollback.start_batch_rollback(services, plan, ctx):
        rollback.execute_batch_rollback(services, plan, ctx, shard["shard"])
    assert rollback.verify_batch_rollback(services, plan, ctx)["verified"] == 3
    assert set(versions(sandbox).values()) == {"2.3.1"}
    assert "batch.rollback" in events(services, ctx)


def test_a_run_within_its_budget_goes_on_to_its_bake(sandbox, services):
    plan, ctx = plan_with(budget={"max_exposed": 3, "max_failed_tenants": 0}), context()
    begin(services, plan, ctx)
    deploy_first_batch(services, plan, ctx)

    async def query(*_: Any) -> dict[str, Any]:
        return {"tenants": {}}

    step = gate_steps.first_poke(services, plan, ctx, FIRST, query)
    # no verdict yet: the gate defers to watch its bake (the budget did not end it)
    assert step.verdict is None and step.watch["batch"] == FIRST


def test_a_missed_batch_floor_raises_the_success_floor_alert_at_the_end(sandbox, services):
    plan = plan_with(budget={"max_exposed": 2}, success_floors={"batch": "100%"})
    ctx = context()
    begin(services, plan, ctx)
    deploy_first_batch(services, plan, ctx)
    step = gate_steps.first_poke(services, plan, ctx, FIRST, never)
    assert step.verdict is not None
    run_steps.decide_batch(services, plan, ctx, FIRST, step.verdict)
    ended = run_steps.end_run(services, plan, ctx)
    assert ended["success_floor_missed"] is True
    [alert] = [
        r for r in services.ledger.audit_records(ctx.run_id) if r.event == "alert.success_floor"
    ]
    details = alert.payload["details"]
    assert details["context"]["batch"] == {
        "value": 0.0,
        "succeeded": 0,
        "counted": 1,
        "floor": 1.0,
    }
    assert "upgrade" not in details["context"]  # 3 of 3 upgrades succeeded: 98 % is met
