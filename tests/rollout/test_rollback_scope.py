"""A batch rollback applies the scope an operator asked for (else the policy's), and a rollback
slower than the policy's `rollback.deadline` raises the rollback-failure alert: against the
sandbox over HTTP with a real SQLite ledger; tenant versions, ledger rows and audit records."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook
from powerx_upgrade.rollout import rollback
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.operations import RetryPolicy, deploy_shard
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.rollout.services import Services
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e

CANARY, SECOND = ["t-0001", "t-0002"], ["t-0003", "t-0004"]


def plan_with(scope: str = "all_upgraded", deadline: str = "3m") -> Plan:
    policy = Policy.model_validate(
        {
            "batches": [{"ratio": 0.5, "bake": "10s"}, {"ratio": 1.0, "bake": "10s"}],
            "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
            "rollback": {"scope": scope, "deadline": deadline},
        }
    )
    return Plan(
        id="p",
        source=SourceRef(file="plans.yaml"),
        plugin="crm-sync",
        policy_id="grey",
        policy=policy,
        tenants=TenantSelection(),
    )


CTX = RunContext(
    run_id="run-scope",
    dag_id="d",
    plan_id="p",
    plugin="crm-sync",
    target_version="2.4.0",
    artifact={"uri": "s3://x/crm.tgz", "sha256": "a" * 64},
)


class Counted:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def count(self, name: str, tags: dict[str, str]) -> None:
        self.seen.append((name, 1))

    def gauge(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.seen.append((name, value))

    def timing(self, name: str, milliseconds: float, tags: dict[str, str]) -> None:
        self.seen.append((name, milliseconds))


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
    ledger.start_run(CTX.run_id, dag_id="d", plan_id="p", plugin="crm-sync", target_version="2.4.0")
    recorder = Recorder(ledger)
    platform = PowerXPlatformHook(retries=0)
    for batch, tenants in ((0, CANARY), (1, SECOND)):
        done = deploy_shard(
            platform,
            ledger,
            recorder,
            CTX,
            batch=batch,
            tenants=tenants,
            concurrency=2,
            retry=RetryPolicy(retries=1, backoff=0.01),
        )
        assert done.count("succeeded") == len(tenants)
    return Services(ledger, recorder, platform, Counted())  # type: ignore[arg-type]


def versions(client: httpx.Client) -> dict[str, Any]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return {t["id"]: t["version"] for t in tenants}


def roll_back(services: Services, plan: Plan, decided_at: datetime | None = None) -> dict:
    services.ledger.record_decision(
        CTX.run_id, batch_index=1, kind="decide", decision="rollback", decided_at=decided_at
    )
    for shard in rollback.start_batch_rollback(services, plan, CTX):
        rollback.execute_batch_rollback(services, plan, CTX, shard["shard"])
    return rollback.verify_batch_rollback(services, plan, CTX)


def test_a_running_runs_rollback_applies_the_requested_scope_not_the_policys(sandbox, services):
    before = versions(sandbox)
    assert all(before[t] == "2.4.0" for t in CANARY + SECOND)
    services.ledger.request_control(
        CTX.run_id, "rollback", payload={"scope": "batch", "reason": "r"}, actor="ops"
    )
    result = roll_back(services, plan_with(scope="all_upgraded"))
    after = versions(sandbox)
    assert [after[t] for t in CANARY] == ["2.4.0", "2.4.0"]  # batch 0 stays: scope batch
    assert all(after[t] != "2.4.0" for t in SECOND)
    run = services.ledger.get_run(CTX.run_id)
    assert run is not None
    assert (run.detail["rollback_scope"], run.detail["rollback_scope_source"]) == (
        "batch",
        "requested",
    )
    rolled = services.ledger.actions(CTX.run_id, kind="rollback")
    assert sorted(a.tenant_id for a in rolled) == SECOND
    assert result["verified"] == 2


def test_without_a_request_the_policys_scope_applies(sandbox, services):
    roll_back(services, plan_with(scope="all_upgraded"))
    after = versions(sandbox)
    assert all(after[t] != "2.4.0" for t in CANARY + SECOND)
    run = services.ledger.get_run(CTX.run_id)
    assert run is not None and run.detail["rollback_scope_source"] == "policy"


def test_a_rollback_slower_than_its_deadline_raises_the_rollback_failure_alert(sandbox, services):
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    result = roll_back(services, plan_with(deadline="1m"), decided_at=long_ago)
    assert result["duration_ms"] > 60_000 and result["broken"] == []
    records = services.ledger.audit_records(CTX.run_id)
    [alert] = [r for r in records if r.event == "alert.rollback_failure"]
    context = alert.payload["details"]["context"]
    assert context["deadline_overrun"] is True and context["deadline_ms"] == 60_000
    assert "longer than rollback.deadline 1m" in alert.payload["details"]["message"]
    assert all(v != "2.4.0" for t, v in versions(sandbox).items() if t in CANARY + SECOND)


def test_a_rollback_within_its_deadline_raises_no_alert(sandbox, services):
    roll_back(services, plan_with(deadline="3m"))
    events = [r.event for r in services.ledger.audit_records(CTX.run_id)]
    assert "alert.rollback_failure" not in events


def test_an_unknown_requested_scope_is_refused():
    with pytest.raises(rollback.RollbackRefused, match="scope"):
        rollback.applied_scope("everything", None)
    assert rollback.applied_scope(None, None) == ("all_upgraded", "default")
