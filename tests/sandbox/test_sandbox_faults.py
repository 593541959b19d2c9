"""Every fault type, injected at runtime or from a scenario file, observed over real HTTP."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from tests.sandbox.sandbox_http import iso, tenant_path, upgrade_body

pytestmark = pytest.mark.e2e


def inject(client: httpx.Client, *faults: dict) -> list[dict]:
    response = client.post("/sandbox/faults", json={"faults": list(faults)})
    assert response.status_code == 201, response.text
    return response.json()["faults"]


def query(client: httpx.Client, start: datetime, end: datetime, tenants=None, **extra) -> dict:
    body = {"plugin": "crm-sync", "tenants": tenants, "start": iso(start), "end": iso(end), **extra}
    response = client.post("/internal/monitoring/query", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def tiers(client: httpx.Client) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for tenant in client.get("/internal/plugins/crm-sync/tenants").json()["tenants"]:
        grouped.setdefault(tenant["labels"]["tier"], []).append(tenant["id"])
    return grouped


def installed_at(client: httpx.Client, tenant: str) -> datetime:
    result = client.post(tenant_path(tenant, "upgrade"), json=upgrade_body("2.5.0", tenant))
    assert result.status_code == 200, result.text
    return datetime.fromisoformat(result.json()["operation"]["finished_at"])


def test_error_rate_fault_hits_only_matching_tenants_running_that_version(fleet):
    inject(fleet, {"type": "error_rate", "version": "2.5.0", "where": {"tier": "bronze"},
                   "value": 0.09})  # fmt: skip
    groups = tiers(fleet)
    bronze, gold, idle = groups["bronze"][0], groups["gold"][0], groups["bronze"][1]
    since = max(installed_at(fleet, bronze), installed_at(fleet, gold)) + timedelta(seconds=0.01)
    time.sleep(1.6)
    result = query(fleet, since, since + timedelta(seconds=1.5), [bronze, gold, idle],
                   metrics=["error_rate", "requests"])["tenants"]  # fmt: skip
    assert result[bronze]["requests"] >= 150
    assert 0.07 <= result[bronze]["error_rate"] <= 0.11  # 9 % +- bounded noise
    assert result[gold]["error_rate"] <= 0.025  # 2.5.0's own 1.2 %
    assert result[idle]["error_rate"] <= 0.025  # bronze, but still on 2.3.1


def test_latency_fault_multiplies_p95_of_matching_tenants(fleet):
    inject(fleet, {"type": "latency", "tenants": ["t-0003"], "factor": 2})
    now = datetime.now(UTC)
    result = query(fleet, now - timedelta(seconds=30), now, ["t-0003", "t-0004"])["tenants"]
    # unwindowed: the whole history of t-0003 is slow; t-0004 keeps the 120 ms baseline
    assert 228 <= result["t-0003"]["latency_p95_ms"] <= 252
    assert 114 <= result["t-0004"]["latency_p95_ms"] <= 126


def test_metrics_gap_makes_data_absent_in_its_window_only(fleet):
    [fault] = inject(fleet, {"type": "metrics_gap", "after": "0s", "duration": "1h",
                             "where": {"tier": "gold"}})  # fmt: skip
    gap_start = datetime.fromisoformat(fault["window"][0])
    gold, silver = tiers(fleet)["gold"][0], tiers(fleet)["silver"][0]
    time.sleep(0.3)
    during = query(fleet, gap_start, gap_start + timedelta(seconds=0.25), [gold, silver])
    assert gold not in during["tenants"] and during["no_data"] == [gold]
    assert during["tenants"][silver]["samples"] >= 1
    before = query(fleet, gap_start - timedelta(seconds=60), gap_start, [gold])
    assert before["tenants"][gold]["samples"] == 6 or before["tenants"][gold]["samples"] == 7
    spanning = query(fleet, gap_start - timedelta(seconds=60), gap_start + timedelta(seconds=0.2),
                     [gold])["tenants"][gold]  # fmt: skip
    assert spanning["requests"] == before["tenants"][gold]["requests"]


def test_signal_delay_hides_data_younger_than_the_delay(fleet):
    inject(fleet, {"type": "signal_delay", "value": "30s"})
    now = datetime.now(UTC)
    fresh = query(fleet, now - timedelta(seconds=20), now, ["t-0001"])
    assert fresh["tenants"] == {} and fresh["no_data"] == ["t-0001"]
    old = query(fleet, now - timedelta(seconds=60), now - timedelta(seconds=40), ["t-0001"])
    assert old["tenants"]["t-0001"]["samples"] >= 2
    straddling = query(fleet, now - timedelta(seconds=40), now, ["t-0001"])["tenants"]["t-0001"]
    assert straddling["requests"] < 200 * 1.3 * 12  # at most ~10 of the 40 s are visible


def test_deploy_failure_leaves_the_tenant_on_its_version_in_state_failed(fleet):
    inject(fleet, {"type": "deploy_failure", "tenants": ["t-0007"], "rate": 1.0,
                   "message": "pod crashloop"})  # fmt: skip
    response = fleet.post(tenant_path("t-0007", "upgrade"), json=upgrade_body("2.4.0", "u1"))
    assert response.status_code == 200
    body = response.json()
    assert body["operation"]["status"] == "failed" and body["operation"]["error"] == "pod crashloop"
    assert (body["version"], body["state"], body["last_error"]) == (
        "2.3.1",
        "failed",
        "pod crashloop",
    )
    assert body["config_version"] == "cfg-1" and body["previous_version"] is None
    assert [h["version"] for h in body["resources"]] == ["2.3.1"]
    replay = fleet.post(tenant_path("t-0007", "upgrade"), json=upgrade_body("2.4.0", "u1"))
    assert replay.json() == body  # the failure is the recorded answer for that key
    retry = fleet.post(tenant_path("t-0007", "upgrade"), json=upgrade_body("2.4.0", "u2"))
    assert retry.json()["operation"]["status"] == "failed"  # rate 1.0: every attempt fails
    healed = fleet.post(
        tenant_path("t-0007", "rollback"), json={"to_version": "2.3.1", "idempotency_key": "r"}
    ).json()
    assert healed["state"] == "ready" and healed["operation"]["noop"] is True
    other = fleet.post(tenant_path("t-0008", "upgrade"), json=upgrade_body("2.4.0", "u1"))
    assert other.json()["operation"]["status"] == "succeeded"


def _failed_tenants(client: httpx.Client, faults: list[dict]) -> set[str]:
    client.post("/sandbox/reset").raise_for_status()
    inject(client, *faults)
    tenants = [f"t-{n:04d}" for n in range(1, 21)]

    async def upgrade_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(client.base_url), timeout=10) as aclient:
            return await asyncio.gather(
                *(aclient.post(tenant_path(t, "upgrade"), json=upgrade_body()) for t in tenants)
            )

    answers = asyncio.run(upgrade_all())
    return {
        tenant
        for tenant, answer in zip(tenants, answers, strict=True)
        if answer.json()["operation"]["status"] == "failed"
    }


def test_deploy_failure_rate_picks_the_same_tenants_for_the_same_seed(fleet):
    faults = [{"type": "deploy_failure", "rate": 0.5, "where": {"tier": ["silver", "bronze"]}}]
    first = _failed_tenants(fleet, faults)
    assert first == _failed_tenants(fleet, faults)
    assert 2 <= len(first) <= 14  # about half of the 16 silver and bronze tenants
    gold = set(tiers(fleet)["gold"])
    assert not first & gold


def test_rollback_deploy_failure_keeps_the_new_version(fleet):
    inject(fleet, {"type": "deploy_failure", "operation": "rollback", "tenants": ["t-0002"]})
    fleet.post(tenant_path("t-0002", "upgrade"), json=upgrade_body("2.4.0")).raise_for_status()
    body = fleet.post(tenant_path("t-0002", "rollback"), json={"idempotency_key": "r"}).json()
    assert body["operation"]["status"] == "failed"
    assert (body["version"], body["previous_version"], body["state"]) == (
        "2.4.0",
        "2.3.1",
        "failed",
    )


def test_http_error_fault_refuses_calls_before_doing_any_work(fleet):
    [fault] = inject(fleet, {"type": "http_error", "endpoint": "upgrade", "status": 503})
    refused = fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "k"))
    assert refused.status_code == 503
    assert refused.json()["error"] == "injected_fault" and refused.headers["Retry-After"] == "1"
    assert fleet.get(tenant_path("t-0001")).json()["version"] == "2.3.1"
    assert fleet.delete(f"/sandbox/faults/{fault['id']}").status_code == 204
    assert fleet.delete(f"/sandbox/faults/{fault['id']}").status_code == 404
    accepted = fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "k"))
    assert accepted.status_code == 200 and accepted.headers["Idempotent-Replayed"] == "false"


def test_http_error_rate_is_seeded_and_retries_get_a_fresh_draw(fleet):
    def statuses() -> list[int]:
        fleet.post("/sandbox/reset").raise_for_status()
        inject(fleet, {"type": "http_error", "endpoint": "audit", "status": 500, "rate": 0.5})
        return [
            fleet.post("/internal/audit/version", json={"id": f"a-{n % 10}", "actor": "x",
                                                        "action": "y"}).status_code
            for n in range(40)
        ]  # fmt: skip

    first = statuses()
    assert first == statuses()
    assert set(first) == {500, 201, 200}  # refused, recorded, replayed as duplicate
    assert fleet.get("/health").status_code == 200


def test_timeout_fault_holds_the_answer_but_applies_the_upgrade(fleet_url):
    with httpx.Client(base_url=fleet_url, timeout=10) as client:
        client.post("/sandbox/reset").raise_for_status()
        [fault] = inject(client, {"type": "timeout", "endpoint": "upgrade", "hold": "1s"})
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            client.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "k"),
                        timeout=0.6)  # fmt: skip
        assert time.monotonic() - started < 1.0
        assert client.get(tenant_path("t-0001")).json()["version"] == "2.4.0"
        held = client.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "k"))
        assert held.status_code == 504 and held.json()["error"] == "injected_fault"
        client.delete(f"/sandbox/faults/{fault['id']}").raise_for_status()
        replay = client.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "k"))
        assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
        assert len(client.get("/sandbox/tenants").json()["tenants"][0]["operations"]) == 1


def test_timeout_fault_that_drops_the_request_changes_nothing(fleet):
    inject(fleet, {"type": "timeout", "endpoint": "rollback", "hold": "0.3s", "applied": False})
    fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body()).raise_for_status()
    dropped = fleet.post(tenant_path("t-0001", "rollback"), json={"idempotency_key": "r"})
    assert dropped.status_code == 504
    assert fleet.get(tenant_path("t-0001")).json()["version"] == "2.4.0"


def test_audit_outage_answers_503_for_its_window_and_records_nothing(fleet):
    inject(fleet, {"type": "audit_outage", "after": "0s", "duration": "1s"})
    record = {"id": "a-1", "actor": "rm", "action": "upgrade.started"}
    down = fleet.post("/internal/audit/version", json=record)
    assert down.status_code == 503 and down.json()["error"] == "audit_unavailable"
    assert down.headers["Retry-After"] == "1"
    assert fleet.get("/sandbox/audit").json()["records"] == []
    time.sleep(1.05)
    assert fleet.post("/internal/audit/version", json=record).status_code == 201


def test_invalid_faults_are_refused_with_the_field(fleet):
    unknown_type = fleet.post("/sandbox/faults", json={"faults": [{"type": "latancy"}]})
    assert unknown_type.status_code == 422
    unknown_tenant = fleet.post(
        "/sandbox/faults", json={"faults": [{"type": "deploy_failure", "tenants": ["t-404"]}]}
    )
    assert unknown_tenant.status_code == 422 and "t-404" in unknown_tenant.json()["message"]
    no_label = fleet.post(
        "/sandbox/faults",
        json={"faults": [{"type": "error_rate", "where": {"tier": "platinum"}, "value": 0.5}]},
    )
    assert no_label.status_code == 422 and "tier=platinum" in no_label.json()["message"]
    assert fleet.get("/sandbox/faults").json()["faults"] == []


SCENARIO_FAULTS = """\
seed: 5
plugin: crm-sync
tenants: {count: 4, version: 2.3.1}
latency: {upgrade_ms: 10, rollback_ms: 10}
traffic: {rps: 200}
faults:
  - {type: metrics_gap, after: 0s, duration: 1h}
  - {type: http_error, endpoint: notify, status: 429, after: 0s}
"""


def test_scenario_fault_windows_count_from_the_first_upgrade_request(tmp_path):
    scenario = tmp_path / "anchored.yaml"
    scenario.write_text(SCENARIO_FAULTS)
    with running_sandbox(scenario) as url, httpx.Client(base_url=url, timeout=10) as client:
        views = client.get("/sandbox/faults").json()["faults"]
        assert [(v["id"], v["window"], v["active_now"]) for v in views] == [
            ("f-1", None, False),
            ("f-2", None, False),
        ]
        now = datetime.now(UTC)
        assert query(client, now - timedelta(seconds=30), now)["no_data"] == []
        note = {"id": "n-1", "event": "plugin.version.gray.started"}
        assert client.post("/internal/notify/version", json=note).status_code == 201

        client.post(tenant_path("t-0002", "upgrade"), json=upgrade_body()).raise_for_status()
        origin = datetime.fromisoformat(client.get("/sandbox/info").json()["first_upgrade_at"])
        views = client.get("/sandbox/faults").json()["faults"]
        assert all(v["active_now"] for v in views)
        assert datetime.fromisoformat(views[0]["window"][0]) == origin
        time.sleep(0.2)
        after = query(client, origin, origin + timedelta(seconds=0.15))
        assert after["tenants"] == {} and len(after["no_data"]) == 4
        before = query(client, origin - timedelta(seconds=30), origin)
        assert before["no_data"] == []
        refused = client.post("/internal/notify/version", json={**note, "id": "n-2"})
        assert refused.status_code == 429
