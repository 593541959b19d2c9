"""The platform contract over real HTTP: shapes, idempotency, in-flight conflicts, rollback, errors."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from powerx_dev.sandbox.contract import (
    EventList,
    MonitoringResult,
    OperationResult,
    SandboxTenantList,
    Tenant,
    TenantList,
)
from tests.sandbox.sandbox_http import SHA, tenant_path, upgrade_body

pytestmark = pytest.mark.e2e


def sandbox_tenant(client: httpx.Client, tenant: str) -> dict:
    listing = client.get("/sandbox/tenants").json()
    return next(t for t in listing["tenants"] if t["id"] == tenant)


# -- tenants --------------------------------------------------------------------------------------


def test_tenant_listing_has_every_scenario_tenant_with_labels_version_and_config(fleet):
    response = fleet.get("/internal/plugins/crm-sync/tenants")
    assert response.status_code == 200
    listing = TenantList.model_validate(response.json())
    ids = [t.id for t in listing.tenants]
    assert ids == [f"t-{n:04d}" for n in range(1, 21)] + ["t-internal-1"]
    assert {(t.version, t.config_version, t.state) for t in listing.tenants} == {
        ("2.3.1", "cfg-1", "ready")
    }
    tiers = Counter(t.labels["tier"] for t in listing.tenants[:20])
    assert tiers == {"gold": 4, "silver": 6, "bronze": 10}
    assert all(t.previous_version is None for t in listing.tenants)


def test_tenant_listing_filters_by_label_and_version(fleet):
    gold = fleet.get("/internal/plugins/crm-sync/tenants", params={"label": "tier=gold"}).json()
    assert len(gold["tenants"]) == 5 and {t["labels"]["tier"] for t in gold["tenants"]} == {"gold"}
    both = fleet.get(
        "/internal/plugins/crm-sync/tenants",
        params=[("label", "tier=gold"), ("label", "internal=true")],
    ).json()
    assert [t["id"] for t in both["tenants"]] == ["t-internal-1"]
    fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body()).raise_for_status()
    moved = fleet.get("/internal/plugins/crm-sync/tenants", params={"version": "2.4.0"}).json()
    assert [t["id"] for t in moved["tenants"]] == ["t-0001"]
    bad = fleet.get("/internal/plugins/crm-sync/tenants", params={"label": "tier"})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_query"


def test_one_tenant_is_served_and_unknown_tenant_or_plugin_is_404(fleet):
    one = fleet.get(tenant_path("t-0003"))
    assert one.status_code == 200
    assert Tenant.model_validate(one.json()).id == "t-0003"
    missing = fleet.get(tenant_path("t-9999"))
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_tenant"
    for method, path, body in [
        ("GET", "/internal/plugins/nope/tenants", None),
        ("GET", "/internal/plugins/nope/tenants/t-0001", None),
        ("POST", "/internal/plugins/nope/tenants/t-0001/upgrade", upgrade_body()),
        ("POST", "/internal/plugins/nope/tenants/t-0001/rollback", {"idempotency_key": "r"}),
    ]:
        answer = fleet.request(method, path, json=body)
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "unknown_plugin"
    upgrade_missing = fleet.post(tenant_path("t-9999", "upgrade"), json=upgrade_body())
    assert upgrade_missing.status_code == 404
    assert fleet.get("/no/such/route").json()["error"] == "not_found"


# -- upgrade ---------------------------------------------------------------------------------------


def test_upgrade_installs_the_version_and_keeps_the_previous_version_and_config(fleet):
    response = fleet.post(tenant_path("t-0002", "upgrade"), json=upgrade_body("2.4.0", "up-1"))
    assert response.status_code == 200
    assert response.headers["Idempotent-Replayed"] == "false"
    result = OperationResult.model_validate(response.json())
    assert (result.version, result.previous_version) == ("2.4.0", "2.3.1")
    assert (result.config_version, result.previous_config_version) == ("cfg-2", "cfg-1")
    assert result.state == "ready"
    assert [(h.version, h.role) for h in result.resources] == [
        ("2.3.1", "standby"),
        ("2.4.0", "active"),
    ]
    assert result.resources[1].amounts == {"memory_mb": 320, "workers": 1}
    op = result.operation
    assert (op.kind, op.status, op.noop, op.idempotency_key) == (
        "upgrade",
        "succeeded",
        False,
        "up-1",
    )
    assert (op.from_version, op.to_version) == ("2.3.1", "2.4.0")
    assert op.finished_at >= op.started_at
    assert (op.finished_at - op.started_at).total_seconds() >= 0.29  # the scenario's 300 ms

    seen = sandbox_tenant(fleet, "t-0002")
    assert seen["version"] == "2.4.0" and seen["config_version"] == "cfg-2"
    assert [h["version"] for h in seen["history"]] == ["2.3.1", "2.4.0"]


def test_upgrade_replay_with_the_same_key_returns_the_same_answer_and_does_nothing_twice(fleet):
    first = fleet.post(tenant_path("t-0004", "upgrade"), json=upgrade_body("2.4.0", "same"))
    again = fleet.post(tenant_path("t-0004", "upgrade"), json=upgrade_body("2.4.0", "same"))
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    seen = sandbox_tenant(fleet, "t-0004")
    assert len(seen["operations"]) == 1
    assert seen["config_version"] == "cfg-2"  # not cfg-3: the config was migrated once


def test_reusing_an_idempotency_key_for_a_different_upgrade_is_422(fleet):
    fleet.post(tenant_path("t-0004", "upgrade"), json=upgrade_body("2.4.0", "k")).raise_for_status()
    reuse = fleet.post(tenant_path("t-0004", "upgrade"), json=upgrade_body("2.5.0", "k"))
    assert reuse.status_code == 422
    assert reuse.json()["error"] == "idempotency_mismatch"
    assert sandbox_tenant(fleet, "t-0004")["version"] == "2.4.0"


def test_upgrade_to_the_installed_version_is_a_successful_noop(fleet):
    response = fleet.post(tenant_path("t-0005", "upgrade"), json=upgrade_body("2.3.1", "noop"))
    assert response.status_code == 200
    body = response.json()
    assert body["operation"]["noop"] is True and body["operation"]["status"] == "succeeded"
    assert body["previous_version"] is None and body["config_version"] == "cfg-1"


def test_an_operation_on_a_tenant_with_one_in_flight_is_409_but_a_replay_waits_for_it(fleet_url):
    async def scenario() -> tuple[httpx.Response, ...]:
        async with httpx.AsyncClient(base_url=fleet_url, timeout=10) as client:
            await client.post("/sandbox/reset")
            first = asyncio.create_task(
                client.post(tenant_path("t-0006", "upgrade"), json=upgrade_body("2.4.0", "a"))
            )
            await asyncio.sleep(0.1)  # the upgrade takes 300 ms
            other = await client.post(
                tenant_path("t-0006", "upgrade"), json=upgrade_body("2.5.0", "b")
            )
            rollback = await client.post(
                tenant_path("t-0006", "rollback"), json={"idempotency_key": "c"}
            )
            replay = await client.post(
                tenant_path("t-0006", "upgrade"), json=upgrade_body("2.4.0", "a")
            )
            return await first, other, rollback, replay

    first, other, rollback, replay = asyncio.run(scenario())
    assert first.status_code == 200
    for conflict in (other, rollback):
        assert conflict.status_code == 409
        assert conflict.json()["error"] == "operation_in_flight"
        assert conflict.headers["Retry-After"] == "1"
    assert replay.status_code == 200 and replay.json() == first.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    with httpx.Client(base_url=fleet_url) as client:
        seen = sandbox_tenant(client, "t-0006")
    assert seen["version"] == "2.4.0" and len(seen["operations"]) == 1


def test_concurrent_upgrades_of_every_tenant_all_succeed(fleet_url):
    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fleet_url, timeout=10) as client:
            await client.post("/sandbox/reset")
            listing = (await client.get("/internal/plugins/crm-sync/tenants")).json()
            return await asyncio.gather(
                *(
                    client.post(
                        tenant_path(t["id"], "upgrade"), json=upgrade_body("2.4.0", t["id"])
                    )
                    for t in listing["tenants"]
                )
            )

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * 21
    assert {r.json()["version"] for r in responses} == {"2.4.0"}


# -- rollback --------------------------------------------------------------------------------------


def test_rollback_restores_version_and_config_and_frees_the_new_versions_resources(fleet):
    fleet.post(tenant_path("t-0008", "upgrade"), json=upgrade_body("2.5.0")).raise_for_status()
    held = fleet.get("/sandbox/tenants").json()["resources"]
    assert held["2.5.0"]["active"] == {"memory_mb": 384, "workers": 2}

    response = fleet.post(
        tenant_path("t-0008", "rollback"), json={"to_version": "2.3.1", "idempotency_key": "rb"}
    )
    assert response.status_code == 200
    result = OperationResult.model_validate(response.json())
    assert (result.version, result.config_version) == ("2.3.1", "cfg-1")
    assert result.previous_version is None and result.previous_config_version is None
    assert [(h.version, h.role) for h in result.resources] == [("2.3.1", "active")]
    assert [(h.version, h.amounts) for h in result.operation.freed] == [
        ("2.5.0", {"memory_mb": 384, "workers": 2})
    ]
    assert result.operation.config_version_before == "cfg-2"
    assert result.operation.config_version_after == "cfg-1"
    listing = SandboxTenantList.model_validate(fleet.get("/sandbox/tenants").json())
    assert "2.5.0" not in listing.resources
    assert listing.resources["2.3.1"]["active"]["workers"] == 21
    seen = next(t for t in listing.tenants if t.id == "t-0008")
    assert [h.version for h in seen.history] == ["2.3.1", "2.5.0", "2.3.1"]


def test_rollback_without_restore_config_keeps_the_migrated_config(fleet):
    fleet.post(tenant_path("t-0009", "upgrade"), json=upgrade_body()).raise_for_status()
    result = fleet.post(
        tenant_path("t-0009", "rollback"),
        json={"restore_config": False, "idempotency_key": "rb"},
    ).json()
    assert result["version"] == "2.3.1" and result["config_version"] == "cfg-2"


def test_rollback_is_idempotent_and_a_second_rollback_is_a_noop(fleet):
    fleet.post(tenant_path("t-0010", "upgrade"), json=upgrade_body()).raise_for_status()
    body = {"to_version": "2.3.1", "idempotency_key": "rb-1"}
    first = fleet.post(tenant_path("t-0010", "rollback"), json=body)
    replay = fleet.post(tenant_path("t-0010", "rollback"), json=body)
    assert replay.json() == first.json() and replay.headers["Idempotent-Replayed"] == "true"
    again = fleet.post(
        tenant_path("t-0010", "rollback"), json={"to_version": "2.3.1", "idempotency_key": "rb-2"}
    )
    assert again.status_code == 200 and again.json()["operation"]["noop"] is True
    assert len(sandbox_tenant(fleet, "t-0010")["operations"]) == 3


def test_rollback_without_a_previous_version_or_to_a_wrong_version_is_409(fleet):
    nothing = fleet.post(tenant_path("t-0011", "rollback"), json={"idempotency_key": "x"})
    assert nothing.status_code == 409 and nothing.json()["error"] == "rollback_unavailable"
    fleet.post(tenant_path("t-0011", "upgrade"), json=upgrade_body("2.4.0")).raise_for_status()
    wrong = fleet.post(
        tenant_path("t-0011", "rollback"), json={"to_version": "2.2.0", "idempotency_key": "y"}
    )
    assert wrong.status_code == 409 and "previous version is 2.3.1" in wrong.json()["message"]
    assert sandbox_tenant(fleet, "t-0011")["version"] == "2.4.0"


def test_a_second_upgrade_frees_the_oldest_version_and_rollback_goes_one_step_back(fleet):
    fleet.post(tenant_path("t-0012", "upgrade"), json=upgrade_body("2.4.0", "a")).raise_for_status()
    second = fleet.post(tenant_path("t-0012", "upgrade"), json=upgrade_body("2.5.0", "b")).json()
    assert second["previous_version"] == "2.4.0" and second["previous_config_version"] == "cfg-2"
    assert [h["version"] for h in second["operation"]["freed"]] == ["2.3.1"]
    back = fleet.post(tenant_path("t-0012", "rollback"), json={"idempotency_key": "c"}).json()
    assert (back["version"], back["config_version"]) == ("2.4.0", "cfg-2")


# -- bad input -------------------------------------------------------------------------------------

_BAD_UPGRADES = [
    ({**upgrade_body(), "artifact": {"uri": "s3://x", "sha256": "nothex"}}, "artifact"),
    ({k: v for k, v in upgrade_body().items() if k != "idempotency_key"}, "idempotency_key"),
    ({**upgrade_body(), "idempotencyKey": "x"}, "idempotencyKey"),
    ({**upgrade_body(), "version": 2.4}, "version"),
    ({**upgrade_body(), "version": "latest"}, "version"),
    ({**upgrade_body(), "idempotency_key": ""}, "idempotency_key"),
    ({**upgrade_body(), "artifact": {"uri": "", "sha256": SHA}}, "uri"),
]


@pytest.mark.parametrize(("body", "field"), _BAD_UPGRADES)
def test_invalid_upgrade_requests_get_422_naming_the_field(fleet, body, field):
    response = fleet.post(tenant_path("t-0001", "upgrade"), json=body)
    assert response.status_code == 422
    payload = response.json()
    assert payload["error"] == "invalid_request"
    assert any(field in map(str, detail["loc"]) for detail in payload["details"]), payload
    assert sandbox_tenant(fleet, "t-0001")["version"] == "2.3.1"


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {"content-type": "application/json"}),
        (b"\xff\xfe\x00garbage", {"content-type": "application/json"}),
        (b"[]", {"content-type": "application/json"}),
        (b'{"version": {"$gt": ""}}', {"content-type": "application/json"}),
        (b"version=2.4.0", {"content-type": "application/x-www-form-urlencoded"}),
        (b"[" * 5000 + b"]" * 5000, {"content-type": "application/json"}),
        (b'{"version": "2.4.0", "artifact": 1e999999, "idempotency_key": 1}', {}),
    ],
)
def test_malformed_bodies_get_422_and_never_a_server_error(fleet, content, headers):
    for path in (
        tenant_path("t-0001", "upgrade"),
        tenant_path("t-0001", "rollback"),
        "/internal/monitoring/query",
        "/internal/audit/version",
        "/sandbox/faults",
    ):
        response = fleet.post(path, content=content, headers=headers)
        # 400 only for a body the JSON parser itself gives up on (nesting too deep)
        assert response.status_code in (400, 422), (path, response.text)
        assert response.json()["error"] in ("invalid_request", "bad_request")
    assert fleet.get("/health").json()["status"] == "ok"


def test_unknown_routes_and_methods_answer_with_the_error_shape(fleet):
    wrong_method = fleet.get(tenant_path("t-0001", "upgrade"))
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


# -- monitoring ------------------------------------------------------------------------------------


def test_monitoring_query_answers_per_tenant_aggregates_in_the_contract_shape(fleet):
    body = {
        "plugin": "crm-sync",
        "tenants": ["t-0001", "t-0002"],
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T00:10:00Z",
    }
    response = fleet.post("/internal/monitoring/query", json=body)
    assert response.status_code == 200
    result = MonitoringResult.model_validate(response.json())
    assert result.metrics == ["requests", "errors", "latency_p95_ms", "samples"]
    assert set(result.tenants) == {"t-0001", "t-0002"} and result.no_data == []
    one = result.tenants["t-0001"]
    assert one.samples == 60  # ten minutes of 10 s buckets
    assert 0.7 * 200 * 600 <= one.requests <= 1.3 * 200 * 600
    assert 0.0085 <= one.errors / one.requests <= 0.0115
    assert 114 <= one.latency_p95_ms <= 126
    assert one.error_rate is None  # not asked for

    everyone = fleet.post(
        "/internal/monitoring/query",
        json={**body, "tenants": None, "metrics": ["error_rate", "samples"]},
    ).json()
    assert len(everyone["tenants"]) == 21
    assert set(everyone["tenants"]["t-0003"]) == {"error_rate", "samples"}


def test_monitoring_query_has_no_data_for_the_future(fleet):
    body = {
        "plugin": "crm-sync",
        "tenants": ["t-0001"],
        "start": "2099-01-01T00:00:00Z",
        "end": "2099-01-01T00:10:00Z",
    }
    result = fleet.post("/internal/monitoring/query", json=body).json()
    assert result["tenants"] == {} and result["no_data"] == ["t-0001"]


@pytest.mark.parametrize(
    ("change", "status", "error"),
    [
        ({"start": "2026-01-01T00:00:00"}, 422, "invalid_request"),  # no time zone
        ({"end": "2025-12-31T00:00:00Z"}, 422, "invalid_query"),  # end before start
        ({"metrics": ["cpu"]}, 422, "invalid_request"),
        ({"tenants": ["t-0001", "t-404"]}, 404, "unknown_tenant"),
        ({"plugin": "other"}, 404, "unknown_plugin"),
        ({"start": "2020-01-01T00:00:00Z"}, 422, "invalid_query"),  # far too large
        ({"filter": "x"}, 422, "invalid_request"),
    ],
)
def test_bad_monitoring_queries_are_refused_with_the_reason(fleet, change, status, error):
    body = {
        "plugin": "crm-sync",
        "tenants": ["t-0001"],
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T00:10:00Z",
        **change,
    }
    if change.get("start") == "2020-01-01T00:00:00Z":
        body["tenants"] = None
    response = fleet.post("/internal/monitoring/query", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


def test_subscriptions_are_recorded_and_idempotent_by_id(fleet):
    body = {"id": "sub-run-1", "plugin": "crm-sync", "tenants": ["t-0001"], "run_id": "run-1"}
    first = fleet.post("/internal/monitoring/subscribe", json=body)
    again = fleet.post("/internal/monitoring/subscribe", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    anonymous = fleet.post("/internal/monitoring/subscribe", json={"plugin": "crm-sync"})
    assert anonymous.status_code == 201 and anonymous.json()["id"].startswith("sub-")
    stored = fleet.get("/sandbox/subscriptions").json()["subscriptions"]
    assert [s["id"] for s in stored] == ["sub-run-1", anonymous.json()["id"]]
    assert stored[0]["run_id"] == "run-1" and stored[0]["metrics"] == ["requests", "errors"]
    unknown = fleet.post("/internal/monitoring/subscribe", json={"plugin": "x"})
    assert unknown.status_code == 404


# -- notify and audit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "listing", "key", "body"),
    [
        (
            "/internal/audit/version",
            "/sandbox/audit",
            "records",
            {"id": "aud-1", "actor": "rm@example.com", "action": "upgrade.batch.started",
             "plugin": "crm-sync", "version": "2.4.0", "tenants": ["t-0001"],
             "at": "2026-05-02T02:00:00Z", "details": {"batch": 1}},
        ),
        (
            "/internal/notify/version",
            "/sandbox/notifications",
            "notifications",
            {"id": "ntf-1", "event": "plugin.version.gray.alert", "severity": "critical",
             "plugin": "crm-sync", "title": "error rate 9 % in bronze"},
        ),
    ],
)  # fmt: skip
def test_notify_and_audit_are_recorded_once_per_id(fleet, path, listing, key, body):
    first = fleet.post(path, json=body)
    assert first.status_code == 201 and first.json()["duplicate"] is False
    again = fleet.post(path, json=body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["received_at"] == first.json()["received_at"]
    other = fleet.post(path, json={**body, "id": body["id"] + "-b"})
    assert other.status_code == 201
    conflict = fleet.post(path, json={**body, "plugin": "changed"})
    assert conflict.status_code == 422 and conflict.json()["error"] == "idempotency_mismatch"
    records = fleet.get(listing).json()[key]
    assert [r["id"] for r in records] == [body["id"], body["id"] + "-b"]
    assert records[0]["plugin"] == "crm-sync" and records[0]["received_at"]
    missing = fleet.post(path, json={"id": "only-id"})
    assert missing.status_code == 422


# -- inspection ------------------------------------------------------------------------------------


def test_events_list_every_call_in_order_with_status_tenant_and_key(fleet):
    fleet.get("/internal/plugins/crm-sync/tenants")
    fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "ev-1"))
    fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.5.0", "ev-2"))
    fleet.get(tenant_path("t-0404"))
    page = EventList.model_validate(fleet.get("/sandbox/events").json())
    calls = [(e.method, e.path, e.status, e.tenant, e.idempotency_key) for e in page.events]
    assert calls == [
        ("POST", "/sandbox/reset", 200, None, None),
        ("GET", "/internal/plugins/crm-sync/tenants", 200, None, None),
        ("POST", tenant_path("t-0001", "upgrade"), 200, "t-0001", "ev-1"),
        ("POST", tenant_path("t-0001", "upgrade"), 200, "t-0001", "ev-2"),
        ("GET", tenant_path("t-0404"), 404, "t-0404", None),
    ]
    assert [e.seq for e in page.events] == sorted(e.seq for e in page.events)
    assert [e.at for e in page.events] == sorted(e.at for e in page.events)
    assert page.events[2].duration_ms >= 290
    only = fleet.get("/sandbox/events", params={"prefix": "/internal", "tenant": "t-0001"}).json()
    assert [e["idempotency_key"] for e in only["events"]] == ["ev-1", "ev-2"]
    later = fleet.get("/sandbox/events", params={"since": page.events[-1].seq}).json()
    assert [e["path"] for e in later["events"]] == ["/sandbox/events", "/sandbox/events"]


def test_reset_brings_back_the_scenario_fleet_and_clears_records(fleet):
    fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body()).raise_for_status()
    fleet.post("/internal/audit/version", json={"id": "a", "actor": "x", "action": "y"})
    fleet.post("/sandbox/faults", json={"faults": [{"type": "audit_outage"}]})
    info = fleet.post("/sandbox/reset").json()
    assert info["first_upgrade_at"] is None and info["tenants"] == 21
    assert fleet.get(tenant_path("t-0001")).json()["version"] == "2.3.1"
    assert fleet.get("/sandbox/audit").json()["records"] == []
    assert fleet.get("/sandbox/faults").json()["faults"] == []
    paths = [e["path"] for e in fleet.get("/sandbox/events").json()["events"]]
    assert paths[0] == "/sandbox/reset" and tenant_path("t-0001", "upgrade") not in paths


def test_openapi_documents_the_whole_contract(fleet):
    document = fleet.get("/openapi.json").json()
    paths = document["paths"]
    for path, method in [
        ("/internal/plugins/{plugin}/tenants", "get"),
        ("/internal/plugins/{plugin}/tenants/{tenant}", "get"),
        ("/internal/plugins/{plugin}/tenants/{tenant}/upgrade", "post"),
        ("/internal/plugins/{plugin}/tenants/{tenant}/rollback", "post"),
        ("/internal/monitoring/query", "post"),
        ("/internal/monitoring/subscribe", "post"),
        ("/internal/notify/version", "post"),
        ("/internal/audit/version", "post"),
        ("/sandbox/tenants", "get"),
        ("/sandbox/events", "get"),
        ("/sandbox/faults", "post"),
        ("/sandbox/reset", "post"),
        ("/health", "get"),
    ]:
        assert method in paths[path], path
    upgrade = paths["/internal/plugins/{plugin}/tenants/{tenant}/upgrade"]["post"]
    assert {"200", "404", "409", "422"} <= set(upgrade["responses"])
    schemas = document["components"]["schemas"]
    assert set(schemas["UpgradeRequest"]["required"]) == {"version", "artifact", "idempotency_key"}
    assert schemas["UpgradeRequest"]["additionalProperties"] is False
    assert "operation" in schemas["OperationResult"]["properties"]
    assert set(schemas["MonitoringQuery"]["required"]) == {"plugin", "start", "end"}
