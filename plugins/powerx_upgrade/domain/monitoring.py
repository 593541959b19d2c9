"""Where the gate reads its metrics: provider resolution, the metric catalogue, PromQL templates.

Pure: the provider's catalogue (the metric names a check may use), the default PromQL of the
Prometheus provider, placeholder checks and expansion. Running the queries is the hooks' job.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from powerx_upgrade.domain.measurement import KNOWN_METRICS
from powerx_upgrade.domain.models import MonitoringSpec, Policy
from powerx_upgrade.domain.problems import Severity

Finding = tuple[tuple[str | int, ...], str, Severity]

PLACEHOLDERS = ("tenant", "plugin", "version", "step")
"""What a PromQL template may contain: `{tenant}` (a regex alternation of the tenant ids, for
`tenant=~"{tenant}"`), `{plugin}`, `{version}` (the run's target version), `{step}` (the step as
a PromQL duration, e.g. `10s`)."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""`{name}` alone between braces: PromQL label matchers always hold an operator (`{a="b"}`), so
a bare identifier in braces can only be a placeholder."""

_SELECTOR = 'plugin="{plugin}",tenant=~"{tenant}"'
DEFAULT_QUERIES: dict[str, str] = {
    "requests": "sum by (tenant) "
    f"(increase(powerx_plugin_requests_total{{{_SELECTOR}}}[{{step}}]))",
    "errors": f"sum by (tenant) (increase(powerx_plugin_errors_total{{{_SELECTOR}}}[{{step}}]))",
    "latency_p95_ms": "1000 * histogram_quantile(0.95, sum by (tenant, le) "
    f"(increase(powerx_plugin_request_duration_seconds_bucket{{{_SELECTOR}}}[{{step}}])))",
}
"""The sandbox's exposition (docs/platform-contract.md): counters and a latency histogram
labelled tenant, plugin, version. Per step: the increase of each counter, the p95 in ms."""

_REGEX_SPECIAL = re.compile(r"[.^$*+?()\[\]{}|\\]")

RESERVED_NAMES = frozenset({*KNOWN_METRICS, "samples"})


def provider_kind(name: str | None) -> str:
    """A deployment's provider name -> the provider a plan uses: `prometheus` is the Prometheus
    provider; every other name (powerx, a metric-name mapping such as prometheus-http) is the
    PowerX monitoring service with that mapping's names."""
    return "prometheus" if name == "prometheus" else "powerx"


def resolve_monitoring(
    policy: MonitoringSpec | None, plan: MonitoringSpec | None, default_provider: str | None
) -> MonitoringSpec:
    """The policy's monitoring block, then the plan's, key by key (queries and metrics merge by
    name); the provider defaults to the deployment's."""
    fields: dict[str, Any] = {}
    for spec in (policy, plan):
        if spec is None:
            continue
        for name in spec.model_fields_set:
            value = getattr(spec, name)
            if name in ("queries", "metrics"):
                fields[name] = {**fields.get(name, {}), **value}
            else:
                fields[name] = value
    if fields.get("provider") is None:
        fields["provider"] = provider_kind(default_provider)
    return MonitoringSpec(**fields)


def catalogue(monitoring: MonitoringSpec) -> dict[str, str | None]:
    """The metrics a check may use with this provider -> their pool (None: canonical)."""
    known: dict[str, str | None] = dict.fromkeys(KNOWN_METRICS)
    if monitoring.provider == "prometheus":
        known.update({name: metric.pool for name, metric in monitoring.metrics.items()})
    return known


def pools(monitoring: MonitoringSpec) -> dict[str, str]:
    """Custom metric -> pool, for the gate (canonical metrics have their own pooling)."""
    return {name: pool for name, pool in catalogue(monitoring).items() if pool is not None}


def unknown_metric(metric: str, monitoring: MonitoringSpec) -> str | None:
    """The problem text when `metric` is not in the provider's catalogue; None when it is."""
    known = list(catalogue(monitoring))
    if metric in known:
        return None
    hint = difflib.get_close_matches(metric, known, n=1)
    did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
    custom = (
        " (custom metrics are defined under monitoring.metrics)"
        if monitoring.provider == "prometheus"
        else ""
    )
    return (
        f"unknown metric '{metric}' for provider {monitoring.provider}{did_you_mean} "
        f"(known: {', '.join(known)}){custom}"
    )


def check_checks(policy: Policy, monitoring: MonitoringSpec) -> list[Finding]:
    """Every gate check's metric against the provider's catalogue."""
    findings: list[Finding] = []
    for index, check in enumerate(policy.gate.checks):
        message = unknown_metric(check.metric, monitoring)
        if message:
            findings.append((("gate", "checks", index, "metric"), message, "error"))
    return findings


def check_monitoring(monitoring: MonitoringSpec) -> list[Finding]:
    """A monitoring block on its own: placeholders, custom metric names, provider fit. Paths are
    relative to the block."""
    findings: list[Finding] = []
    for query_name, query in monitoring.queries.items():
        findings += _check_template(("queries", query_name), query)
    for name, metric in monitoring.metrics.items():
        if name in RESERVED_NAMES:
            findings.append(
                (
                    ("metrics", name),
                    f"'{name}' is a canonical metric; change its PromQL under "
                    "monitoring.queries instead",
                    "error",
                )
            )
        findings += _check_template(("metrics", name, "query"), metric.query)
    if monitoring.provider == "powerx" and monitoring.metrics:
        findings.append(
            (
                ("metrics",),
                "custom metrics need provider prometheus (the provider here is powerx)",
                "error",
            )
        )
    if monitoring.provider == "powerx" and monitoring.queries:
        findings.append(
            (
                ("queries",),
                "queries are PromQL for provider prometheus; provider powerx ignores them",
                "warning",
            )
        )
    return findings


def _check_template(path: tuple[str | int, ...], query: str) -> list[Finding]:
    found = placeholders(query)
    unknown = [name for name in found if name not in PLACEHOLDERS]
    findings: list[Finding] = []
    for name in unknown:
        hint = difflib.get_close_matches(name, PLACEHOLDERS, n=1)
        did_you_mean = f"; did you mean '{{{hint[0]}}}'?" if hint else ""
        findings.append(
            (
                path,
                f"unknown placeholder '{{{name}}}'{did_you_mean} "
                f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})",
                "error",
            )
        )
    if "tenant" not in found:
        findings.append(
            (
                path,
                "the query has no {tenant}: it is not limited to the tenants asked "
                '(write tenant=~"{tenant}" in its selector)',
                "warning",
            )
        )
    return findings


def placeholders(query: str) -> list[str]:
    return list(dict.fromkeys(_PLACEHOLDER.findall(query)))


def expand(query: str, values: Mapping[str, str]) -> str:
    """Fill the placeholders of a PromQL template; PromQL's own braces are left alone."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), query)


def tenant_regex(tenants: Iterable[str]) -> str:
    """Tenant ids as an alternation for `tenant=~"..."`: regex-escaped, then escaped for the
    PromQL double-quoted string (backslashes and quotes)."""
    alternation = "|".join(_REGEX_SPECIAL.sub(r"\\\g<0>", t) for t in tenants)
    return alternation.replace("\\", "\\\\").replace('"', '\\"')


def promql_duration(value: timedelta) -> str:
    """A step as a PromQL duration: whole seconds as `10s`, else milliseconds."""
    ms = round(value.total_seconds() * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def queries_of(monitoring: MonitoringSpec) -> dict[str, str]:
    """Every PromQL the Prometheus provider runs: the canonical inputs (defaults overridden by
    the plan's) and the custom metrics."""
    queries = dict(DEFAULT_QUERIES)
    queries.update(monitoring.queries.items())
    queries.update({name: metric.query for name, metric in monitoring.metrics.items()})
    return queries


MAX_POINTS = 5_000_000
"""The platform contract's limit on one monitoring query: tenants x 10 s buckets it touches
(docs/platform-contract.md, `422 invalid_query` beyond it)."""

BUCKET = timedelta(seconds=10)
"""The monitoring service's bucket (the contract's default `bucket_seconds`)."""


def query_pages(
    tenants: Sequence[str],
    start: datetime,
    end: datetime,
    per_query: int,
    *,
    max_points: int = MAX_POINTS,
    bucket: timedelta = BUCKET,
) -> list[list[str]]:
    """`tenants` cut into the pages one monitoring query each asks for: at most `per_query`
    tenants, and few enough that tenants x buckets of [start, end) stays within `max_points`
    (partial buckets at both edges count). Order kept, duplicates dropped; no tenants, no page."""
    unique = list(dict.fromkeys(tenants))
    if not unique:
        return []
    span = max((end - start).total_seconds(), 0.0)
    buckets = math.ceil(span / bucket.total_seconds()) + 1
    size = max(1, min(per_query, max_points // buckets))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


def merge_answers(answers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The answers to the pages of one query as one answer: every page's tenants and `no_data`;
    the rest (plugin, interval, bucket, metrics) from the first page. An answer without a
    `tenants` object is kept as it is, so the caller's shape check still refuses it."""
    if not answers:
        return {"tenants": {}, "no_data": []}
    if len(answers) == 1:
        return dict(answers[0])
    merged: dict[str, Any] = dict(answers[0])
    tenants: dict[str, Any] = {}
    no_data: list[str] = []
    for answer in answers:
        found = answer.get("tenants")
        if not isinstance(found, dict):
            return dict(answer)
        tenants.update(found)
        no_data.extend(answer.get("no_data") or [])
    merged["tenants"] = tenants
    merged["no_data"] = no_data
    return merged
