"""Generated hostile input for every sandbox route (issue 15 point 4): at least 1,000 malformed
bodies (or path segments and query strings, for the routes without a body) each, in process.
No answer may be a 5xx other than a fault the test itself injected (documented as
`injected_fault`), and every error answer has the documented `ErrorBody` shape. Derandomised
when CI is set."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powerx_dev.sandbox.app import create_app
from powerx_dev.sandbox.scenario import parse_scenario
from tests.asgi_driver import Driver
from tests.sandbox.conftest import FLEET_YAML
from tests.sandbox.sandbox_http import SHA, tenant_path, upgrade_body

pytestmark = pytest.mark.unit

CASES = 1000
HOSTILE = settings(
    max_examples=CASES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BODIES: dict[str, Any] = {
    tenant_path("t-0001", "upgrade"): upgrade_body(),
    tenant_path("t-0001", "rollback"): {"to_version": "2.3.1", "idempotency_key": "r"},
    "/internal/monitoring/query": {
        "plugin": "crm-sync",
        "tenants": ["t-0001"],
        "start": "2026-01-01T00:00:00Z",
        "end": "2026-01-01T00:05:00Z",
    },
    "/internal/monitoring/subscribe": {"plugin": "crm-sync", "metrics": ["requests"]},
    "/internal/notify/version": {"id": "n", "event": "plugin.version.gray.alert"},
    "/internal/audit/version": {"id": "a", "actor": "x", "action": "y", "details": {}},
    "/sandbox/faults": {"faults": [{"type": "latency", "tenants": ["t-0002"], "factor": 1.5}]},
    "/sandbox/reset": {},
}
GETS = [
    "/health",
    "/metrics",
    "/internal/plugins/{a}/tenants",
    "/internal/plugins/crm-sync/tenants/{a}",
    "/sandbox/info",
    "/sandbox/tenants",
    "/sandbox/audit",
    "/sandbox/notifications",
    "/sandbox/subscriptions",
    "/sandbox/events",
    "/sandbox/faults",
]
DELETES = ["/sandbox/faults/{a}"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["2.4.0", "t-0001", "crm-sync", SHA, "10s", "1e9d", "2026-01-01T00:00:00"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
raw = st.sampled_from(
    ["", "{", "null", "NaN", '{"a": 1e999}', "[" * 5000, '"\\ud800"', "1" * 5000, "\x00", "{}{}"]
)
segments = st.text(max_size=30).map(lambda t: quote(t.encode("utf-8", "surrogatepass"), safe=""))
queries = st.lists(
    st.tuples(
        st.sampled_from(["plugin", "version", "label", "since", "prefix", "x"]),
        st.text(max_size=12) | st.sampled_from(["-1", "tier=gold", "=", "9" * 30, "crm-sync"]),
    ),
    max_size=4,
)


def mutated(path: str) -> st.SearchStrategy[bytes]:
    base = BODIES[path]
    keys = sorted(base) or ["x"]
    replaced = st.builds(lambda k, v: {**base, k: v}, st.sampled_from(keys), values)
    extra = st.builds(lambda k, v: {**base, k: v}, st.text(max_size=8), values)
    as_json = (replaced | extra | values).map(
        lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")
    )
    return as_json | raw.map(str.encode) | st.binary(max_size=64)


@pytest.fixture(scope="module")
def client() -> Iterator[Driver]:
    async def no_wait(seconds: float) -> None:
        return None

    driver = Driver(create_app(parse_scenario(FLEET_YAML), sleep=no_wait))
    yield driver
    driver.close()


def check(client: Driver, answer: Any) -> None:
    if answer.status_code >= 400:
        body = answer.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
        if answer.status_code >= 500:
            assert body["error"] == "injected_fault", answer.text
    if answer.request.url.path == "/sandbox/faults" and answer.request.method == "POST":
        client.post("/sandbox/reset")  # an injected fault is this example's only


@pytest.mark.parametrize("path", sorted(BODIES))
def test_posted_bodies(client, path):
    client.post("/sandbox/reset")  # each route starts from the scenario (and an empty log)

    @HOSTILE
    @given(body=mutated(path))
    def run(body: bytes) -> None:
        answer = client.post(path, content=body, headers={"content-type": "application/json"})
        check(client, answer)

    run()


@pytest.mark.parametrize("template", GETS + DELETES)
def test_paths_and_queries(client, template):
    method = "DELETE" if template in DELETES else "GET"
    client.post("/sandbox/reset")

    @HOSTILE
    @given(segment=segments, query=queries)
    def run(segment: str, query: list[tuple[str, str]]) -> None:
        path = template.replace("{a}", segment or "x")
        answer = client.request(method, path, params=query)
        check(client, answer)

    run()
