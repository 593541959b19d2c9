"""Reports of real runs: `airflow dags test` against the sandbox writes them under
`$POWERX_UPGRADE_REPORTS/<plan>/<run>/`, and their figures match the ledger and the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.reporting.store import run_segment
from tests.airflow_harness import dags_test
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e

SCENARIOS = CONFIG_DIR / "scenarios"
PLAN = "crm-sync-e2e"
DAG = f"plugin_upgrade__{PLAN}"


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    with (
        running_sandbox(SCENARIOS / f"{request.param}.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def run_dag(airflow_home: Path, client: httpx.Client, tmp_path: Path, conf: dict):
    reports = tmp_path / "reports"
    result = dags_test(
        airflow_home,
        DAG,
        sandbox_url=str(client.base_url).rstrip("/"),
        ledger_file=tmp_path / "ledger.db",
        conf=conf,
        extra_env={"POWERX_UPGRADE_REPORTS": str(reports)},
    )
    return result, Ledger(result.ledger_url), reports


def sandbox_tenants(client: httpx.Client) -> dict[str, dict]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return {t["id"]: t for t in tenants}


def check_case_b_reports(book: Ledger, reports: Path, sandbox: httpx.Client) -> None:
    """Case B leaves all four files, and their figures match the ledger and the sandbox.

    Called by tests/orchestration/test_rollout_e2e.py's case B run (one run for both: the suite
    must stay under 20 minutes)."""
    (record,) = book.runs()
    folder = reports / PLAN / run_segment(record.run_id)
    assert folder.is_dir(), f"no report folder {folder} (see the dags-test log beside the ledger)"
    assert sorted(p.name for p in folder.iterdir()) == [
        "postmortem.md",
        "report.html",
        "report.json",
        "report.md",
    ]
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["schema_version"] == 1
    assert report["outcome"] == record.outcome == "rolled_back"
    assert report["run"]["run_id"] == record.run_id and report["plan"]["id"] == PLAN
    assert report["versions"]["from"] == "2.3.1" and report["versions"]["to"] == "2.5.0"
    assert report["trigger"]["reason"] == "case B"  # the caller's run conf
    assert report["links"]["airflow_run"] == (
        f"http://localhost:8080/dags/{DAG}/runs/{quote(record.run_id, safe='')}"
    )

    # verdicts per batch, as the ledger has them
    finals = {g.batch_index: g.phase for g in book.gate_evaluations(record.run_id, final_only=True)}
    assert {
        b["index"]: b["gate"]["verdict"] for b in report["batches"] if b["gate"]["verdict"]
    } == (finals)
    failing = max(finals)
    assert report["batches"][failing - 1]["status"] == "failed"
    measured = [
        m
        for m in report["batches"][failing - 1]["gate"]["measurements"]
        if m["metric"] == "error_rate"
    ]
    assert measured[0]["value"] > 0.05 and measured[0]["threshold"] == 0.05
    run_batches = [b for b in report["batches"] if b["status"] != "not_run"]
    assert report["rates"]["batch_success"]["numerator"] == failing - 1
    assert report["rates"]["batch_success"]["denominator"] == len(run_batches) == failing

    # tenants rolled back: the ledger's rollback actions, and the sandbox has them back
    rolled = {
        a.tenant_id for a in book.actions(record.run_id, kind="rollback") if a.state == "succeeded"
    }
    rollback = report["rollback"]
    assert {t["tenant"] for t in rollback["tenants"]} == rolled
    assert all(t["state"] == "succeeded" and t["verified"] is True for t in rollback["tenants"])
    after = sandbox_tenants(sandbox)
    assert all(after[t["tenant"]]["version"] == t["from_version"] for t in rollback["tenants"])
    # durations: as the verify step measured them, within the 3-minute floor
    verification = record.detail["rollback_verification"]
    assert rollback["duration_ms"] == verification["duration_ms"] < 180_000
    assert report["metrics"]["version.rollback.duration_ms"] == verification["duration_ms"]
    assert rollback["within_deadline"] is True
    for b in run_batches:
        assert b["duration_minutes"] is not None and b["duration_minutes"] > 0
        assert (
            report["metrics"]["version.upgrade.batch_duration_minutes"][str(b["index"])]
            == (b["duration_minutes"])
        )

    # upgrade success: no selected tenant is on 2.5.0 any more, the sandbox agrees
    selected = [t for b in record.batches for t in b["tenants"]]
    on_target = sum(1 for t in selected if after[t]["version"] == "2.5.0")
    assert report["rates"]["upgrade_success"]["numerator"] == on_target == 0
    assert report["rates"]["upgrade_success"]["denominator"] == len(selected)

    # the alert for the failing batch is in the report, as the sandbox got it
    rules = {(a["rule"], a["batch"]) for a in report["alerts"]}
    assert ("grey_error_rate", failing) in rules
    assert report["metrics"]["version.upgrade.alert_total"] == len(report["alerts"])

    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "<script" not in html
    postmortem = (folder / "postmortem.md").read_text(encoding="utf-8")
    assert f"**gate, batch {failing}**" in postmortem and "## Follow-up" in postmortem


@pytest.mark.parametrize("sandbox", ["happy"], indirect=True)
def test_a_run_refused_in_preflight_still_leaves_a_report(airflow_home, sandbox, tmp_path):
    result, book, reports = run_dag(
        airflow_home, sandbox, tmp_path, {"target_version": "2.4.0", "artifact_sha256": "xyz"}
    )
    assert result.returncode != 0
    assert book.runs() == []  # refused before the ledger knew the run
    (folder,) = (reports / PLAN).iterdir()
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["postmortem.md", "report.html", "report.json", "report.md"], result.tail()
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["outcome"] == "failed" and report["run"]["in_ledger"] is False
    assert "preflight.validate refused the run" in report["run"]["error"]
    assert report["batches"] == []
