"""Whole rollouts gated through PromQL: `airflow dags test` against the sandbox, a real Prometheus
server scraping the sandbox's `/metrics` every second, the plan on the prometheus provider.

Case B fails its gate on the bronze tier's error rate as Prometheus measures it, and every
upgraded tenant ends on the old version; a good version (2.4.0) promotes. The gate's custom
metric (`request_rate`, a PromQL of the plan's own) only Prometheus can answer, and the sandbox's
own monitoring query is never called: the verdicts came from Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from powerx_upgrade.ledger import Ledger
from tests.airflow_harness import E2E_SHA256, dags_test
from tests.conftest import CONFIG_DIR
from tests.signing import signed

pytestmark = pytest.mark.e2e

DAG = "plugin_upgrade__crm-sync-prometheus"
SCENARIOS = CONFIG_DIR / "scenarios"


@pytest.fixture
def scraped(request: pytest.FixtureRequest, prometheus_binary: Path) -> Iterator[object]:
    from tests.prometheus import scraped_sandbox

    with scraped_sandbox(SCENARIOS / f"{request.param}.yaml", scrape_interval="1s") as found:
        yield found


def fleet(sandbox: str) -> dict[str, dict]:
    answer = httpx.get(f"{sandbox}/sandbox/tenants", params={"plugin": "crm-sync"}, timeout=10)
    return {t["id"]: t for t in answer.json()["tenants"]}


def run(airflow_home: Path, scraped, tmp_path: Path, version: str) -> tuple[int, Ledger, str]:
    result = dags_test(
        airflow_home,
        DAG,
        sandbox_url=scraped.sandbox,
        ledger_file=tmp_path / "ledger.db",
        conf=signed({"target_version": version, "reason": "prometheus e2e"}, E2E_SHA256),
        extra_env={
            "AIRFLOW_CONN_POWERX_PROMETHEUS": scraped.prometheus,
            "POWERX_UPGRADE_REPORTS": str(tmp_path / "reports"),
        },
    )
    book = Ledger(result.ledger_url)
    runs = book.runs()
    assert runs, f"the DAG run left no ledger record:\n{result.tail()}"
    return result.returncode, book, runs[-1].run_id


def monitoring_queries(sandbox: str) -> list[dict]:
    events = httpx.get(f"{sandbox}/sandbox/events", params={"limit": 5000}, timeout=10).json()
    return [e for e in events["events"] if "monitoring/query" in str(e.get("path", ""))]


def measured(gate, metric: str) -> list[dict]:
    return [m for m in gate.measurements if m["metric"] == metric]


@pytest.mark.parametrize("scraped", ["bad-version"], indirect=True)
def test_case_b_fails_its_gate_through_promql_and_every_upgraded_tenant_rolls_back(
    airflow_home, scraped, tmp_path
):
    before = fleet(scraped.sandbox)
    code, book, run_id = run(airflow_home, scraped, tmp_path, "2.5.0")
    after = fleet(scraped.sandbox)
    record = book.get_run(run_id)
    assert record.outcome == "rolled_back", record.detail
    assert code != 0
    final = {g.batch_index: g for g in book.gate_evaluations(run_id, final_only=True)}
    assert final[1].phase == "pass", final[1].reason
    assert final[2].phase == "fail", final[2].reason
    [error_rate] = measured(final[2], "error_rate")
    assert error_rate["value"] > 0.05 and error_rate["threshold"] == 0.05
    assert error_rate["samples"] >= 3
    [rate] = measured(final[1], "request_rate")  # the plan's own PromQL, pooled by mean
    assert rate["value"] > 0
    assert any(before[t]["labels"]["tier"] == "bronze" for t in record.batches[1]["tenants"])
    upgraded = {a.tenant_id for a in book.actions(run_id, kind="upgrade") if a.state == "succeeded"}
    assert len(upgraded) == 60
    for tenant in upgraded:
        assert after[tenant]["version"] == before[tenant]["version"] == "2.3.1"
    assert monitoring_queries(scraped.sandbox) == []  # every figure came from Prometheus


@pytest.mark.parametrize("scraped", ["happy"], indirect=True)
def test_a_good_version_promotes_through_promql(airflow_home, scraped, tmp_path):
    code, book, run_id = run(airflow_home, scraped, tmp_path, "2.4.0")
    record = book.get_run(run_id)
    assert record.outcome == "promoted", record.detail
    assert code == 0
    final = {g.batch_index: g for g in book.gate_evaluations(run_id, final_only=True)}
    assert {k: g.phase for k, g in final.items()} == {1: "pass", 2: "pass"}
    latency = measured(final[2], "latency_p95_ms")
    assert len(latency) == 30 and all(m["threshold"] is not None for m in latency)
    after = fleet(scraped.sandbox)
    assert all(after[t]["version"] == "2.4.0" for b in record.batches for t in b["tenants"])
    assert monitoring_queries(scraped.sandbox) == []
