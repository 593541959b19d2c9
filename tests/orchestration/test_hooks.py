"""The HTTP hooks against the sandbox: methods stay right under a thread pool, errors are typed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook
from powerx_upgrade.rollout.errors import PowerXNotFound, PowerXRejected
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url:
        yield url


def test_a_hook_shared_by_threads_never_mixes_up_methods(sandbox_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_PLATFORM", sandbox_url)
    hook = PowerXPlatformHook(retries=0)
    hook.get_tenant("crm-sync", "t-0001")
    assert hook.method == "POST"  # a call never switches the shared hook's method
    tenants = [f"t-{i:04d}" for i in range(1, 41)]

    def both(tenant: str) -> str:
        hook.get_tenant("crm-sync", tenant)
        answer = hook.upgrade(
            "crm-sync",
            tenant,
            version="2.4.0",
            artifact={"uri": "s3://x", "sha256": "a" * 64},
            idempotency_key=f"race:{tenant}",
        )
        hook.get_tenant("crm-sync", tenant)
        return answer["operation"]["status"]

    with ThreadPoolExecutor(16) as pool:
        assert Counter(pool.map(both, tenants)) == {"succeeded": 40}
    events = httpx.get(f"{sandbox_url}/sandbox/events", params={"limit": 1000}).json()["events"]
    assert not [e for e in events if e["status"] == 405]


def test_errors_are_typed_by_status(sandbox_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_PLATFORM", sandbox_url)
    hook = PowerXPlatformHook(retries=0)
    with pytest.raises(PowerXNotFound, match="unknown_tenant"):
        hook.get_tenant("crm-sync", "t-nobody")
    with pytest.raises(PowerXRejected, match="422"):
        hook.upgrade(
            "crm-sync",
            "t-0001",
            version="2.4.0",
            artifact={"uri": "", "sha256": "x"},
            idempotency_key="k",
        )


SMALL_LIMIT = """
name: small-point-limit
seed: 3
plugin: crm-sync
tenants: {count: 40, version: 2.3.1}
traffic: {rps: 20, error_rate: 0.01, latency_p95_ms: 120}
monitoring: {max_points: 1000}
"""


def test_monitoring_queries_are_paged_under_the_services_point_limit(tmp_path, monkeypatch):
    """40 tenants over 30 minutes is 7,240 tenant-buckets, over this service's 1,000: asked at
    once the service refuses (422 invalid_query); paged (5 tenants a page: 905 points) every
    tenant answers, in one merged answer, through the sync hook and the trigger's async one."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from powerx_upgrade.orchestration.hooks.monitoring import (
        PowerXMonitoringAsyncHook,
        PowerXMonitoringHook,
    )

    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SMALL_LIMIT)
    tenants = [f"t-{i:04d}" for i in range(1, 41)]
    end = datetime.now(UTC) - timedelta(seconds=30)
    start = end - timedelta(minutes=30)
    with running_sandbox(scenario) as url:
        monkeypatch.setenv("AIRFLOW_CONN_POWERX_MONITORING", url)
        with pytest.raises(PowerXRejected, match="invalid_query"):
            PowerXMonitoringHook(retries=0, tenants_per_query=40).query(
                "crm-sync", tenants, start, end
            )
        answer = PowerXMonitoringHook(retries=0, tenants_per_query=5).query(
            "crm-sync", tenants, start, end
        )
        assert sorted(answer["tenants"]) == tenants
        assert all(m["samples"] > 100 for m in answer["tenants"].values())
        paged = asyncio.run(
            PowerXMonitoringAsyncHook(tenants_per_query=5).query("crm-sync", tenants, start, end)
        )
        assert sorted(paged["tenants"]) == tenants
        asked = httpx.get(f"{url}/sandbox/events", params={"limit": 1000}).json()["events"]
        queries = [e for e in asked if "monitoring/query" in str(e.get("endpoint", e))]
        assert len(queries) == 1 + 8 + 8  # the refused one, then 8 pages per hook
