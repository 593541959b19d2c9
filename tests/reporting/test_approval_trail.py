"""The report's approval trail: every human decision and approval token of a run (who, when,
which path, action, token id, batch), in report.json, Markdown and HTML; never a token."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from powerx_upgrade.reporting import render_reports, report_from_ledger
from powerx_upgrade.rollout.approvals import accept_approval
from powerx_upgrade.security.approval import ApprovalSettings, issue_approval
from tests.reporting.scenarios import PLAN, RUN_ID, T0, Batch, fill_run, frozen_ledger

pytestmark = pytest.mark.unit

SECRET = "report-trail-secret-0123456789abcdefghij"
SETTINGS = ApprovalSettings(secret=SECRET)


def _token(action: str, jti: str, at, subject: str) -> str:
    return issue_approval(
        SECRET, subject=subject, action=action, plan_id=PLAN, run_id=RUN_ID, jti=jti, now=at
    )


@pytest.fixture
def trail_run(tmp_path, monkeypatch):
    """A two-batch run: bob resumes a pause in the UI; carol approves batch 2 through the API
    with a token; dave requests a rollback from the CLI with a token (no decision of its own);
    erin takes over through the API (the next promotion becomes her pause); a later pause
    times out. Answers through the API carry the token id as `detail.approval` (run controls)."""
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        fill_run(
            book,
            clock,
            [Batch(["t-01"], "canary", verdict="inconclusive"), Batch(["t-02"], "rest")],
            pause_at=1,
        )
        approve_at = T0 + timedelta(minutes=20)
        approve = _token("approve", "jti-approve-2", approve_at, "carol@example.com")
        claims = accept_approval(
            book,
            approve,
            SETTINGS,
            operation="approve",
            plan=PLAN,
            run_id=RUN_ID,
            via="api",
            actor="carol",
            now=approve_at,
            batch=2,
        )
        book.record_decision(
            RUN_ID,
            batch_index=2,
            kind="approval",
            decision="approve",
            actor="carol",
            via="api",
            detail={"control": 1, "approval": claims.jti, "chosen": ["Approve"]},
            decided_at=approve_at + timedelta(seconds=2),
        )
        rollback_at = T0 + timedelta(minutes=25)
        rollback = _token("rollback", "jti-rollback", rollback_at, "dave@example.com")
        accept_approval(
            book,
            rollback,
            SETTINGS,
            operation="rollback",
            plan=PLAN,
            run_id=RUN_ID,
            via="cli",
            actor="dave",
            now=rollback_at,
        )
        takeover_at = T0 + timedelta(minutes=27)
        takeover = _token("takeover", "jti-takeover", takeover_at, "erin@example.com")
        accept_approval(
            book,
            takeover,
            SETTINGS,
            operation="takeover",
            plan=PLAN,
            run_id=RUN_ID,
            via="api",
            actor="erin",
            now=takeover_at,
        )
        # under a takeover the DAG's promotion becomes a pause credited to the operator
        book.record_decision(
            RUN_ID,
            batch_index=2,
            kind="decide",
            decision="pause",
            actor="erin",
            via="api",
            detail={"takeover": 3, "approval": "jti-takeover", "reason": "manual takeover"},
            decided_at=takeover_at + timedelta(minutes=1),
        )
        book.record_decision(
            RUN_ID,
            batch_index=2,
            kind="pause",
            decision="rollback",
            actor="timeout default",
            via="ui",
            detail={"timed_out": True},
            decided_at=T0 + timedelta(minutes=30),
        )
        report = report_from_ledger(book, RUN_ID)
    return report, [approve, rollback, takeover]


def test_the_trail_lists_human_decisions_and_tokens_in_time_order(trail_run):
    report, _ = trail_run
    rows = [
        (e["action"], e["decision"], e["who"], e["approver"], e["via"], e["jti"], e["batch"])
        for e in report["approval_trail"]
    ]
    assert rows == [
        ("pause", "resume", "bob", None, "ui", None, 1),
        ("approval", "approve", "carol", "carol@example.com", "api", "jti-approve-2", 2),
        ("rollback", "rollback", "dave", "dave@example.com", "cli", "jti-rollback", None),
        ("decide", "pause", "erin", "erin@example.com", "api", "jti-takeover", 2),
        ("pause", "rollback", "timeout default", None, "auto", None, 2),
    ]
    approve, rollback = report["approval_trail"][1], report["approval_trail"][2]
    assert approve["at"] == (T0 + timedelta(minutes=20, seconds=2)).isoformat()
    assert approve["mfa"] is True and approve["source"] == "decision"
    assert approve["token_used_at"] == (T0 + timedelta(minutes=20)).isoformat()
    assert rollback["source"] == "approval_token" and rollback["mfa"] is True
    assert report["approval_trail"][4]["timed_out"] is True
    # the policy's own "no approval needed" decisions are not human decisions
    assert all(e["decision"] != "not_required" for e in report["approval_trail"])


def test_existing_report_fields_stay_and_decisions_gain_the_token_id(trail_run):
    report, _ = trail_run
    approvals = report["approvals"]
    assert [a["decision"] for a in approvals] == ["not_required", "not_required", "approve"]
    assert approvals[-1]["approval_jti"] == "jti-approve-2"
    assert {"batch", "kind", "decision", "actor", "via", "at", "reason", "detail"} <= set(
        approvals[-1]
    )


def test_markdown_and_html_show_the_trail(trail_run):
    report, _ = trail_run
    files = render_reports(report)
    md = files["report.md"]
    assert "### Approval trail" in md
    assert (
        "| approval | **approve** | carol | carol@example.com | api | `jti-approve-2` | yes |" in md
    )
    assert (
        "| rollback | **rollback** | dave | dave@example.com | cli | `jti-rollback` | yes |" in md
    )
    assert "**rollback** (timed out) | timeout default | - | auto | - | - |" in md
    html = files["report.html"]
    assert "Approval trail" in html and "<code>jti-rollback</code>" in html


def test_no_token_appears_in_any_report_file(trail_run):
    report, tokens = trail_run
    files = render_reports(report)
    for token in tokens:
        signature = token.rsplit(".", 1)[1]
        for name, content in {**files, "report": json.dumps(report)}.items():
            assert token not in content, name
            assert signature not in content, name
