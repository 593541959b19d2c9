"""Preflight stops a whole DAG run (`airflow dags test` against the sandbox, ledger in SQLite)
before any tenant is touched. A tampered artifact: the refusal audited, a critical alert sent,
the run failed with its report written (the unsigned case is the same code path, checked
against the real ledger in tests/rollout/test_verify_artifact.py). A run that cannot begin (the
monitoring service refuses the baseline query): the reason in its record, audit trail and
report, and no gate judges the batches it never started. Found by the 100,000-tenant benchmark:
its refused baseline query (422: too many points) left the first gate judging 1,000
never-attempted deploys as failed, deciding a rollback of nobody, reporting "rolled_back"."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.reporting.store import run_segment
from tests.airflow_harness import E2E_SHA256, dags_test
from tests.conftest import CONFIG_DIR
from tests.signing import TEST_KEY_ID, TEST_PRIVATE_KEY, sign

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


def test_a_signature_for_another_version_stops_the_run_before_any_tenant_is_touched(
    airflow_home, sandbox, tmp_path
):
    reports = tmp_path / "reports"
    # 2.4.0's genuine signature, replayed for 2.5.0: a tampered trigger.
    conf = {"target_version": "2.5.0", "artifact_signature": sign("2.4.0", E2E_SHA256)}
    result = dags_test(
        airflow_home,
        DAG,
        sandbox_url=str(sandbox.base_url).rstrip("/"),
        ledger_file=tmp_path / "ledger.db",
        conf=conf,
        extra_env={"POWERX_UPGRADE_REPORTS": str(reports)},
    )
    assert result.returncode != 0
    book = Ledger(result.ledger_url)
    (run,) = book.runs()
    assert run.outcome == "failed", result.tail()
    note = run.detail["outcome_detail"]["note"]
    assert note.startswith("preflight refused the artifact (mismatch)"), run.detail
    assert not run.batches  # preflight.plan never ran: the fleet was not even listed
    # Nothing was deployed, so the gate was skipped: no "no data" verdict, no decision, no
    # pause waiting for a human (on a live stack that pause would hold the run for hours).
    assert book.gate_evaluations(run.run_id) == [], result.tail()
    assert [d for d in book.decisions(run.run_id) if d.kind in ("decide", "pause")] == []

    # Nobody touched: every tenant on its old version, no operation on the platform.
    tenants = sandbox.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    assert all(t["version"] == "2.3.1" and not t["operations"] for t in tenants)
    assert book.actions(run.run_id) == []

    # The refusal is audited (ledger outbox and the audit service) and names the keys tried.
    ours = {r.event: r for r in book.audit_records(run.run_id)}
    assert {"artifact.refused", "alert.artifact_unverified", "run.finished"} <= set(ours)
    assert "artifact.verified" not in ours and "run.started" not in ours
    refusal = ours["artifact.refused"].payload["details"]
    assert refusal["code"] == "mismatch" and refusal["version"] == "2.5.0"
    assert refusal["sha256"] == E2E_SHA256 and refusal["keys_tried"] == [TEST_KEY_ID]
    delivered = {r["action"] for r in sandbox.get("/sandbox/audit").json()["records"]}
    assert {"artifact.refused", "alert.artifact_unverified"} <= delivered

    # One critical alert went out.
    alerts = [
        n
        for n in sandbox.get("/sandbox/notifications").json()["notifications"]
        if n["event"] == "plugin.version.gray.alert"
    ]
    assert [(a["severity"], a["context"]["rule"]) for a in alerts] == [
        ("critical", "artifact_unverified")
    ]

    # The report is written and lists the alert.
    folder = reports / PLAN / run_segment(run.run_id)
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["outcome"] == "failed"
    assert report["run"]["error"].startswith("preflight refused the artifact (mismatch)")
    assert "does not verify" in report["run"]["outcome_detail"]["artifact_refused"]
    assert [(a["rule"], a["severity"]) for a in report["alerts"]] == [
        ("artifact_unverified", "critical")
    ]
    assert "artifact refused (mismatch)" in result.output  # the failed task says why

    # No key material in the task logs or the reports.
    secret = [ln for ln in TEST_PRIVATE_KEY.read_text().splitlines() if "-----" not in ln]
    written = result.output + "".join(p.read_text(encoding="utf-8") for p in folder.iterdir())
    assert secret and not any(line in written for line in secret)


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
