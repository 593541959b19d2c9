"""The metric engine: deterministic for a seed, bounded noise, version-aware, gaps and delays."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powerx_dev.sandbox.faults import ErrorRateFault, MetricsGapFault, SignalDelayFault
from powerx_dev.sandbox.metrics import MetricsEngine, QueryTooLarge, TenantSeries, WindowedFault
from powerx_dev.sandbox.scenario import parse_scenario

pytestmark = pytest.mark.unit

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW = T0 + 86_400
INF = float("inf")

SCENARIO = """\
seed: {seed}
plugin: crm-sync
tenants: {{count: 10, version: 2.3.1, labels: {{tier: {{gold: 0.5, bronze: 0.5}}}}}}
traffic: {{rps: 20, error_rate: 0.01, latency_p95_ms: 120}}
versions:
  2.4.0: {{error_rate: 0.012, latency_p95_ms: 125}}
  2.5.0: {{error_rate: 0.09, latency_p95_ms: 130}}
"""


def engine(seed: int = 42) -> MetricsEngine:
    return MetricsEngine(parse_scenario(SCENARIO.format(seed=seed)))


def series(tenant: str = "t-0001", *changes: tuple[float, str], labels=None) -> TenantSeries:
    return TenantSeries(tenant, labels or {"tier": "gold"}, ((-INF, "2.3.1"), *changes))


def test_the_same_seed_gives_the_same_numbers_and_another_seed_other_numbers():
    tenants = [series(f"t-{n:04d}") for n in range(1, 11)]
    first = engine(42).query(tenants, T0, T0 + 600, NOW, [])
    assert first == engine(42).query(tenants, T0, T0 + 600, NOW, [])
    assert first != engine(43).query(tenants, T0, T0 + 600, NOW, [])
    assert len({values["requests"] for values in first.values()}) > 1  # tenants differ in size


def test_ten_minutes_hold_sixty_samples_and_plausible_values():
    values = engine().tenant_values(series(), T0, T0 + 600, NOW, [])
    assert values["samples"] == 60
    assert 0.7 * 20 * 600 <= values["requests"] <= 1.3 * 20 * 600
    assert 0.0085 <= values["error_rate"] <= 0.0115
    assert 114 <= values["latency_p95_ms"] <= 126


def test_a_tenant_follows_the_version_installed_during_each_part_of_the_interval():
    metrics = engine()
    upgraded = series("t-0001", (T0 + 300, "2.5.0"))
    before = metrics.tenant_values(upgraded, T0, T0 + 300, NOW, [])
    after = metrics.tenant_values(upgraded, T0 + 300, T0 + 600, NOW, [])
    whole = metrics.tenant_values(upgraded, T0, T0 + 600, NOW, [])
    assert before["error_rate"] < 0.012 and after["error_rate"] > 0.07
    assert abs(whole["requests"] - before["requests"] - after["requests"]) <= 1
    assert abs(whole["errors"] - before["errors"] - after["errors"]) <= 1
    assert before == metrics.tenant_values(series("t-0001"), T0, T0 + 300, NOW, [])


def test_an_error_rate_fault_applies_to_its_version_labels_and_window_only():
    fault = ErrorRateFault(version="2.5.0", where={"tier": "bronze"}, value=0.5)
    windowed = [WindowedFault(fault, T0 + 100, T0 + 200)]
    metrics = engine()
    bronze = series("t-0002", (T0, "2.5.0"), labels={"tier": "bronze"})
    gold = series("t-0003", (T0, "2.5.0"), labels={"tier": "gold"})
    inside = metrics.tenant_values(bronze, T0 + 100, T0 + 200, NOW, windowed)
    outside = metrics.tenant_values(bronze, T0 + 200, T0 + 300, NOW, windowed)
    assert 0.42 <= inside["error_rate"] <= 0.58
    assert outside["error_rate"] < 0.11
    assert metrics.tenant_values(gold, T0 + 100, T0 + 200, NOW, windowed)["error_rate"] < 0.11


def test_gaps_remove_data_and_signal_delay_hides_recent_data():
    metrics = engine()
    gap = [WindowedFault(MetricsGapFault(after="0s", duration="1m"), T0 + 60, T0 + 120)]
    assert metrics.tenant_values(series(), T0 + 60, T0 + 120, NOW, gap) is None
    partly = metrics.tenant_values(series(), T0, T0 + 120, NOW, gap)
    assert partly == metrics.tenant_values(series(), T0, T0 + 60, NOW, [])
    delay = [WindowedFault(SignalDelayFault(value="30s"), -INF, INF)]
    assert metrics.tenant_values(series(), NOW - 30, NOW, NOW, delay) is None
    visible = metrics.tenant_values(series(), NOW - 60, NOW, NOW, delay)
    assert visible == metrics.tenant_values(series(), NOW - 60, NOW - 30, NOW, [])
    assert metrics.tenant_values(series(), NOW + 1, NOW + 60, NOW, []) is None


def test_a_version_bound_gap_silences_a_tenant_only_while_it_runs_that_version():
    crash = [WindowedFault(MetricsGapFault(version="2.5.0", where={"tier": "gold"}), -INF, INF)]
    metrics = engine()
    crashed = series("t-0001", (T0 + 300, "2.5.0"))
    assert metrics.tenant_values(crashed, T0 + 300, T0 + 600, NOW, crash) is None
    before = metrics.tenant_values(crashed, T0, T0 + 300, NOW, crash)
    assert before == metrics.tenant_values(series("t-0001"), T0, T0 + 300, NOW, [])
    assert metrics.tenant_values(crashed, T0, T0 + 600, NOW, crash) == before
    other_version = series("t-0001", (T0 + 300, "2.4.0"))
    assert metrics.tenant_values(other_version, T0 + 300, T0 + 600, NOW, crash) is not None
    bronze = series("t-0002", (T0 + 300, "2.5.0"), labels={"tier": "bronze"})
    assert metrics.tenant_values(bronze, T0 + 300, T0 + 600, NOW, crash) is not None


def test_a_metrics_gap_needs_a_window_or_a_version():
    with pytest.raises(ValueError, match="or a `version`"):
        MetricsGapFault()
    assert MetricsGapFault(version="2.5.0").version == "2.5.0"


def test_a_query_too_large_is_refused_before_any_work():
    with pytest.raises(QueryTooLarge, match="limit 5000000"):
        engine().check_size(10_000, T0, T0 + 86_400)
    engine().check_size(1_000, T0, T0 + 3_600)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    tenant=st.integers(1, 10),
    offset=st.floats(0, 7 * 86_400),
    length=st.floats(30, 1_800),
    split=st.floats(0.01, 0.99),
)
def test_noise_is_bounded_so_error_rates_never_cross_a_five_percent_limit(
    seed, tenant, offset, length, split
):
    """1.2 % never looks like 5 %, 9 % never looks like 5 %, over any interval of 30 s or more."""
    metrics = engine(seed)
    start = T0 + offset
    good = series(f"t-{tenant:04d}", (start - 1, "2.4.0"))
    bad = series(f"t-{tenant:04d}", (start - 1, "2.5.0"))
    good_values = metrics.tenant_values(good, start, start + length, NOW + 30 * 86_400, [])
    bad_values = metrics.tenant_values(bad, start, start + length, NOW + 30 * 86_400, [])
    slack = 1 / good_values["requests"]  # one error of rounding
    assert 0.012 * 0.85 - slack <= good_values["error_rate"] <= 0.012 * 1.15 + slack < 0.05
    assert 0.05 < 0.09 * 0.85 - slack <= bad_values["error_rate"] <= 0.09 * 1.15 + slack
    # splitting an interval anywhere changes totals by rounding only
    middle = start + length * split
    first = metrics.tenant_values(good, start, middle, NOW + 30 * 86_400, [])
    second = metrics.tenant_values(good, middle, start + length, NOW + 30 * 86_400, [])
    assert abs(first["requests"] + second["requests"] - good_values["requests"]) <= 1
