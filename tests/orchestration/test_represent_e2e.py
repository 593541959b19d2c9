"""Case B with a representative canary, run whole by `airflow dags test` against the sandbox:
batch 1 holds a bronze tenant, so the bad version is caught at batch 1 and no tenant beyond the
first batch ever runs it; the report's exposure figures are the ledger's. (Without `represent`
the same order reaches bronze only in the last batch: test_rollout_e2e.py's case B.)"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.domain.exposure import exposure
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.reporting.store import run_segment
from tests.airflow_harness import E2E_SHA256, dags_test
from tests.conftest import CONFIG_DIR
from tests.orchestration.test_alerts_e2e import StatsdSink
from tests.signing import signed

pytestmark = pytest.mark.e2e

PLAN = "crm-sync-represent"
DAG = f"plugin_upgrade__{PLAN}"


@pytest.fixture
def statsd() -> Iterator[StatsdSink]:
    sink = StatsdSink()
    yield sink
    sink.close()


def test_representative_canary_catches_case_b_at_batch_1_with_only_its_tenants_exposed(
    airflow_home, tmp_path, statsd
):
    reports = tmp_path / "reports"
    with (
        running_sandbox(CONFIG_DIR / "scenarios" / "bad-version.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        result = dags_test(
            airflow_home,
            DAG,
            sandbox_url=url,
            ledger_file=tmp_path / "ledger.db",
            conf=signed({"target_version": "2.5.0", "reason": "case B, represented"}, E2E_SHA256),
            extra_env={"POWERX_UPGRADE_REPORTS": str(reports), **statsd.env("powerx")},
        )
        fleet = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
        audit = client.get("/sandbox/audit").json()["records"]
    book = Ledger(result.ledger_url)
    (record,) = book.runs()
    run_id = record.run_id
    assert record.outcome == "rolled_back", result.tail()
    assert result.returncode != 0

    first = record.batches[0]["tenants"]
    tiers = {t["id"]: t["labels"]["tier"] for t in fleet}
    assert len(first) == 6 and {tiers[t] for t in first} == {"gold", "silver", "bronze"}
    verdicts = book.gate_evaluations(run_id, final_only=True)
    assert [(g.batch_index, g.phase) for g in verdicts] == [(1, "fail")]
    breaching = {
        m["tenant"]
        for m in verdicts[0].measurements
        if m["phase"] == "fail" and m["metric"] == "error_rate" and m.get("tenant")
    }
    assert breaching and {tiers[t] for t in breaching} == {"bronze"}
    # the verdict in words names the segment that failed, even with one tenant of it
    assert "tier=bronze" in verdicts[0].summary, verdicts[0].summary

    # No tenant beyond batch 1 ever ran 2.5.0: the platform saw no operation on any of them.
    touched = {t["id"] for t in fleet if t["operations"]}
    assert touched <= set(first)
    upgraded = {a.tenant_id for a in book.actions(run_id, kind="upgrade") if a.state == "succeeded"}
    assert upgraded and upgraded <= set(first)
    assert Counter(r["action"] for r in audit)["tenant.upgrade.succeeded"] == len(upgraded)
    assert all(t["version"] == "2.3.1" for t in fleet if t["id"] in upgraded)

    # Exposure: the ledger's (kept at finalize), the report's and a recomputation agree.
    kept = record.detail["exposure"]
    recomputed = exposure(
        book.actions(run_id), book.gate_evaluations(run_id, final_only=True), end=record.ended_at
    ).as_dict()
    assert kept == recomputed
    assert kept["detected"] and kept["detected_batch"] == 1 and kept["detected_phase"] == "fail"
    assert kept["tenants_before_detection"] == kept["tenants"] == len(upgraded) <= 6
    assert kept["batches_before_detection"] == [1]
    assert 0 < kept["tenant_minutes_before_detection"] <= kept["tenant_minutes"]
    folder = reports / PLAN / run_segment(run_id)
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["exposure"] == kept
    assert (
        report["metrics"]["version.upgrade.exposure_tenant_minutes"]
        == kept["tenant_minutes_before_detection"]
    )
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert (
        f"**{kept['tenants_before_detection']}** tenant(s), "
        f"**{kept['tenant_minutes_before_detection']}** tenant-minutes on 2.5.0 before the first "
        "failing verdict (batch 1, fail" in markdown
    )
    sent = [
        line
        for line in statsd.lines
        if line.startswith("powerx.version.upgrade.exposure_tenant_minutes")
    ]
    assert len(sent) == 1, statsd.lines
    assert sent[0].split(":")[1].startswith(str(kept["tenant_minutes_before_detection"]))
    assert f"plan={PLAN}" in sent[0] and "detected=true" in sent[0]
