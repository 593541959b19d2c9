"""A run that cannot begin (the monitoring service refuses the baseline query) stops in
preflight with the reason in its record, its audit trail and its report; no gate judges the
batches it never started (`airflow dags test` against the sandbox, ledger in SQLite).

Found by the 100,000-tenant benchmark: the baseline query was refused (422: too many points),
and the first batch's gate then judged its 1,000 never-attempted deploys as failed, decided a
rollback of nobody and reported "rolled_back"."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.reporting.store import run_segment
from tests.airflow_harness import dags_test
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e

PLAN = "crm-sync-e2e"
DAG = f"plugin_upgrade__{PLAN}"


@pytest.fixture
def sandbox() -> Iterator[httpx.Client]:
    with (
        running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def test_a_refused_baseline_query_fails_the_run_in_preflight_and_says_why(
    airflow_home, sandbox, tmp_path
):
    sandbox.post(
        "/sandbox/faults",
        json={"faults": [{"type": "http_error", "endpoint": "monitoring_query", "status": 422}]},
    ).raise_for_status()
    reports = tmp_path / "reports"
    result = dags_test(
        airflow_home,
        DAG,
        sandbox_url=str(sandbox.base_url).rstrip("/"),
        ledger_file=tmp_path / "ledger.db",
        extra_env={"POWERX_UPGRADE_REPORTS": str(reports)},
    )
    assert result.returncode != 0
    book = Ledger(result.ledger_url)
    (run,) = book.runs()
    assert run.outcome == "failed", result.tail()
    assert run.batches  # planned: the failure came after planning, at begin
    failed = run.detail["preflight_failed"]
    assert failed["step"] == "begin" and "422" in failed["error"], failed
    note = run.detail["outcome_detail"]["note"]
    assert note.startswith("preflight could not begin the run (begin): PowerXRejected"), note
    assert note.endswith("no tenant was touched")

    # No gate judged, nothing decided, nobody touched.
    assert book.gate_evaluations(run.run_id) == [], result.tail()
    assert [d for d in book.decisions(run.run_id) if d.kind in ("decide", "pause")] == []
    assert book.actions(run.run_id) == []
    tenants = sandbox.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    assert all(t["version"] == "2.3.1" and not t["operations"] for t in tenants)

    # Audited in the ledger and delivered, next to the run's end.
    ours = {r.event for r in book.audit_records(run.run_id)}
    assert {"run.preflight_failed", "run.finished"} <= ours
    assert "run.started" not in ours
    delivered = {r["action"] for r in sandbox.get("/sandbox/audit").json()["records"]}
    assert "run.preflight_failed" in delivered

    # The report says why the run failed.
    folder = reports / PLAN / run_segment(run.run_id)
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["outcome"] == "failed"
    assert report["run"]["error"].startswith("preflight could not begin the run (begin)")
    assert report["rollback"] is None or not report["rollback"].get("counts", {}).get("targets")
