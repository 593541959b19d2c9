"""One distributed stack (PostgreSQL, Redis, CeleryExecutor with two workers, two schedulers,
dag-processor, triggerer, api-server: `running_distributed_airflow`) and one sandbox for every
test of this package: started once, stopped at the end of the package (before the session's
local stack of tests/stack/ starts, so the two never run at once), also when a test fails.

The sandbox serves the bad-version scenario with a slower upgrade (UPGRADE_MS per tenant), so a
deploy shard of the `crm-sync-dist-shards` plan is in flight for seconds: long enough to kill
the Celery worker that runs it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from powerx_dev.devstack import marked_processes
from powerx_dev.devstack.distributed import DistributedStack, running_distributed_airflow
from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from tests.conftest import ROOT
from tests.signing import SIGNING_KEYS
from tests.stack.conftest import APPROVAL_SECRET, FIGURES, SCENARIO, artifact_for

DIST_CONFIG = ROOT / "tests" / "fixtures" / "distributed_config"
CASE_B_DAG = "plugin_upgrade__crm-sync-stack"
SHARDS_DAG = "plugin_upgrade__crm-sync-dist-shards"
BAKE_DAG = "plugin_upgrade__crm-sync-dist-bake"
DAG_IDS = (CASE_B_DAG, SHARDS_DAG, BAKE_DAG)
# F4 (test_ledger_faults.py)
LEDGER_OUTAGE_DAG = "plugin_upgrade__crm-sync-dist-ledger-outage"
OVERLAP_A_DAG = "plugin_upgrade__crm-sync-dist-overlap-a"
OVERLAP_B_DAG = "plugin_upgrade__crm-sync-dist-overlap-b"
FAILED_OUTSIDE_DAG = "plugin_upgrade__crm-sync-dist-failed-outside"
DAG_IDS += (LEDGER_OUTAGE_DAG, OVERLAP_A_DAG, OVERLAP_B_DAG, FAILED_OUTSIDE_DAG)
UPGRADE_MS = 700
"""Seconds x 1000 one tenant's upgrade takes on the sandbox (the scenario's 50 ms, slowed)."""

SYSTEMS = ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT")
"""The connections that point at the sandbox (approval and ledger are set apart)."""

# F3 (test_process_faults.py): the pause waiting for a human across an api-server restart.
PAUSE_DAG = "plugin_upgrade__crm-sync-dist-pause"
DAG_IDS += (PAUSE_DAG,)


@pytest.fixture(scope="package")
def dist_sandbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    scenario = yaml.safe_load(SCENARIO.read_text())
    scenario["latency"] = {"upgrade_ms": UPGRADE_MS, "rollback_ms": 50, "jitter": 0.1}
    path = tmp_path_factory.mktemp("dist-scenario") / "bad-version-slow.yaml"
    path.write_text(yaml.safe_dump(scenario))
    with running_sandbox(path) as url:
        yield url


@pytest.fixture(scope="package")
def dist_stack(
    dist_sandbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DistributedStack]:
    config = tmp_path_factory.mktemp("dist-config")
    shutil.copytree(DIST_CONFIG, config, dirs_exist_ok=True)
    env = {f"AIRFLOW_CONN_POWERX_{name}": dist_sandbox_url for name in SYSTEMS}
    env["POWERX_UPGRADE_CONFIG"] = str(config)
    env["AIRFLOW_CONN_POWERX_APPROVAL"] = json.dumps(
        {"conn_type": "generic", "password": APPROVAL_SECRET}
    )
    env["POWERX_UPGRADE_SIGNING_KEYS"] = str(SIGNING_KEYS)  # the TEST-ONLY public key
    home = tmp_path_factory.mktemp("distributed-stack")
    # The PostgreSQL cluster lives outside /tmp/pytest-of-<user>/: another pytest session
    # starting meanwhile makes that tree 0700 again, and the server (user `pgserver` when we
    # are root) would lose its data directory mid-test.
    pg_dir = Path(tempfile.mkdtemp(prefix="powerx-dist-pg-"))
    started = time.monotonic()
    try:
        with running_distributed_airflow(
            home, dags_folder=ROOT / "dags", env=env, dag_ids=DAG_IDS, postgres_dir=pg_dir
        ) as live:
            FIGURES["distributed stack: PostgreSQL + Redis up (s)"] = live.timings["servers"]
            FIGURES["distributed stack: start to healthy (s)"] = live.timings["start"]
            FIGURES["distributed stack: start to DAGs parsed (s)"] = time.monotonic() - started
            yield live
            stopping = time.monotonic()
        FIGURES["distributed stack: stop (s)"] = time.monotonic() - stopping
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)
    assert marked_processes(live.settings.stack_id) == []


@pytest.fixture(scope="package")
def dist_ledger(dist_stack: DistributedStack) -> Iterator[Ledger]:
    """The ledger on the stack's PostgreSQL (its own database, beside Airflow's)."""
    ledger = Ledger(dist_stack.ledger_url)
    yield ledger
    ledger.close()


@pytest.fixture
def dist_sandbox(dist_sandbox_url: str) -> Iterator[httpx.Client]:
    """The sandbox, back to its scenario's initial fleet (every tenant on 2.3.1)."""
    with httpx.Client(base_url=dist_sandbox_url, timeout=10) as client:
        client.post("/sandbox/reset").raise_for_status()
        yield client


def upgrade_operations(tenant: dict[str, Any], version: str) -> list[dict[str, Any]]:
    """The sandbox's upgrade operations of one tenant to `version` that changed it (not a
    replay of a finished operation, not a no-op)."""
    return [
        op
        for op in tenant["operations"]
        if op["kind"] == "upgrade"
        and op["to_version"] == version
        and op["status"] == "succeeded"
        and not op["noop"]
    ]


def conf_for(version: str, reason: str) -> dict[str, Any]:
    """A run's conf: the version, its artifact signed with the TEST-ONLY key, the reason."""
    return {"target_version": version, **artifact_for(version), "reason": reason}


def selected(ledger: Ledger, run_id: str) -> list[str]:
    """The run's tenants as it planned them (every batch)."""
    record = ledger.get_run(run_id)
    assert record is not None, f"no ledger run {run_id}"
    return [t for batch in record.batches or [] for t in batch["tenants"]]


def assert_upgraded_once(
    ledger: Ledger, run_id: str, fleet: dict[str, dict[str, Any]], tenants: list[str]
) -> None:
    """Every tenant is on 2.4.0, changed by exactly one platform operation, under the key of
    its one ledger action (a retried shard replays the same key, the platform answers from its
    record)."""
    actions = ledger.actions(run_id, kind="upgrade")
    by_tenant: dict[str, list[Any]] = {}
    for action in actions:
        by_tenant.setdefault(action.tenant_id, []).append(action)
    assert sorted(by_tenant) == sorted(tenants)
    for tenant in tenants:
        assert fleet[tenant]["version"] == "2.4.0", (tenant, fleet[tenant])
        (action,) = by_tenant[tenant]
        assert action.state == "succeeded", action
        (operation,) = upgrade_operations(fleet[tenant], "2.4.0")
        assert operation["idempotency_key"].startswith(f"{action.idempotency_key}#"), (
            operation,
            action,
        )
