"""GET /metrics: the text exposition, its agreement with the monitoring query, silent tenants."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from powerx_dev.sandbox.app import create_app
from powerx_dev.sandbox.exposition import (
    BUCKETS,
    CONTENT_TYPE,
    Exposition,
    escape,
    latency_shares,
)
from powerx_dev.sandbox.faults import MetricsGapFault
from powerx_dev.sandbox.metrics import MetricsEngine, TenantSeries, WindowedFault
from powerx_dev.sandbox.scenario import parse_scenario
from tests.sandbox.sandbox_http import iso, upgrade_body

pytestmark = pytest.mark.unit

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
INF = float("inf")

SCENARIO = """\
seed: 7
plugin: crm-sync
tenants: {count: 6, version: 2.3.1, labels: {tier: {gold: 0.5, bronze: 0.5}}}
traffic: {rps: 20, error_rate: 0.01, latency_p95_ms: 120}
versions:
  2.5.0: {error_rate: 0.09, latency_p95_ms: 130}
"""

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """{(metric name, labels): value} of every sample line; comments checked for shape."""
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) powerx_plugin_[a-z_]+ .+$", line), line
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"]))
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(samples, name: str, tenant: str, version: str, **extra: str) -> float:
    labels = {"tenant": tenant, "plugin": "crm-sync", "version": version, **extra}
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def client(clock: Clock) -> TestClient:
    async def no_wait(seconds: float) -> None:
        return None

    app = create_app(parse_scenario(SCENARIO), clock=clock, sleep=no_wait)
    return TestClient(app)


def scrape(client: TestClient) -> dict[tuple[str, frozenset], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE
    return parse(answer.text)


def monitoring(client: TestClient, start: float, end: float) -> dict[str, dict]:
    body = {
        "plugin": "crm-sync",
        "start": iso(datetime.fromtimestamp(start, UTC)),
        "end": iso(datetime.fromtimestamp(end, UTC)),
    }
    answer = client.post("/internal/monitoring/query", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["tenants"]


def test_metrics_has_three_families_with_exactly_tenant_plugin_version_labels(client, clock):
    clock.now += 30
    text = client.get("/metrics").text
    assert (
        text.index("# TYPE powerx_plugin_requests_total counter")
        < text.index("# TYPE powerx_plugin_errors_total counter")
        < text.index("# TYPE powerx_plugin_request_duration_seconds histogram")
    )
    samples = scrape(client)
    names = {name for name, _ in samples}
    assert names == {
        "powerx_plugin_requests_total",
        "powerx_plugin_errors_total",
        "powerx_plugin_request_duration_seconds_bucket",
        "powerx_plugin_request_duration_seconds_sum",
        "powerx_plugin_request_duration_seconds_count",
    }
    for name, labels in samples:
        keys = {key for key, _ in labels}
        expected = {"tenant", "plugin", "version"} | ({"le"} if name.endswith("_bucket") else set())
        assert keys == expected, (name, labels)
    tenants = {dict(labels)["tenant"] for _, labels in samples}
    assert tenants == {f"t-{n:04d}" for n in range(1, 7)}


def test_histogram_buckets_rise_with_le_and_end_at_the_request_count(client, clock):
    clock.now += 45
    samples = scrape(client)
    for tenant in ("t-0001", "t-0004"):
        count = value(samples, "powerx_plugin_requests_total", tenant, "2.3.1")
        buckets = [
            value(
                samples,
                "powerx_plugin_request_duration_seconds_bucket",
                tenant,
                "2.3.1",
                le=f"{b:g}",
            )
            for b in BUCKETS
        ]
        top = value(
            samples, "powerx_plugin_request_duration_seconds_bucket", tenant, "2.3.1", le="+Inf"
        )
        assert buckets == sorted(buckets) and buckets[-1] <= top == count
        assert (
            value(samples, "powerx_plugin_request_duration_seconds_count", tenant, "2.3.1") == count
        )
        assert 600 < count < 1200  # 45 s at 20 rps +- spread and noise
        mean = value(samples, "powerx_plugin_request_duration_seconds_sum", tenant, "2.3.1") / count
        assert 0.05 < mean < 0.12  # log-normal with p95 ~120 ms: mean ~59 ms


def test_counter_increases_between_scrapes_equal_the_monitoring_query_for_that_interval(
    client, clock
):
    clock.now += 7.5
    before = scrape(client)
    start = clock.now
    clock.now += 95.25  # crosses bucket edges, ends mid-bucket
    after = scrape(client)
    answer = monitoring(client, start, clock.now)
    for tenant, values in answer.items():
        requests = value(after, "powerx_plugin_requests_total", tenant, "2.3.1") - value(
            before, "powerx_plugin_requests_total", tenant, "2.3.1"
        )
        errors = value(after, "powerx_plugin_errors_total", tenant, "2.3.1") - value(
            before, "powerx_plugin_errors_total", tenant, "2.3.1"
        )
        # counters are whole numbers floored at each end, the query rounds: 1 apart at most
        assert abs(requests - values["requests"]) <= 1, tenant
        assert abs(errors - values["errors"]) <= 1, tenant


def test_an_upgraded_tenant_gets_a_series_for_its_new_version_and_keeps_the_old_one(client, clock):
    clock.now += 20
    answer = client.post(
        "/internal/plugins/crm-sync/tenants/t-0002/upgrade", json=upgrade_body("2.5.0")
    )
    assert answer.status_code == 200 and answer.json()["operation"]["status"] == "succeeded"
    frozen = value(scrape(client), "powerx_plugin_requests_total", "t-0002", "2.3.1")
    start = clock.now
    clock.now += 120
    samples = scrape(client)
    assert value(samples, "powerx_plugin_requests_total", "t-0002", "2.3.1") == frozen
    requests = value(samples, "powerx_plugin_requests_total", "t-0002", "2.5.0")
    errors = value(samples, "powerx_plugin_errors_total", "t-0002", "2.5.0")
    assert 0.076 < errors / requests < 0.104  # 9 % +- the engine's bounded noise
    assert monitoring(client, start, clock.now)["t-0002"]["requests"] == pytest.approx(
        requests, abs=1
    )
    assert (
        "powerx_plugin_requests_total",
        frozenset({("tenant", "t-0001"), ("plugin", "crm-sync"), ("version", "2.5.0")}),
    ) not in samples


def test_a_silenced_tenant_is_left_out_while_silent_and_comes_back_without_the_gap(client, clock):
    clock.now += 10
    gap = {"type": "metrics_gap", "tenants": ["t-0003"], "after": "5s", "duration": "30s"}
    assert client.post("/sandbox/faults", json={"faults": [gap]}).status_code == 201
    before = value(scrape(client), "powerx_plugin_requests_total", "t-0003", "2.3.1")
    clock.now += 10  # 5 s of traffic, then silent
    during = scrape(client)
    assert {dict(labels)["tenant"] for _, labels in during} == {
        f"t-{n:04d}" for n in (1, 2, 4, 5, 6)
    }
    clock.now += 40  # the gap ended 15 s ago
    after = value(scrape(client), "powerx_plugin_requests_total", "t-0003", "2.3.1")
    per_second = before / 10
    assert after - before == pytest.approx(20 * per_second, rel=0.25)  # 5 s + 15 s, not 50 s


def test_a_version_scoped_gap_silences_only_tenants_running_that_version(client, clock):
    clock.now += 10
    client.post("/internal/plugins/crm-sync/tenants/t-0005/upgrade", json=upgrade_body("2.5.0"))
    gap = {"type": "metrics_gap", "version": "2.5.0", "after": "0s", "duration": "1h"}
    assert client.post("/sandbox/faults", json={"faults": [gap]}).status_code == 201
    clock.now += 10
    tenants = {dict(labels)["tenant"] for _, labels in scrape(client)}
    assert "t-0005" not in tenants and {"t-0001", "t-0006"} <= tenants
    assert "t-0005" not in monitoring(client, clock.now - 9, clock.now)


def test_a_reset_starts_the_counters_again():
    clock = Clock(T0)
    app = create_app(parse_scenario(SCENARIO), clock=clock)
    client = TestClient(app)
    clock.now += 60
    first = value(scrape(client), "powerx_plugin_requests_total", "t-0001", "2.3.1")
    client.post("/sandbox/reset")
    clock.now += 6
    assert value(scrape(client), "powerx_plugin_requests_total", "t-0001", "2.3.1") < first / 5


def test_totals_are_the_same_however_often_they_are_scraped():
    engine = MetricsEngine(parse_scenario(SCENARIO))
    tenant = TenantSeries("t-0001", {"tier": "gold"}, ((-INF, "2.3.1"), (T0 + 33.3, "2.5.0")))
    faults = [WindowedFault(MetricsGapFault(after="0s", duration="9s"), T0 + 50, T0 + 59)]
    once, often = Exposition(engine, "crm-sync", T0), Exposition(engine, "crm-sync", T0)
    for step in range(1, 121):
        often.render([tenant], T0 + step * 0.75, faults)
    assert once.render([tenant], T0 + 90, faults) == often.render([tenant], T0 + 90, faults)


def test_latency_shares_put_ninety_five_percent_under_the_p95():
    shares = dict(zip(BUCKETS, latency_shares(250.0), strict=True))
    assert shares[0.25] == pytest.approx(0.95)
    assert shares[0.005] < 1e-6 and shares[10.0] == pytest.approx(1.0)
    assert list(shares.values()) == sorted(shares.values())


def test_label_values_are_escaped():
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
