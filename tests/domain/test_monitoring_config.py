"""The `monitoring:` block: provider resolution, the metric catalogue, PromQL placeholders."""

from __future__ import annotations

import textwrap
from datetime import timedelta

import pytest

from powerx_upgrade.domain.config import parse_config
from powerx_upgrade.domain.models import MonitoringSpec
from powerx_upgrade.domain.monitoring import (
    DEFAULT_QUERIES,
    catalogue,
    expand,
    placeholders,
    promql_duration,
    tenant_regex,
)

pytestmark = pytest.mark.unit


def parse(text: str, default_provider: str | None = None):
    return parse_config(
        [("upgrade_policies.yaml", textwrap.dedent(text).lstrip("\n"))], default_provider
    )


def policy(check_metric: str = "error_rate", monitoring: str = "") -> str:
    return f"""
    version: 1
    policies:
      std:
        batches: [{{ratio: 1.0, bake: 10m}}]
        gate:
          checks:
            - {{metric: {check_metric}, op: "<=", limit: 0.05}}
    {monitoring}
    """


PLAN = """
    plans:
      crm:
        plugin: crm-sync
        policy: std
"""


def test_a_misspelt_metric_is_a_located_error_with_a_did_you_mean():
    result = parse(policy("eror_rate") + PLAN)
    [problem] = [p for p in result.errors if p.policy_id == "std"]
    assert problem.line == 7  # the check's line
    assert problem.path == "policies.std.gate.checks[0].metric"
    assert problem.message == (
        "unknown metric 'eror_rate' for provider powerx; did you mean 'error_rate'? "
        "(known: error_rate, latency_p95_ms, requests, errors)"
    )
    assert result.plans == {}  # the plan on the broken policy is left out


def test_a_custom_metric_is_known_to_prometheus_and_pooled_as_written():
    result = parse(
        policy(
            "memory_mb",
            """    monitoring:
          provider: prometheus
          metrics:
            memory_mb: {query: 'max by (tenant) (mem{tenant=~"{tenant}"})', pool: max}
    """,
        )
        + PLAN
    )
    assert result.problems == []
    plan = result.plans["crm"]
    assert plan.monitoring.provider == "prometheus"
    assert plan.monitoring.connection == "powerx_prometheus"
    assert catalogue(plan.monitoring)["memory_mb"] == "max"


def test_a_custom_metric_with_the_powerx_provider_is_refused():
    result = parse(
        policy(
            "memory_mb",
            """    monitoring:
          metrics:
            memory_mb: {query: 'max by (tenant) (mem{tenant=~"{tenant}"})'}
    """,
        )
        + PLAN
    )
    messages = {(p.path, p.message) for p in result.errors}
    assert (
        "policies.std.monitoring.metrics",
        "custom metrics need provider prometheus (the provider here is powerx)",
    ) in messages
    assert any("unknown metric 'memory_mb' for provider powerx" in m for _, m in messages)


def test_the_deployment_provider_is_the_default_and_a_plan_can_override_it():
    text = policy() + PLAN + "        monitoring: {provider: powerx}\n"
    assert parse(text, "prometheus").plans["crm"].monitoring.provider == "powerx"
    assert parse(policy() + PLAN, "prometheus").plans["crm"].monitoring.provider == "prometheus"
    # a mapping name such as prometheus-http is the PowerX service under other metric names
    assert parse(policy() + PLAN, "prometheus-http").plans["crm"].monitoring.provider == "powerx"


def test_the_plan_block_merges_onto_the_policy_block_key_by_key():
    result = parse(
        policy(
            monitoring="""    monitoring:
          provider: prometheus
          step: 5s
          queries: {requests: 'sum by (tenant) (rate(a{tenant=~"{tenant}"}[{step}]))'}
    """
        )
        + PLAN
        + """        monitoring:
          conn_id: team_prom
          queries: {errors: 'sum by (tenant) (rate(b{tenant=~"{tenant}"}[{step}]))'}
"""
    )
    assert result.problems == []
    merged = result.plans["crm"].monitoring
    assert merged.step == timedelta(seconds=5)
    assert merged.connection == "team_prom"
    assert set(merged.queries) == {"requests", "errors"}


def test_an_unknown_placeholder_is_a_located_error():
    text = (
        policy()
        + PLAN
        + """        monitoring:
          provider: prometheus
          queries:
            errors: 'sum by (tenant) (increase(e{tenant=~"{tenant}",plugin="{plugn}"}[{step}]))'
"""
    )
    result = parse(text)
    [problem] = result.errors
    assert problem.path == "plans.crm.monitoring.queries.errors"
    lines = textwrap.dedent(text).lstrip("\n").splitlines()
    assert lines[problem.line - 1].strip().startswith("errors: 'sum by (tenant)")
    assert problem.message.startswith("unknown placeholder '{plugn}'; did you mean '{plugin}'?")
    assert "crm" in result.invalid_plans


def test_a_query_without_tenant_is_a_warning_and_a_canonical_name_cannot_be_custom():
    result = parse(
        policy()
        + PLAN
        + """        monitoring:
          provider: prometheus
          metrics:
            errors: {query: 'sum(x)'}
"""
    )
    assert [p.message for p in result.errors] == [
        "'errors' is a canonical metric; change its PromQL under monitoring.queries instead"
    ]
    assert any("has no {tenant}" in p.message for p in result.warnings)


def test_a_check_added_by_overrides_is_checked_against_the_plan_provider():
    result = parse(
        policy()
        + PLAN
        + """        overrides:
          gate: {checks: [{metric: latency_p59_ms, op: "<=", limit: 200}]}
"""
    )
    [problem] = result.errors
    assert problem.path == "plans.crm.overrides.gate.checks[0].metric"
    assert "did you mean 'latency_p95_ms'?" in problem.message


def test_placeholders_expand_and_promql_braces_stay():
    query = DEFAULT_QUERIES["requests"]
    assert placeholders(query) == ["plugin", "tenant", "step"]
    text = expand(query, {"plugin": "crm", "tenant": tenant_regex(["t-1", "a.b"]), "step": "10s"})
    assert text == (
        'sum by (tenant) (increase(powerx_plugin_requests_total{plugin="crm",'
        'tenant=~"t-1|a\\\\.b"}[10s]))'
    )
    assert promql_duration(timedelta(seconds=10)) == "10s"
    assert promql_duration(timedelta(milliseconds=1500)) == "1500ms"


def test_a_step_under_a_second_is_refused():
    with pytest.raises(ValueError, match="at least 1s"):
        MonitoringSpec(step="500ms")
