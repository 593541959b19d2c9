"""A real Prometheus server scrapes the sandbox's `/metrics`: it parses, PromQL rates agree with
the sandbox's monitoring query, case B's bad version shows through PromQL, silence goes stale.

One sandbox (bad-version scenario) and one Prometheus for the module; five tenants are upgraded
to 2.5.0 at the start and every comparison reads the same 20 s interval after that.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from datetime import UTC, datetime

import httpx
import pytest

from powerx_dev.prometheus_server import target_health, wait_for_scrape
from tests.prometheus import ScrapedSandbox
from tests.sandbox.sandbox_http import iso, tenant_path, upgrade_body

pytestmark = pytest.mark.e2e

WINDOW = 20  # seconds of traffic compared
# PromQL increase() vs the monitoring query over the same 20 s (about 400 requests a tenant):
# counters are whole numbers (floored at each end; the query rounds) and increase() extrapolates
# the last ~0.5 s at each edge from the window's average rate, which the engine's +-10 % noise per
# bucket makes differ from the edge's own. Measured: at most 2.7 requests (0.7 %), 1.3 errors.
REQUESTS_TOLERANCE = 0.015  # 1.5 %, and at least REQUESTS_FLOOR requests
REQUESTS_FLOOR = 4.0
ERRORS_TOLERANCE = 3.0
P95_TOLERANCE = 0.10  # histogram_quantile vs the simulated p95: measured 3.6 %; docs promise 5 %
# at 100 ms-2 s for one piece, the interval mixes ~3 buckets' noisy p95s

REQUESTS = "sum by (tenant) (increase(powerx_plugin_requests_total{selector}[20s]))"
ERRORS = "sum by (tenant) (increase(powerx_plugin_errors_total{selector}[20s]))"


def _tenants_by_tier(sandbox: str) -> dict[str, list[str]]:
    answer = httpx.get(f"{sandbox}/internal/plugins/crm-sync/tenants", timeout=10)
    tiers: dict[str, list[str]] = {}
    for tenant in answer.json()["tenants"]:
        tiers.setdefault(tenant["labels"]["tier"], []).append(tenant["id"])
    return tiers


@pytest.fixture(scope="module")
def case_b(bad_version_scraped: ScrapedSandbox) -> dict:
    """Three bronze and two gold tenants upgraded to 2.5.0 through the sandbox's HTTP API; the
    interval [start, end) every test compares begins a second after the last upgrade."""
    sandbox = bad_version_scraped.sandbox
    tiers = _tenants_by_tier(sandbox)
    bronze, gold = tiers["bronze"][:3], tiers["gold"][:2]
    with httpx.Client(base_url=sandbox, timeout=10) as client:
        for number, tenant in enumerate(bronze + gold):
            answer = client.post(
                tenant_path(tenant, "upgrade"), json=upgrade_body("2.5.0", f"k-{number}")
            )
            assert answer.json()["operation"]["status"] == "succeeded", answer.text
    start = math.ceil(time.time()) + 1.0
    return {
        "bronze": bronze,
        "gold": gold,
        "untouched": tiers["silver"],
        "start": start,
        "end": start + WINDOW,
    }


def _monitoring(sandbox: str, start: float, end: float) -> dict[str, dict]:
    body = {
        "plugin": "crm-sync",
        "start": iso(datetime.fromtimestamp(start, UTC)),
        "end": iso(datetime.fromtimestamp(end, UTC)),
        "metrics": ["requests", "errors", "latency_p95_ms", "error_rate"],
    }
    answer = httpx.post(f"{sandbox}/internal/monitoring/query", json=body, timeout=10)
    answer.raise_for_status()
    return answer.json()["tenants"]


def _wait_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def test_prometheus_scrapes_the_sandbox_and_reads_a_series_per_tenant_and_version(
    bad_version_scraped, case_b
):
    wait_for_scrape(bad_version_scraped.prometheus, time.time())
    [target] = target_health(bad_version_scraped.prometheus)
    assert target["health"] == "up" and target["lastError"] == ""
    assert target["scrapeUrl"] == f"{bad_version_scraped.sandbox}/metrics"
    now = time.time()
    versions = {
        item["metric"]["version"]: int(item["value"][1])
        for item in bad_version_scraped.query(
            "count by (version) (powerx_plugin_requests_total)", now
        )
    }
    assert versions == {"2.3.1": 61, "2.5.0": 5}  # the upgraded five keep their 2.3.1 series
    buckets = bad_version_scraped.query(
        'count(powerx_plugin_request_duration_seconds_bucket{le="+Inf"})', now
    )
    assert int(buckets[0]["value"][1]) == 66


def test_promtool_finds_the_exposition_well_formed(prometheus_binary, bad_version_scraped):
    promtool = prometheus_binary.parent / "promtool"
    if not promtool.exists():
        promtool = shutil.which("promtool")
    assert promtool, f"no promtool beside {prometheus_binary} or on PATH"
    text = httpx.get(f"{bad_version_scraped.sandbox}/metrics", timeout=10).text
    done = subprocess.run(
        [str(promtool), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_promql_increase_agrees_with_the_monitoring_query_for_every_tenant(
    bad_version_scraped, case_b
):
    start, end = case_b["start"], case_b["end"]
    _wait_until(end)
    requests = bad_version_scraped.by_tenant(REQUESTS.format(selector=""), end)
    errors = bad_version_scraped.by_tenant(ERRORS.format(selector=""), end)
    expected = _monitoring(bad_version_scraped.sandbox, start, end)
    assert set(requests) == set(expected) and len(expected) == 61
    # increase() extrapolates well only from regular scrapes: say so when the machine missed some
    scrapes = bad_version_scraped.query("count_over_time(up[20s])", end)[0]["value"][1]
    for tenant, values in expected.items():
        allowed = max(REQUESTS_FLOOR, REQUESTS_TOLERANCE * values["requests"])
        assert abs(requests[tenant] - values["requests"]) <= allowed, (
            f"{tenant}: PromQL {requests[tenant]:.1f} vs sandbox {values['requests']} requests "
            f"({scrapes} scrapes in the 20 s window, 20 expected)"
        )
        assert abs(errors[tenant] - values["errors"]) <= ERRORS_TOLERANCE, (
            tenant,
            errors[tenant],
            values,
        )


def test_bronze_tenants_on_2_5_0_fail_about_nine_percent_through_promql(
    bad_version_scraped, case_b
):
    end = case_b["end"]
    _wait_until(end)
    selector = '{version="2.5.0"}'
    rates = bad_version_scraped.by_tenant(
        f"{ERRORS.format(selector=selector)} / {REQUESTS.format(selector=selector)}", end
    )
    assert set(rates) == set(case_b["bronze"] + case_b["gold"])
    expected = _monitoring(bad_version_scraped.sandbox, case_b["start"], end)
    for tenant in case_b["bronze"]:
        assert 0.076 <= rates[tenant] <= 0.104, (tenant, rates[tenant])  # 9 % +- bounded noise
        assert rates[tenant] == pytest.approx(expected[tenant]["error_rate"], abs=0.006)
    for tenant in case_b["gold"]:
        assert rates[tenant] < 0.02, (tenant, rates[tenant])  # 1.2 %: healthy


def test_histogram_quantile_gives_about_the_simulated_p95(bad_version_scraped, case_b):
    end = case_b["end"]
    _wait_until(end)
    p95 = bad_version_scraped.by_tenant(
        "1000 * histogram_quantile(0.95, sum by (tenant, le) "
        "(increase(powerx_plugin_request_duration_seconds_bucket[20s])))",
        end,
    )
    expected = _monitoring(bad_version_scraped.sandbox, case_b["start"], end)
    for tenant, values in expected.items():
        assert p95[tenant] == pytest.approx(values["latency_p95_ms"], rel=P95_TOLERANCE), tenant


def test_a_silenced_tenant_goes_stale_in_prometheus_and_the_target_stays_up(
    bad_version_scraped, case_b
):
    crashed, quiet = case_b["bronze"][0], case_b["untouched"][0]
    faults = [
        # a crashed version emits nothing: only while the tenant runs 2.5.0 (`quiet` does not)
        {"type": "metrics_gap", "version": "2.5.0", "tenants": [crashed, quiet], "after": "0s",
         "duration": "1h"},
        {"type": "metrics_gap", "tenants": [quiet], "after": "0s", "duration": "1h"},
    ]  # fmt: skip
    answer = httpx.post(
        f"{bad_version_scraped.sandbox}/sandbox/faults", json={"faults": faults}, timeout=10
    )
    assert answer.status_code == 201, answer.text
    # the first scrape after the faults lacks both: Prometheus marks their series stale then
    wait_for_scrape(bad_version_scraped.prometheus, time.time())
    moment = time.time()
    present = bad_version_scraped.by_tenant(
        "count by (tenant) (powerx_plugin_requests_total)", moment
    )
    assert crashed not in present and quiet not in present
    assert len(present) == 59  # everyone else, including the other upgraded tenants
    [up] = bad_version_scraped.query("up", moment)
    assert up["value"][1] == "1"
