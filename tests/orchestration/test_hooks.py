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
