"""Nothing a client sends can crash the sandbox: fuzzed bodies and paths never get a 5xx."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(endpoint=st.sampled_from(ENDPOINTS), field=st.text(max_size=12), value=json_values)
def test_a_valid_body_with_one_field_replaced_by_anything_never_gets_a_server_error(
    fleet, endpoint, field, value
):
    body = dict(VALID[endpoint])
    body[field or next(iter(body))] = value  # an existing field, or an unknown extra one
    content = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity as Python's json writes them
    _assert_sane(
        fleet.post(endpoint, content=content, headers={"content-type": "application/json"})
    )


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plugin=st.text(min_size=1, max_size=20).filter(lambda s: s not in (".", "..")).map(_segment),
    tenant=st.text(min_size=1, max_size=20).filter(lambda s: s not in (".", "..")).map(_segment),
    query=st.dictionaries(st.sampled_from(["label", "version", "since", "prefix", "plugin"]),
                          st.text(max_size=10), max_size=3),
)  # fmt: skip
def test_any_path_and_query_string_never_gets_a_server_error(fleet, plugin, tenant, query):
    paths = [
        f"/internal/plugins/{plugin}/tenants",
        f"/internal/plugins/{plugin}/tenants/{tenant}",
        "/sandbox/tenants",
        "/sandbox/events",
    ]
    for path in paths:
        _assert_sane(fleet.get(path, params=query))
    _assert_sane(
        fleet.post(f"/internal/plugins/{plugin}/tenants/{tenant}/upgrade", json=upgrade_body())
    )


def test_the_sandbox_still_lists_everything_after_being_fuzzed(fleet):
    for endpoint, body in VALID.items():
        assert fleet.post(endpoint, json=body).status_code < 300, endpoint
    for listing in ("/sandbox/tenants", "/sandbox/audit", "/sandbox/notifications",
                    "/sandbox/subscriptions", "/sandbox/events", "/sandbox/faults"):  # fmt: skip
        assert fleet.get(listing).status_code == 200, listing


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
