"""A gate you can trust, on whole runs (`airflow dags test` against the sandbox over HTTP):
silence from upgraded tenants is evidence, a refused monitoring query stops the run at once with
the monitoring_error alert, and short bursts of 5xx are retried, counted and survived."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.config import load_config
from powerx_upgrade.domain.planner import plan_batches
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.alerts import alerts_of
from powerx_upgrade.rollout.preflight import tenants_of
from tests.airflow_harness import E2E_CONFIG, E2E_SHA256, dags_test
from tests.conftest import CONFIG_DIR
from tests.signing import signed

pytestmark = pytest.mark.e2e

SHIPPED = CONFIG_DIR / "scenarios"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "scenarios"


def run(home: Path, url: str, tmp_path: Path, dag: str, version: str) -> tuple[int, Ledger, str]:
    result = dags_test(
        home,
        dag,
        sandbox_url=url,
        ledger_file=tmp_path / "ledger.db",
        conf=signed({"target_version": version}, E2E_SHA256),
        extra_env={"POWERX_UPGRADE_REPORTS": str(tmp_path / "reports")},
    )
    book = Ledger(result.ledger_url)
    runs = book.runs()
    assert runs, result.tail()
    return result.returncode, book, runs[-1].run_id


def fleet(client: httpx.Client) -> dict[str, dict]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return {t["id"]: t for t in tenants}


def batches(client: httpx.Client, plan_id: str) -> list[list[str]]:
    plan = load_config([E2E_CONFIG]).plans[plan_id]
    found = client.get("/internal/plugins/crm-sync/tenants").json()["tenants"]
    return [list(b.tenants) for b in plan_batches(plan, tenants_of(found)).batches]


def test_a_version_that_silences_tenants_never_promotes_and_every_tenant_goes_back(
    airflow_home, tmp_path
):
    with (
        running_sandbox(SHIPPED / "silent-crash.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        first, _ = batches(client, "crm-sync-silent")
        labels = {t: v["labels"] for t, v in fleet(client).items()}
        code, book, run_id = run(
            airflow_home, url, tmp_path, "plugin_upgrade__crm-sync-silent", "2.5.0"
        )
        after = fleet(client)

    silent = sorted(t for t in first if labels[t]["tier"] == "silver")
    assert silent, "the first batch must hold silver tenants for this test to mean anything"
    verdicts = book.gate_evaluations(run_id, final_only=True)
    assert [v.phase for v in verdicts] == ["fail"]  # batch 1: never promoted
    silent_rows = [
        m
        for m in verdicts[0].measurements
        if m.get("tenant") in silent and m.get("phase") == "fail"
    ]
    assert {m["tenant"] for m in silent_rows} == set(silent)
    assert all("silent since its upgrade" in m["detail"] for m in silent_rows)
    # the healthy rest alone would have passed: the pooled error rate held
    pooled = next(m for m in verdicts[0].measurements if m["metric"] == "error_rate")
    assert pooled["phase"] == "pass"
    assert code != 0 and book.get_run(run_id).outcome == "rolled_back"
    upgraded = {a.tenant_id for a in book.actions(run_id, kind="upgrade") if a.state == "succeeded"}
    assert upgraded == set(first)
    assert {t: after[t]["version"] for t in upgraded} == dict.fromkeys(upgraded, "2.3.1")


def test_a_refused_monitoring_query_stops_the_run_at_the_first_gate_with_an_alert(
    airflow_home, tmp_path
):
    with (
        running_sandbox(FIXTURES / "monitoring-401.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        code, book, run_id = run(
            airflow_home, url, tmp_path, "plugin_upgrade__crm-sync-e2e", "2.4.0"
        )
        notified = client.get("/sandbox/notifications").json()["notifications"]
        after = fleet(client)

    verdicts = book.gate_evaluations(run_id, final_only=True)
    assert [(v.batch_index, v.phase) for v in verdicts] == [(1, "error")]
    assert "401" in verdicts[0].reason
    assert not book.actions(run_id, kind="upgrade", batch_index=2)  # batch 2 never started
    raised = Counter((a["rule"], a["batch"]) for a in alerts_of(book, run_id))
    assert raised[("monitoring_error", 1)] == 1
    alert = next(n for n in notified if n["context"].get("rule") == "monitoring_error")
    assert alert["severity"] == "critical" and "401" in alert["message"]
    audited = [r for r in book.audit_records(run_id) if r.event == "batch.gate.monitoring_error"]
    assert audited and all(r.payload["details"]["kind"] == "refused" for r in audited)
    assert code != 0 and book.get_run(run_id).outcome == "rolled_back"  # e2e error.action
    upgraded = {a.tenant_id for a in book.actions(run_id, kind="upgrade") if a.state == "succeeded"}
    assert upgraded and all(after[t]["version"] == "2.3.1" for t in upgraded)


def test_short_bursts_of_monitoring_5xx_are_retried_counted_and_the_run_still_promotes(
    airflow_home, tmp_path
):
    with (
        running_sandbox(FIXTURES / "monitoring-503-bursts.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        code, book, run_id = run(
            airflow_home, url, tmp_path, "plugin_upgrade__crm-sync-e2e", "2.4.0"
        )
        after = fleet(client)

    assert code == 0, book.get_run(run_id)
    assert book.get_run(run_id).outcome == "promoted"
    assert [v.phase for v in book.gate_evaluations(run_id, final_only=True)] == ["pass", "pass"]
    audited = [r for r in book.audit_records(run_id) if r.event == "batch.gate.monitoring_error"]
    assert audited, "the bursts hit no gate poke: the test proves nothing"
    assert {r.payload["details"]["kind"] for r in audited} == {"unavailable"}
    assert "monitoring_error" not in {a["rule"] for a in alerts_of(book, run_id)}
    selected = [t for t, v in after.items() if v["labels"].get("internal") != "true"]
    assert all(after[t]["version"] == "2.4.0" for t in selected)
