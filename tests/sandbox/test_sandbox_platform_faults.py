"""The fault matrix's sandbox additions over real HTTP: bursts of a known size (`times`), a
tenant held by someone else's operation (`in_flight`: 409 operation_in_flight) and a platform
clock ahead of the real one (`POST /sandbox/clock`, `--clock-offset`)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from powerx_dev.sandbox.clock import parse_offset
from powerx_dev.sandbox.testing import running_sandbox
from tests.sandbox.sandbox_http import tenant_path, upgrade_body

pytestmark = pytest.mark.e2e


def inject(client: httpx.Client, *faults: dict) -> list[dict]:
    response = client.post("/sandbox/faults", json={"faults": list(faults)})
    assert response.status_code == 201, response.text
    return response.json()["faults"]


def test_an_http_error_burst_with_times_refuses_that_many_calls_then_none(fleet):
    inject(fleet, {"type": "http_error", "endpoint": "upgrade", "status": 502, "times": 3})
    statuses = [
        fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "k")).status_code
        for _ in range(5)
    ]
    assert statuses == [502, 502, 502, 200, 200]
    ops = fleet.get("/sandbox/tenants").json()["tenants"][0]["operations"]
    assert len(ops) == 1  # the replay with the same key did not upgrade twice


def test_a_timeout_with_times_holds_only_the_first_answer(fleet):
    inject(fleet, {"type": "timeout", "endpoint": "upgrade", "hold": "0.2s", "times": 1})
    held = fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "k"))
    assert held.status_code == 504
    replay = fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "k"))
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"


def test_an_in_flight_fault_refuses_its_tenants_409_times_per_tenant_then_frees_them(fleet):
    inject(fleet, {"type": "in_flight", "tenants": ["t-0001"], "times": 2})
    first = fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "a"))
    assert first.status_code == 409 and first.json()["error"] == "operation_in_flight"
    assert first.headers["Retry-After"] == "1"
    again = fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "b"))
    assert again.status_code == 409
    other = fleet.post(tenant_path("t-0002", "upgrade"), json=upgrade_body("2.4.0", "c"))
    assert other.status_code == 200  # not a target
    assert fleet.get(tenant_path("t-0001")).json()["version"] == "2.3.1"
    free = fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body("2.4.0", "d"))
    assert free.status_code == 200 and free.json()["version"] == "2.4.0"


def test_an_in_flight_fault_on_upgrades_leaves_rollbacks_alone(fleet):
    fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body()).raise_for_status()
    inject(fleet, {"type": "in_flight", "tenants": ["t-0001"]})
    back = fleet.post(tenant_path("t-0001", "rollback"), json={"idempotency_key": "r"})
    assert back.status_code == 200 and back.json()["version"] == "2.3.1"


def test_the_clock_offset_shifts_every_published_time_and_reset_clears_it(fleet):
    skewed = fleet.post("/sandbox/clock", json={"offset": "2m"})
    assert skewed.status_code == 200 and skewed.json()["offset_ms"] == 120_000
    platform_now = datetime.fromisoformat(skewed.json()["now"].replace("Z", "+00:00"))
    ahead = (platform_now - datetime.now(UTC)).total_seconds()
    assert 115 < ahead < 125, ahead
    done = fleet.post(tenant_path("t-0001", "upgrade"), json=upgrade_body()).json()
    finished = datetime.fromisoformat(done["operation"]["finished_at"].replace("Z", "+00:00"))
    assert 115 < (finished - datetime.now(UTC)).total_seconds() < 125
    fleet.post("/sandbox/reset").raise_for_status()
    assert fleet.get("/sandbox/clock").json()["offset_ms"] == 0


def test_a_bad_clock_offset_is_refused_422(fleet):
    for bad in ("soon", "2d", ""):
        answer = fleet.post("/sandbox/clock", json={"offset": bad})
        assert answer.status_code == 422, (bad, answer.text)
    assert fleet.get("/sandbox/clock").json()["offset_ms"] == 0


def test_parse_offset_reads_signed_durations():
    assert parse_offset("2m") == 120_000
    assert parse_offset("-30s") == -30_000
    assert parse_offset("+1h") == 3_600_000
    with pytest.raises(ValueError):
        parse_offset("25h")


def test_the_server_option_sets_an_offset_that_survives_a_reset(fleet_scenario):
    with (
        running_sandbox(fleet_scenario, clock_offset="-30s") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        assert client.get("/sandbox/clock").json()["offset_ms"] == -30_000
        client.post("/sandbox/clock", json={"offset": "2m"}).raise_for_status()
        client.post("/sandbox/reset").raise_for_status()
        assert client.get("/sandbox/clock").json()["offset_ms"] == -30_000
