"""The shipped scenarios behave as documented when driven over HTTP like an orchestrator would."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from tests.sandbox.conftest import SCENARIOS
from tests.sandbox.sandbox_http import iso, tenant_path, upgrade_body

pytestmark = pytest.mark.e2e


def test_bad_version_is_case_b_bronze_above_five_percent_gold_below(bad_version):
    tenants = bad_version.get("/internal/plugins/crm-sync/tenants").json()["tenants"]
    bronze = [t["id"] for t in tenants if t["labels"]["tier"] == "bronze"][:3]
    gold = [t["id"] for t in tenants if t["labels"]["tier"] == "gold"][:3]
    finished = []
    for tenant in bronze + gold:
        answer = bad_version.post(
            tenant_path(tenant, "upgrade"), json=upgrade_body("2.5.0", tenant)
        )
        finished.append(datetime.fromisoformat(answer.json()["operation"]["finished_at"]))
    start = max(finished) + timedelta(milliseconds=1)
    time.sleep(2.6)
    body = {
        "plugin": "crm-sync",
        "tenants": bronze + gold,
        "metrics": ["requests", "error_rate"],
        "start": iso(start),
        "end": iso(start + timedelta(seconds=2.5)),
    }
    result = bad_version.post("/internal/monitoring/query", json=body).json()["tenants"]
    assert all(result[t]["error_rate"] > 0.05 for t in bronze), result
    assert all(result[t]["error_rate"] < 0.05 for t in gold), result
    baseline = {
        **body,
        "start": iso(start - timedelta(minutes=10)),
        "end": iso(start - timedelta(minutes=1)),
    }
    before = bad_version.post("/internal/monitoring/query", json=baseline).json()["tenants"]
    assert all(values["error_rate"] < 0.02 for values in before.values())


def test_no_data_scenario_goes_dark_twenty_seconds_after_the_first_upgrade_for_fifteen_minutes():
    with running_sandbox(SCENARIOS / "no-data.yaml") as url, httpx.Client(base_url=url) as client:
        assert [f["window"] for f in client.get("/sandbox/faults").json()["faults"]] == [None, None]
        client.post(tenant_path("t-0001", "upgrade"), json=upgrade_body()).raise_for_status()
        origin = datetime.fromisoformat(client.get("/sandbox/info").json()["first_upgrade_at"])
        gap, delay = client.get("/sandbox/faults").json()["faults"]
        assert [datetime.fromisoformat(edge) - origin for edge in gap["window"]] == [
            timedelta(seconds=20),
            timedelta(minutes=15, seconds=20),
        ]
        assert datetime.fromisoformat(delay["window"][0]) - origin == timedelta(
            minutes=15, seconds=20
        )
        assert delay["window"][1] is None


async def _careful_upgrade(client: httpx.AsyncClient, tenant: str) -> tuple[dict, int]:
    """Retry refused, failed-over and timed-out calls with the same key, like the orchestrator."""
    for attempt in range(1, 30):
        try:
            answer = await client.post(
                tenant_path(tenant, "upgrade"),
                json=upgrade_body("2.4.0", f"run-1:{tenant}"),
                timeout=1.0,
            )
        except httpx.TimeoutException:
            continue
        if answer.status_code == 200:
            return answer.json(), attempt
        assert answer.status_code in (503, 504, 409), answer.text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{tenant} never answered")


def test_flaky_platform_refuses_and_times_out_calls_but_a_careful_client_finishes():
    with running_sandbox(SCENARIOS / "flaky-platform.yaml") as url:

        async def rollout() -> dict[str, tuple[dict, int]]:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                listing = await client.get("/internal/plugins/crm-sync/tenants")
                ids = [t["id"] for t in listing.json()["tenants"]]
                answers = await asyncio.gather(*(_careful_upgrade(client, t) for t in ids))
                return dict(zip(ids, answers, strict=True))

        results = asyncio.run(rollout())
        failed = {
            t for t, (body, _) in results.items() if body["operation"]["status"] != "succeeded"
        }
        assert failed == {"t-0007"}
        assert results["t-0007"][0]["last_error"] == "deployment failed: health check did not pass"
        assert any(attempts > 1 for _, attempts in results.values())  # the platform did refuse
        with httpx.Client(base_url=url) as client:
            refused = [
                e
                for e in client.get("/sandbox/events", params={"prefix": "/internal"}).json()[
                    "events"
                ]
                if e["status"] in (503, 504)
            ]
            assert refused and all(e["path"].endswith("/upgrade") for e in refused)
            outage = client.post(
                "/internal/audit/version", json={"id": "a", "actor": "x", "action": "y"}
            )
            assert outage.status_code == 503 and outage.json()["error"] == "audit_unavailable"
            now = datetime.now(UTC)
            recent = client.post(
                "/internal/monitoring/query",
                json={"plugin": "crm-sync", "tenants": ["t-0001"], "start": iso(now - timedelta(seconds=15)),
                      "end": iso(now)},
            )  # fmt: skip
            if recent.status_code == 200:  # 5 % of queries are refused with 502 by the scenario
                assert recent.json()["no_data"] == ["t-0001"]  # 20 s signal delay
            else:
                assert recent.status_code == 502
            versions = {
                t["version"]
                for t in client.get("/sandbox/tenants").json()["tenants"]
                if t["id"] != "t-0007"
            }
            assert versions == {"2.4.0"}
