"""Nothing a rollback step hands to XCom grows with the fleet (issue 16): the batch rollback group
and the `plugin_upgrade_rollback` DAG pass ledger references ({start, end, of}) to their mapped
shards and keep target lists and verifications in the ledger. Against the sandbox over HTTP with
a real SQLite ledger, for a small and a ten times larger fleet; every value a step returns (what
Airflow would store as XCom) is measured as JSON, and the tenants are back at the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
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
from powerx_upgrade.rollout.metrics import NoMetrics
from powerx_upgrade.rollout.operations import RetryPolicy, deploy_shard
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.rollout.services import Services

pytestmark = pytest.mark.e2e

SMALL, LARGE = 6, 60
SHARD = 5
ITEM_LIMIT = 400
"""Bytes of JSON any one XCom value of a rollback step may take, whatever the fleet. The old
shapes took about 55 bytes per tenant: the late rollback's chosen targets and verification of
60 tenants are several KB, a shard's target list about 55 x its size."""
PER_SHARD = 64
"""Bytes per shard of the scope step's list of shard references (Airflow maps over it): about
47 at these sizes, 64 leaves room for six-digit positions (100,000 tenants)."""

SCENARIO = """
name: bounded-xcom
seed: 7
plugin: crm-sync
tenants: {{count: {count}, version: 2.3.1}}
latency: {{upgrade_ms: 1, rollback_ms: 1, jitter: 0}}
traffic: {{rps: 5, error_rate: 0.01, latency_p95_ms: 100}}
versions:
  2.4.0: {{error_rate: 0.01, latency_p95_ms: 100}}
"""


def plan() -> Plan:
    policy = Policy.model_validate(
        {
            "batches": [{"ratio": 1.0, "bake": "10s"}],
            "deploy": {"shard_size": SHARD, "concurrency": 5},
            "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
            "rollback": {"scope": "all_upgraded", "concurrency": 5},
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


def context(run_id: str) -> RunContext:
    return RunContext(
        run_id=run_id,
        dag_id="d",
        plan_id="p",
        plugin="crm-sync",
        target_version="2.4.0",
        artifact={"uri": "s3://x/crm.tgz", "sha256": "a" * 64},
    )


@pytest.fixture(params=[SMALL, LARGE], ids=["small-fleet", "large-fleet"])
def fleet(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[int, httpx.Client]]:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO.format(count=request.param))
    with running_sandbox(scenario) as url:
        monkeypatch.setenv("AIRFLOW_CONN_POWERX_PLATFORM", url)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield request.param, client


def versions(client: httpx.Client) -> dict[str, str]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return {t["id"]: t["version"] for t in tenants}


def upgraded(client: httpx.Client, tmp_path: Path, run_id: str) -> Services:
    """A run that upgraded the whole fleet (the rollout's own deploy step)."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.start_run(run_id, dag_id="d", plan_id="p", plugin="crm-sync", target_version="2.4.0")
    recorder = Recorder(ledger)
    platform = PowerXPlatformHook(retries=0)
    tenants = sorted(versions(client))
    done = deploy_shard(
        platform,
        ledger,
        recorder,
        context(run_id),
        batch=0,
        tenants=tenants,
        concurrency=10,
        retry=RetryPolicy(retries=1, backoff=0.01),
    )
    assert done.count("succeeded") == len(tenants)
    assert set(versions(client).values()) == {"2.4.0"}
    return Services(ledger, recorder, platform, NoMetrics())  # type: ignore[arg-type]


def size(value: Any) -> int:
    return len(json.dumps(value, default=str))


def assert_bounded(scope: list[dict[str, Any]], values: list[Any], tenants: int) -> None:
    assert len(scope) == -(-tenants // SHARD)  # one reference per shard, as for deploy
    assert all(set(item["shard"]) == {"start", "end", "of"} for item in scope)
    assert size(scope) <= PER_SHARD * len(scope)
    for value in [*scope, *values]:
        assert size(value) <= ITEM_LIMIT, value


def test_the_batch_rollback_passes_ledger_references_not_tenants(fleet, tmp_path):
    tenants, client = fleet
    services, ctx = upgraded(client, tmp_path, "run-batch"), context("run-batch")
    services.ledger.record_decision(ctx.run_id, batch_index=0, kind="decide", decision="rollback")
    scope = rollback.start_batch_rollback(services, plan(), ctx)
    summaries = [
        rollback.execute_batch_rollback(services, plan(), ctx, item["shard"]) for item in scope
    ]
    verified = rollback.verify_batch_rollback(services, plan(), ctx)
    assert_bounded(scope, [*summaries, verified], tenants)
    assert sum(s["succeeded"] for s in summaries) == tenants
    assert verified["verified"] == tenants and verified["broken"] == []
    run = services.ledger.get_run(ctx.run_id)
    assert run is not None and len(run.detail["rollback_targets"]) == tenants  # in the ledger
    assert set(versions(client).values()) == {"2.3.1"}
    rolled = services.ledger.actions(ctx.run_id, kind="rollback", state="succeeded")
    assert sorted(a.tenant_id for a in rolled) == sorted(versions(client))


def test_the_late_rollback_keeps_targets_and_verification_in_the_ledger(fleet, tmp_path):
    tenants, client = fleet
    services = upgraded(client, tmp_path, "run-late")
    services.ledger.finish_run("run-late", "promoted")
    data = {
        "run_id": "run-late",
        "plan_id": "p",
        "scope": "all_upgraded",
        "reason": "bounded xcom test",
        "request_id": None,
        "actor": "tester",
        "via": "ui",
        "dag_run_id": "late-1",
        "requested_at": datetime.now(UTC).isoformat(),
    }
    ctx = rollback.late_context(services, data)
    chosen = rollback.start_late_rollback(services, ctx, data)
    assert chosen == {"count": tenants, "held": 0}
    scope = rollback.shards(chosen["count"], plan().policy.deploy.shard_size)
    summaries = [rollback.execute_late(services, plan(), ctx, item["shard"]) for item in scope]
    verified = rollback.verify_late(services, ctx, datetime.fromisoformat(data["requested_at"]))
    kept = rollback.late_chosen(services, ctx)
    assert kept is not None and len(kept["targets"]) == tenants
    assert len(kept["verification"]["verified"]) == tenants
    summary, whole = rollback.record_late(services, plan(), ctx, data, kept, kept["verification"])
    assert whole and summary["outcome"] == "rolled_back" and summary["verified"] == tenants
    assert_bounded(scope, [chosen, *summaries, verified, summary], tenants)
    assert set(versions(client).values()) == {"2.3.1"}


def test_a_shard_cut_from_another_target_list_is_refused():
    targets = [{"tenant": f"t-{i}", "from_version": "2.3.1", "batch": 0} for i in range(7)]
    (first, second) = rollback.shards(len(targets), 5)
    assert rollback.shard_targets(targets, second["shard"]) == targets[5:]
    with pytest.raises(rollback.StaleShard, match="cut from 7 target"):
        rollback.shard_targets(targets[:6], first["shard"])
