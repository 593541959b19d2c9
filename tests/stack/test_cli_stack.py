"""`powerx plugin ...` as a CI pipeline runs it: a real subprocess against the live stack.
`upgrade --wait` of a healthy version promotes and exits 0; of the bad version (case B: 2.5.0
fails the bronze batch's gate) it exits 1; `status` shows the batches, `report show` prints
the report. The upgrades are the session's case A and case B (tests/stack/runs.py), which
tests/stack/test_rollout_stack.py also asserts: no DAG run of its own."""

from __future__ import annotations

import argparse
import json

import pytest

from powerx_dev.devstack import AirflowStack
from powerx_upgrade.airflow_client import AirflowClient, ControlPlaneMissing
from powerx_upgrade.cli import plugin
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.security.approval import issue_approval
from tests.stack.conftest import APPROVAL_SECRET, AUTO_DAG, explain
from tests.stack.runs import PLAN, Cli, FollowedRun, Powerx

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def promoted(case_a: FollowedRun) -> tuple[str, Cli]:
    """`upgrade --wait` of 2.4.0 (healthy): the session's case A."""
    return case_a.run_id, case_a.cli


def test_upgrade_wait_of_a_healthy_version_promotes_and_exits_0(
    case_a: FollowedRun, powerx: Powerx, stack: AirflowStack, ledger: Ledger
):
    run_id, result = case_a.run_id, case_a.cli
    assert result.code == 0, f"{result}\n{explain(stack, AUTO_DAG, run_id)}"
    assert f"triggered {AUTO_DAG} run {run_id} -> 2.4.0" in result.out
    assert "outcome promoted" in result.out, result
    # The CLI's word is the run's: Airflow and the ledger agree.
    assert stack.run_state(AUTO_DAG, run_id) == "success"
    record = ledger.get_run(run_id)
    assert record is not None and record.outcome == "promoted"
    assert record.reason == "CI: roll out 2.4.0"
    fleet = case_a.after  # the sandbox's fleet when the run ended
    selected = [t for batch in record.batches for t in batch["tenants"]]
    assert selected and all(fleet[t]["version"] == "2.4.0" for t in selected)
    # Followed without a single refused request to the control plane (none before the run was
    # in the ledger either): the audit trail holds no noise from the CLI.
    refused = [r for r in ledger.audit_records() if r.event == "api.refused"]
    assert [r.payload for r in refused if run_id in json.dumps(r.payload)] == []
    # Followed to the end: the final table names both batches with their verdicts.
    assert "1 " in result.out and "2 " in result.out and "pass" in result.out


def test_status_shows_the_runs_batches_and_verdicts(
    promoted: tuple[str, Cli], powerx: Powerx, ledger: Ledger
):
    run_id, _ = promoted
    shown = powerx("status", run_id, "--format", "json")
    assert shown.code == 0, shown
    status = json.loads(shown.out)
    assert status["run_id"] == run_id and status["dag_id"] == AUTO_DAG
    assert status["state"] == "success" and status["outcome"] == "promoted"
    record = ledger.get_run(run_id)
    assert record is not None
    assert [(b["index"], b["name"]) for b in status["batches"]] == [
        (b["index"], b["name"]) for b in record.batches
    ]
    assert [b["verdict"] for b in status["batches"]] == ["pass", "pass"]
    table = powerx("status", "--plan", PLAN)  # the plan's latest run, as a table
    assert table.code == 0, table
    assert run_id in table.out and "promoted" in table.out
    for batch in record.batches:
        assert f"{batch['index']} {batch['name']}" in table.out, table


def test_report_show_prints_the_runs_report(promoted: tuple[str, Cli], powerx: Powerx):
    run_id, _ = promoted
    markdown = powerx("report", "show", run_id)
    assert markdown.code == 0, markdown
    assert run_id in markdown.out and "promoted" in markdown.out
    as_json = powerx("report", "show", run_id, "--format", "json", "--plan", PLAN)
    assert as_json.code == 0, as_json
    report = json.loads(as_json.out)
    assert report["outcome"] == "promoted"


def test_without_the_control_plane_the_same_view_comes_from_airflows_rest_api(
    promoted: tuple[str, Cli], stack: AirflowStack
):
    """The fallback `--wait`/`status` use where the control plane is not installed, read from
    the live run's real task instances and XComs, agrees with the control plane's view."""
    run_id, _ = promoted
    username, password = stack.login
    with AirflowClient(stack.base_url, username=username, password=password) as api:
        full = plugin.RunReader(api, run_id).read()
        reader = plugin.RunReader(api, run_id, AUTO_DAG)
        reader.control_plane = False
        alone = reader.read()
        assert reader.outcome(alone) == "promoted"
        report = plugin._report_from_xcom(
            api,
            argparse.Namespace(run_id=run_id, plan=None, format="json"),
            ControlPlaneMissing("GET", "u", 404, "not installed"),
        )
    assert full.source == "control-plane" and alone.source == "airflow"
    assert (alone.dag_id, alone.plan_id, alone.state, alone.outcome) == (
        AUTO_DAG,
        PLAN,
        "success",
        "promoted",
    )
    assert alone.target_version == full.target_version == "2.4.0"
    assert [(b.index, b.name, b.tenants, b.verdict) for b in alone.batches] == [
        (b.index, b.name, b.tenants, b.verdict) for b in full.batches
    ]
    assert [b.decision for b in alone.batches] == ["promote", "promote"]
    assert [b.deployed.endswith("shards") for b in alone.batches] == [True, True]
    assert json.loads(report)["outcome"] == "promoted"


def test_a_refused_approval_token_exits_1_and_names_the_reason(
    promoted: tuple[str, Cli], powerx: Powerx, ledger: Ledger
):
    run_id, _ = promoted
    forged = issue_approval(
        "not-the-approval-secret-of-this-stack-0123456789",
        subject="mallory",
        action="rollback",
        plan_id=PLAN,
    )
    refused = powerx(
        "rollback", "--run", run_id, "--reason", "CLI test", "--approval-token", forged
    )
    assert refused.code == 1, refused
    assert "refused [forged]" in refused.err and "/internal/version/upgrade/rollback" in refused.err
    assert "Traceback" not in refused.err and forged not in refused.err
    record = ledger.get_run(run_id)
    assert record is not None and record.outcome == "promoted"  # nothing changed
    assert ledger.controls(run_id) == []
    # A valid token for an operation the finished run cannot take is a refusal too.
    token = issue_approval(APPROVAL_SECRET, subject="alice", action="takeover", plan_id=PLAN)
    late = powerx("takeover", run_id, "--reason", "too late", "--approval-token", token)
    assert late.code == 1 and "refused" in late.err, late


def test_upgrade_wait_of_the_bad_version_exits_1_after_the_rollback(
    case_b: FollowedRun, stack: AirflowStack, ledger: Ledger
):
    """Case B: 2.5.0 fails bronze's gate; every upgraded tenant goes back; CI sees exit 1."""
    run_id, result = case_b.run_id, case_b.cli
    assert result.code == 1, f"{result}\n{explain(stack, AUTO_DAG, run_id)}"
    assert "outcome rolled_back" in result.out, result
    assert "fail" in result.out  # the failed gate's verdict was shown
    assert stack.run_state(AUTO_DAG, run_id) == "failed"
    record = ledger.get_run(run_id)
    assert record is not None and record.outcome == "rolled_back"
    assert all(t["version"] == "2.3.1" for t in case_b.after.values())
