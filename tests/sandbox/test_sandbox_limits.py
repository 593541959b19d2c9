"""Issue 15's sandbox reproduction: a 7 MB body of 600,000 unknown keys was parsed, answered
with 54 MB listing every key, and stalled /health for 5 s. Now: 413 before parsing (by
Content-Length and by what streams in), objects wider than 1,000 members refused before
validation, and a 422 lists at most 20 problems and counts them all."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from powerx_dev.sandbox.app import create_app
from powerx_dev.sandbox.limits import BODY_LIMIT, MAX_DETAILS, MAX_KEYS
from powerx_dev.sandbox.scenario import load_scenario
from tests.sandbox.conftest import SCENARIOS

pytestmark = pytest.mark.unit
SUBSCRIBE = "/internal/monitoring/subscribe"


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(load_scenario(SCENARIOS / "bad-version.yaml")))


def unknown_keys(count: int) -> bytes:
    return json.dumps({"plugin": "crm-sync", **{f"k{i:06d}": 0 for i in range(count)}}).encode()


def test_a_7_mb_body_of_600k_unknown_keys_is_refused_unread_and_health_still_answers(client):
    body = unknown_keys(600_000)
    assert len(body) > 7_000_000
    answer = client.post(SUBSCRIBE, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"] == "body_too_large"
    assert str(BODY_LIMIT) in answer.json()["message"]
    assert len(answer.content) < 500
    assert client.get("/health").status_code == 200
    events = client.get("/sandbox/events").json()["events"]
    assert [e["status"] for e in events if e["path"] == SUBSCRIBE] == [413]


def test_a_chunked_body_over_the_limit_is_refused_by_what_streams_in(client):
    def chunks():
        for _ in range(BODY_LIMIT // 65536 + 2):
            yield b" " * 65536

    answer = client.post(SUBSCRIBE, content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert "read or declared" in answer.json()["message"]


def test_an_object_wider_than_the_limit_is_refused_before_validation(client):
    answer = client.post(
        SUBSCRIBE, content=unknown_keys(MAX_KEYS + 5), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json() == {
        "error": "invalid_request",
        "message": f"a JSON object of the body has {MAX_KEYS + 6} members; "
        f"at most {MAX_KEYS} are read",
    }


def test_a_422_lists_the_first_20_problems_and_counts_them_all(client):
    answer = client.post(
        SUBSCRIBE, content=unknown_keys(500), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    body = answer.json()
    assert len(body["details"]) == MAX_DETAILS
    assert body["details_total"] == 500  # every unknown key
    assert "more; 20 listed" in body["message"]


def test_an_unknown_key_that_is_a_lone_surrogate_is_answered_in_json(client):
    answer = client.post(
        SUBSCRIBE,
        content=json.dumps({"plugin": "crm-sync", "metrics": ["requests"], "\ud800": 1}),
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_request" and answer.json()["details_total"] >= 1
