"""Nothing a client sends can crash the sandbox: fuzzed bodies and paths never get a 5xx, and
the same sandbox, not reset, still lists everything and does its work after the fuzz."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powerx_dev.sandbox.testing import running_sandbox
from tests.sandbox.sandbox_http import SHA, tenant_path, upgrade_body

pytestmark = pytest.mark.e2e

ENDPOINTS = [
    tenant_path("t-0001", "upgrade"),
    tenant_path("t-0001", "rollback"),
    "/internal/monitoring/query",
    "/internal/monitoring/subscribe",
    "/internal/notify/version",
    "/internal/audit/version",
    "/sandbox/faults",
]
VALID = {
    ENDPOINTS[0]: upgrade_body(),
    ENDPOINTS[1]: {"to_version": "2.3.1", "idempotency_key": "r"},
    ENDPOINTS[2]: {
        "plugin": "crm-sync",
        "tenants": ["t-0001"],
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T00:05:00Z",
    },
    ENDPOINTS[3]: {"plugin": "crm-sync", "metrics": ["requests"]},
    ENDPOINTS[4]: {"id": "n", "event": "plugin.version.gray.alert"},
    ENDPOINTS[5]: {"id": "a", "actor": "x", "action": "y", "details": {}},
    ENDPOINTS[6]: {"faults": [{"type": "latency", "tenants": ["t-0002"], "factor": 1.5}]},
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["2.4.0", "t-0001", "crm-sync", SHA, "10s", "1e9d", "2026-01-01T00:00:00Z"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _segment(text: str) -> str:
    return quote(text, safe="")


def _assert_sane(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code in (503, 504), response.text
    if response.status_code >= 400:
        assert "error" in response.json()


def fuzz_bodies(client: httpx.Client) -> int:
    """Valid bodies with one field replaced by anything (hypothesis); returns how many sent."""
    sent = []

    @settings(max_examples=120, deadline=None, database=None)
    @given(endpoint=st.sampled_from(ENDPOINTS), field=st.text(max_size=12), value=json_values)
    def one(endpoint: str, field: str, value: object) -> None:
        body = dict(VALID[endpoint])
        body[field or next(iter(body))] = value  # an existing field, or an unknown extra one
        content = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity as Python writes them
        headers = {"content-type": "application/json"}
        _assert_sane(client.post(endpoint, content=content, headers=headers))
        sent.append(endpoint)

    one()
    return len(sent)


def fuzz_paths(client: httpx.Client) -> int:
    """Any plugin and tenant path segment and query string (hypothesis); returns how many."""
    sent = []
    segment = st.text(min_size=1, max_size=20).filter(lambda s: s not in (".", "..")).map(_segment)

    @settings(max_examples=60, deadline=None, database=None)
    @given(
        plugin=segment,
        tenant=segment,
        query=st.dictionaries(st.sampled_from(["label", "version", "since", "prefix", "plugin"]),
                              st.text(max_size=10), max_size=3),
    )  # fmt: skip
    def one(plugin: str, tenant: str, query: dict[str, str]) -> None:
        for path in (
            f"/internal/plugins/{plugin}/tenants",
            f"/internal/plugins/{plugin}/tenants/{tenant}",
            "/sandbox/tenants",
            "/sandbox/events",
        ):
            _assert_sane(client.get(path, params=query))
        upgrade = f"/internal/plugins/{plugin}/tenants/{tenant}/upgrade"
        _assert_sane(client.post(upgrade, json=upgrade_body()))
        sent.append(plugin)

    one()
    return len(sent)


LISTINGS = (
    "/sandbox/tenants",
    "/sandbox/audit",
    "/sandbox/notifications",
    "/sandbox/subscriptions",
    "/sandbox/events",
    "/sandbox/faults",
)


@pytest.fixture(scope="module")
def unreset(fleet_scenario) -> Iterator[httpx.Client]:
    """A sandbox of its own, never reset: what the fuzz leaves is what the checks see."""
    with running_sandbox(fleet_scenario) as url, httpx.Client(base_url=url, timeout=10) as c:
        yield c


def test_the_sandbox_still_serves_after_being_fuzzed_without_a_reset(unreset):
    before = unreset.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    assert fuzz_bodies(unreset) >= 100
    assert fuzz_paths(unreset) >= 50
    # the same sandbox, not reset: every listing answers with JSON that reads back
    for listing in LISTINGS:
        answer = unreset.get(listing)
        assert answer.status_code == 200, listing
        json.loads(answer.text)  # strict JSON: no NaN/Infinity written that cannot be read back
    after = unreset.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    assert sorted(t["id"] for t in after) == sorted(t["id"] for t in before)
    # and it still does its work: a fresh upgrade lands, a fresh audit record is kept
    target = "t-internal-1"
    done = unreset.post(tenant_path(target, "upgrade"), json=upgrade_body(key="after-fuzz"))
    assert done.status_code < 300, done.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tenants = unreset.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
        if next(t for t in tenants if t["id"] == target)["version"] == "2.4.0":
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"{target} never reached 2.4.0 after the fuzz")
    record = {"id": "after-fuzz", "actor": "x", "action": "y", "details": {}}
    assert unreset.post("/internal/audit/version", json=record).status_code == 201
    ids = [r["id"] for r in unreset.get("/sandbox/audit").json()["records"]]
    assert ids.count("after-fuzz") == 1


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        (
            "/internal/audit/version",
            b'{"id": "a", "actor": "x", "action": "y", "details": {"v": NaN}}',
        ),
        ("/internal/notify/version", b'{"id": "n", "event": "e", "context": {"v": Infinity}}'),
        ("/sandbox/faults", b'{"faults": [{"type": "latency", "factor": Infinity}]}'),
        ("/sandbox/faults", b'{"faults": [{"type": "signal_delay", "value": "99999999999d"}]}'),
        (
            "/sandbox/faults",
            b'{"faults": [{"type": "timeout", "endpoint": "audit", "hold": "2h"}]}',
        ),
    ],
)
def test_values_that_could_not_be_written_back_out_are_refused(fleet, endpoint, body):
    response = fleet.post(endpoint, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert fleet.get("/sandbox/audit").status_code == 200
