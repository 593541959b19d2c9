"""The Prometheus provider: range queries built from the templates, answers folded into the
gate's shape, errors typed; the source factory and the trigger's serialisation."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.config import load_config
from powerx_upgrade.domain.gate import GateInput, TenantStats, evaluate
from powerx_upgrade.domain.models import GateSpec
from powerx_upgrade.domain.monitoring import DEFAULT_QUERIES
from powerx_upgrade.orchestration.hooks.prometheus import (
    PrometheusAsyncHook,
    PrometheusHook,
    answer_error,
    fold,
    matrix_series,
    merge_pages,
    range_requests,
)
from powerx_upgrade.orchestration.hooks.sources import monitoring_source
from powerx_upgrade.orchestration.triggers.gate import BatchGateTrigger
from powerx_upgrade.rollout.errors import PowerXRejected, PowerXUnavailable
from tests.airflow_harness import E2E_CONFIG

pytestmark = pytest.mark.unit

START = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def matrix(*series: tuple[str, list[tuple[float, str]]]) -> dict:
    return {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"tenant": tenant}, "values": [[t, v] for t, v in values]}
                for tenant, values in series
            ],
        },
    }


def test_range_requests_tile_the_interval_and_page_the_tenants():
    tenants = [f"t-{i:03d}" for i in range(5)]
    calls = range_requests(
        {"requests": DEFAULT_QUERIES["requests"]},
        plugin="crm-sync",
        version="2.5.0",
        tenants=tenants,
        start=START,
        end=START + timedelta(seconds=60),
        step=timedelta(seconds=10),
        tenants_per_query=2,
    )
    assert [name for name, _ in calls] == ["requests"] * 3
    first = calls[0][1]
    assert first["start"] == f"{(START + timedelta(seconds=10)).timestamp():.3f}"
    assert first["end"] == f"{(START + timedelta(seconds=60)).timestamp():.3f}"
    assert first["step"] == "10"
    assert first["query"] == (
        'sum by (tenant) (increase(powerx_plugin_requests_total{plugin="crm-sync",'
        'tenant=~"t-000|t-001"}[10s]))'
    )
    assert 'tenant=~"t-004"' in calls[2][1]["query"]
    # an interval shorter than one step asks nothing
    assert not range_requests(
        DEFAULT_QUERIES,
        plugin="p",
        version=None,
        tenants=tenants,
        start=START,
        end=START + timedelta(seconds=9),
        step=timedelta(seconds=10),
        tenants_per_query=200,
    )


def test_answers_fold_into_counts_samples_weighted_latency_and_pooled_custom_metrics():
    results = merge_pages(
        [
            ("requests", matrix_series("requests", matrix(("a", [(10, "100"), (20, "300")])))),
            ("requests", matrix_series("requests", matrix(("b", [(10, "50")])))),
            ("errors", matrix_series("errors", matrix(("a", [(10, "1.4"), (20, "9.2")])))),
            (
                "latency_p95_ms",
                matrix_series("latency_p95_ms", matrix(("a", [(10, "100"), (20, "NaN")]))),
            ),
            ("memory_mb", matrix_series("memory_mb", matrix(("a", [(10, "300"), (20, "380")])))),
        ]
    )
    answer = fold(results, {"memory_mb": "max"})
    assert answer == {
        "tenants": {
            "a": {
                "requests": 400,
                "errors": 11,
                "latency_p95_ms": 100.0,
                "samples": 2,
                "memory_mb": 380.0,
            },
            "b": {"requests": 50, "errors": 0, "latency_p95_ms": None, "samples": 1},
        }
    }
    results["latency_p95_ms"]["a"] = {10.0: 100.0, 20.0: 200.0}
    # weighted by the steps' requests: (100 x 100 + 200 x 300) / 400
    assert fold(results, {})["tenants"]["a"]["latency_p95_ms"] == 175.0


def test_a_custom_metric_is_pooled_across_tenants_by_the_gate():
    gate = GateSpec.model_validate(
        {"signal_delay": "0s", "checks": [{"metric": "memory_mb", "op": "<=", "limit": 350}]}
    )
    stats = {
        t: TenantStats.from_json(m)
        for t, m in {
            "a": {"requests": 10, "samples": 2, "memory_mb": 300.0},
            "b": {"requests": 10, "samples": 2, "memory_mb": 380.0},
        }.items()
    }
    data = GateInput(
        now=START + timedelta(minutes=5),
        bake_started=START,
        bake=timedelta(minutes=1),
        batch=stats,
        pools={"memory_mb": "max"},
    )
    [measured] = evaluate(gate, data).measurements
    assert (measured.value, measured.phase.value) == (380.0, "fail")
    mean = evaluate(gate, GateInput(**{**data.__dict__, "pools": {"memory_mb": "mean"}}))
    assert (mean.measurements[0].value, mean.phase.value) == (340.0, "pass")


def test_a_series_without_tenant_and_a_prometheus_error_are_configuration_errors():
    with pytest.raises(PowerXRejected, match="no tenant label"):
        matrix_series("memory_mb", {"status": "success", "data": {"resultType": "matrix",
                                    "result": [{"metric": {}, "values": [[1, "1"]]}]}})  # fmt: skip
    error = answer_error(
        400,
        {"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'},
    )
    assert isinstance(error, PowerXRejected)
    assert (error.status, error.code) == (400, "bad_data")
    assert 'HTTP 400 bad_data: parse error: unexpected "}"' in str(error)
    assert isinstance(answer_error(503, {"status": "error", "errorType": "unavailable"}),
                      PowerXUnavailable)  # fmt: skip


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_answer_is_unavailable_from_both_hooks(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_PROMETHEUS", f"http://127.0.0.1:{closed_port()}")
    args = ("crm-sync", ["t-1"], START, START + timedelta(minutes=1))
    hook = PrometheusAsyncHook(queries=DEFAULT_QUERIES)
    with pytest.raises(PowerXUnavailable, match="no answer"):
        asyncio.run(hook.query(*args))
    with pytest.raises(PowerXUnavailable, match="no answer"):
        PrometheusHook(queries=DEFAULT_QUERIES, retries=0).query(*args)


def test_the_source_follows_the_plan_provider_and_travels_as_json():
    plans = load_config([E2E_CONFIG]).plans
    prom = monitoring_source(plans["crm-sync-prometheus"], "2.5.0")
    assert prom["provider"] == "prometheus" and prom["conn_id"] == "powerx_prometheus"
    assert prom["version"] == "2.5.0" and prom["step"] == 3.0
    assert set(prom["queries"]) >= {"requests", "errors", "latency_p95_ms"}
    powerx = monitoring_source(plans["crm-sync-e2e"], "2.5.0", names={"errors": "errors"})
    assert powerx == {"provider": "powerx", "conn_id": "powerx_monitoring",
                      "names": {"errors": "errors"}, "tenants_per_query": 200}  # fmt: skip


def test_the_trigger_serialises_its_source():
    source = {"provider": "prometheus", "conn_id": "powerx_prometheus", "queries": {}, "step": 5}
    trigger = BatchGateTrigger(gate={}, watch={"plugin": "p"}, state={}, source=source)
    assert trigger.serialize() == (
        "powerx_upgrade.orchestration.triggers.gate.BatchGateTrigger",
        {
            "gate": {},
            "watch": {"plugin": "p"},
            "state": {},
            "limits": {},
            "conn_id": "powerx_monitoring",
            "names": None,
            "run_id": None,
            "source": source,
        },
    )
