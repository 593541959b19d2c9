"""Whole rollout DAGs run by `airflow dags test` against the sandbox over HTTP, ledger in SQLite.

Case A promotes everything (through an audit outage that loses no record); case B rolls back
when the bad tier's batch fails its gate; deploy failures within max_failed continue and beyond
it roll back. Missing data rolling back is in test_alerts_e2e.py (it also checks its alert).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.config import load_config
from powerx_upgrade.domain.planner import plan_batches
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.preflight import tenants_of
from tests.airflow_harness import E2E_CONFIG, E2E_SHA256, dags_test
from tests.conftest import CONFIG_DIR
from tests.invariants import assert_nothing_lost
from tests.reporting.test_reports_e2e import check_case_b_reports
from tests.signing import signed

pytestmark = pytest.mark.e2e

SCENARIOS = CONFIG_DIR / "scenarios"
E2E_DAG = "plugin_upgrade__crm-sync-e2e"
RESULTS: dict[Path, object] = {}
TOLERANT_DAG = "plugin_upgrade__crm-sync-tolerant"


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    scenario = getattr(request, "param", "happy")
    with (
        running_sandbox(SCENARIOS / f"{scenario}.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def versions(client: httpx.Client) -> dict[str, dict]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return {t["id"]: t for t in tenants}


def planned(client: httpx.Client, plan_id: str) -> list[list[str]]:
    """The batches the plan gives for the sandbox's fleet (what the DAG will compute)."""
    plan = load_config([E2E_CONFIG]).plans[plan_id]
    fleet = client.get("/internal/plugins/crm-sync/tenants").json()["tenants"]
    return [list(b.tenants) for b in plan_batches(plan, tenants_of(fleet)).batches]


def run(
    airflow_home: Path, client: httpx.Client, tmp_path: Path, dag_id: str = E2E_DAG, **conf
) -> tuple[int, Ledger, str]:
    if "target_version" in conf:  # signed like a release pipeline does; else the plan's default
        conf = signed(conf, E2E_SHA256)
    result = dags_test(
        airflow_home,
        dag_id,
        sandbox_url=str(client.base_url).rstrip("/"),
        ledger_file=tmp_path / "ledger.db",
        conf=conf,
        extra_env={"POWERX_UPGRADE_REPORTS": str(tmp_path / "reports")},
    )
    RESULTS[tmp_path] = result
    book = Ledger(result.ledger_url)
    runs = book.runs() if hasattr(book, "runs") else []
    assert runs, f"the DAG run left no ledger record:\n{result.tail()}"
    return result.returncode, book, runs[-1].run_id


def test_case_a_every_batch_promotes_and_no_audit_record_is_lost_in_an_outage(
    airflow_home, sandbox, tmp_path
):
    # The audit service is down for 25 s from now: records wait in the outbox. The run's first
    # flush (preflight.verify_artifact) comes 8-20 s later, its last (finalize) 35 s or more.
    sandbox.post(
        "/sandbox/faults",
        json={"faults": [{"type": "audit_outage", "after": "0s", "duration": "25s"}]},
    ).raise_for_status()
    before = versions(sandbox)
    code, book, run_id = run(
        airflow_home, sandbox, tmp_path, target_version="2.4.0", reason="case A"
    )
    after = versions(sandbox)
    record = book.get_run(run_id)
    assert record.outcome == "promoted", record.detail
    selected = [t for batch in record.batches for t in batch["tenants"]]
    assert len(selected) == 60
    assert all(after[t]["version"] == "2.4.0" for t in selected)
    assert after["t-internal-1"] == before["t-internal-1"]  # excluded: untouched
    verdicts = {g.batch_index: g.phase for g in book.gate_evaluations(run_id, final_only=True)}
    assert verdicts == {1: "pass", 2: "pass"}
    upgrades = book.actions(run_id, kind="upgrade")
    assert Counter(a.state for a in upgrades) == {"succeeded": 60}
    # Audit complete: every tenant upgrade, every verdict, run start and end, all delivered.
    audit = sandbox.get("/sandbox/audit").json()["records"]
    actions = Counter(r["action"] for r in audit)
    assert actions["tenant.upgrade.succeeded"] == 60
    assert actions["batch.gate.verdict"] == 2
    assert actions["run.started"] == 1 and actions["run.finished"] == 1
    assert book.pending_audit() == []
    ours = book.audit_records(run_id)
    assert any(r.attempts > 0 for r in ours), "the outage should have made deliveries wait"
    assert {r.audit_id for r in ours} <= {r["id"] for r in audit}
    assert code == 0
    assert_nothing_lost(book, sandbox, run_id, outcomes={"promoted"})
    # notify.on [batch_promoted, run_end, alert]: each passed batch is announced, the run's
    # start is not (its audit record is: audit is always complete)
    sent = Counter(
        n["event"] for n in sandbox.get("/sandbox/notifications").json()["notifications"]
    )
    assert sent["plugin.version.gray.batch_promoted"] == 2
    assert sent["plugin.version.gray.started"] == 0 and sent["plugin.version.gray.finished"] == 1


@pytest.mark.parametrize("sandbox", ["bad-version"], indirect=True)
def test_case_b_bad_tier_fails_its_gate_and_every_upgraded_tenant_rolls_back(
    airflow_home, sandbox, tmp_path
):
    before = versions(sandbox)
    code, book, run_id = run(
        airflow_home, sandbox, tmp_path, target_version="2.5.0", reason="case B"
    )
    after = versions(sandbox)
    record = book.get_run(run_id)
    assert record.outcome == "rolled_back", record.detail
    assert code != 0  # the DAG run ends failed, so CI and alerting see it
    final = {g.batch_index: g for g in book.gate_evaluations(run_id, final_only=True)}
    failing = max(final)
    assert final[failing].phase == "fail"
    assert all(final[k].phase == "pass" for k in final if k != failing)
    failing_tenants = record.batches[failing - 1]["tenants"]
    assert any(before[t]["labels"]["tier"] == "bronze" for t in failing_tenants)
    measured = [m for m in final[failing].measurements if m["metric"] == "error_rate"]
    assert measured and measured[0]["value"] > 0.05 and measured[0]["threshold"] == 0.05
    upgraded = {a.tenant_id for a in book.actions(run_id, kind="upgrade") if a.state == "succeeded"}
    assert upgraded
    for tenant in upgraded:  # back on the previous version AND config
        assert after[tenant]["version"] == before[tenant]["version"] == "2.3.1"
        assert after[tenant]["config_version"] == before[tenant]["config_version"]
    untouched = set(before) - upgraded
    assert all(after[t]["version"] == before[t]["version"] for t in untouched)
    assert all(not after[t]["operations"] for t in untouched)
    rollbacks = book.actions(run_id, kind="rollback")
    assert {a.tenant_id for a in rollbacks if a.state == "succeeded"} == upgraded
    audit = Counter(r["action"] for r in sandbox.get("/sandbox/audit").json()["records"])
    assert audit["tenant.rollback.succeeded"] == len(upgraded)  # one record per rollback
    verification = record.detail["rollback_verification"]
    assert verification["broken"] == [] and len(verification["verified"]) == len(upgraded)
    assert verification["duration_ms"] < 180_000
    check_verdict_sentences(book, run_id, failing, sandbox, tmp_path / "reports")
    check_case_b_reports(book, tmp_path / "reports", sandbox)
    assert_nothing_lost(book, sandbox, run_id, outcomes={"rolled_back"})


def check_verdict_sentences(
    book: Ledger, run_id: str, failing: int, client: httpx.Client, reports: Path
) -> None:
    """Case B's verdict in words (metric, value, limit, samples, batch, `tier=bronze`) in the
    ledger, the CLI table, the report headline and the alert; notify.on honoured (the plan
    lists batch_promoted, run_end and alert: no run_start, no rollback message)."""
    final = {g.batch_index: g for g in book.gate_evaluations(run_id, final_only=True)}
    sentence = final[failing].summary
    print(f"case B verdict: {sentence}\npassed: {final[1].summary}")  # for the record
    assert re.fullmatch(
        rf"error_rate \d+\.\d\d % > limit 5\.00 % over \d+ samples in batch {failing} \(rest\); "
        r"concentrated in tier=bronze: \d+\.\d % vs \d+\.\d % elsewhere",
        sentence,
    ), sentence
    assert final[failing].segment["labels"] == {"tier": "bronze"}
    assert final[1].summary.startswith("every check held in batch 1 (gold-silver): error_rate")

    # the CLI table (`powerx plugin status`), from the control plane's view of the run
    from rich.console import Console

    from powerx_upgrade.api.views import run_view
    from powerx_upgrade.cli.plugin import render_status, status_from_api

    console = Console(record=True, width=400)
    console.print(render_status(status_from_api(run_view(book, book.get_run(run_id)))))
    assert sentence in console.export_text()

    # the report headline and "what went wrong"
    (folder,) = (reports / "crm-sync-e2e").iterdir()
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["headline"] == f"Rolled back: {sentence}"
    assert report["findings"]["tripped"][0]["summary"] == sentence
    assert f"**Rolled back: {sentence}**" in (folder / "report.md").read_text(encoding="utf-8")
    assert "concentrated in tier=bronze" in (folder / "report.html").read_text(encoding="utf-8")

    # notifications as notify.on says, the alert carrying the sentence and the segment
    sent = client.get("/sandbox/notifications").json()["notifications"]
    events = Counter(n["event"] for n in sent)
    assert (
        events["plugin.version.gray.started"] == 0 and events["plugin.version.gray.rollback"] == 0
    )
    assert events["plugin.version.gray.finished"] == 1
    promoted = [n for n in sent if n["event"] == "plugin.version.gray.batch_promoted"]
    assert [n["context"]["batch"] for n in promoted] == [1]
    assert promoted[0]["message"] == final[1].summary
    (alert,) = [n for n in sent if (n.get("context") or {}).get("rule") == "grey_error_rate"]
    assert sentence in alert["message"] and "tier=bronze" in alert["message"]
    assert alert["context"]["segment"]["labels"] == {"tier": "bronze"}


def test_deploy_failures_within_max_failed_continue(airflow_home, sandbox, tmp_path):
    first = planned(sandbox, "crm-sync-tolerant")[0]
    sandbox.post(
        "/sandbox/faults",
        json={"faults": [{"type": "deploy_failure", "tenants": [first[1]], "rate": 1.0}]},
    ).raise_for_status()
    code, book, run_id = run(airflow_home, sandbox, tmp_path, TOLERANT_DAG)
    record = book.get_run(run_id)
    states = {a.tenant_id: a.state for a in book.actions(run_id, kind="upgrade")}
    assert states[first[1]] == "failed"
    assert sum(1 for s in states.values() if s == "succeeded") == len(states) - 1
    assert [g.phase for g in book.gate_evaluations(run_id, final_only=True)] == ["pass", "pass"]
    # Not every selected tenant is on the target: promoted as far as it could, the run fails.
    assert record.outcome == "partially_promoted" and code != 0
    assert not book.actions(run_id, kind="rollback")


def test_deploy_failures_beyond_max_failed_roll_back(airflow_home, sandbox, tmp_path):
    first = planned(sandbox, "crm-sync-tolerant")[0]
    sandbox.post(
        "/sandbox/faults",
        json={"faults": [{"type": "deploy_failure", "tenants": first[1:3], "rate": 1.0}]},
    ).raise_for_status()
    code, book, run_id = run(airflow_home, sandbox, tmp_path, TOLERANT_DAG)
    record = book.get_run(run_id)
    gate = book.gate_evaluations(run_id, final_only=True)
    assert [g.phase for g in gate] == ["fail"] and "max_failed" in gate[0].reason
    assert record.outcome == "rolled_back" and code != 0
    after = versions(sandbox)
    assert all(after[t]["version"] == "2.3.1" for t in first)
