"""Rolling back a finished run, at service level on a real SQLite ledger: which run, clear
refusals, and the records left under the run (the tenant work itself: test_controls_e2e.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout import late_rollback
from powerx_upgrade.rollout.late_rollback import RollbackRefused

pytestmark = pytest.mark.unit


def started(book: Ledger, run_id: str, *, upgraded: bool = True, dry_run: bool = False) -> None:
    book.start_run(
        run_id,
        dag_id="plugin_upgrade__crm",
        plan_id="crm",
        plugin="crm-sync",
        target_version="2.4.0",
        dry_run=dry_run,
    )
    if upgraded:
        key = f"{run_id}:upgrade:t-1"
        book.begin_action(
            run_id=run_id,
            plugin="crm-sync",
            tenant_id="t-1",
            batch_index=1,
            kind="upgrade",
            from_version="2.3.1",
            to_version="2.4.0",
            idempotency_key=key,
        )
        book.finish_action(key, "succeeded")
    book.finish_run(run_id, "dry_run" if dry_run else "promoted")


@pytest.fixture
def book(tmp_path: Path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def test_the_run_is_the_given_one_or_the_plans_newest_that_upgraded(book):
    started(book, "old")
    started(book, "newest-touched-nothing", upgraded=False)
    assert late_rollback.resolve_target_run(book, run_id=None, plan_id="crm").run_id == "old"
    assert late_rollback.resolve_target_run(book, run_id="old", plan_id=None).run_id == "old"


def test_refusals_say_what_is_wrong_and_what_to_give(book):
    started(book, "dry", upgraded=False, dry_run=True)
    cases = {
        "give run_id (a run) or plan_id": {"run_id": None, "plan_id": None},
        "run_id 'nope': no such run": {"run_id": "nope", "plan_id": None},
        "not of plan_id 'other'": {"run_id": "dry", "plan_id": "other"},
        "plan_id 'crm': no run of this plan upgraded": {"run_id": None, "plan_id": "crm"},
        "was a dry run": {"run_id": "dry", "plan_id": None},
    }
    for message, given in cases.items():
        with pytest.raises(RollbackRefused, match=re.escape(message)):
            late_rollback.resolve_target_run(book, **given)


def test_the_request_must_be_a_rollback_request_of_that_run(book):
    started(book, "a")
    started(book, "b")
    run = book.get_run("a")
    mine = book.request_control("a", "rollback", actor="x", via="api")
    theirs = book.request_control("b", "rollback", actor="x", via="api")
    assert late_rollback.request_of(book, run, None) is None
    assert late_rollback.request_of(book, run, str(mine.id)) == mine
    with pytest.raises(RollbackRefused, match="not a rollback request of run 'a'"):
        late_rollback.request_of(book, run, theirs.id)
    with pytest.raises(RollbackRefused, match="no such control"):
        late_rollback.request_of(book, run, 999)
    with pytest.raises(RollbackRefused, match="not a control id"):
        late_rollback.request_of(book, run, "seven")


def test_the_records_land_under_the_run_with_the_requester_and_its_token(book):
    started(book, "a")
    asked = book.request_control("a", "rollback", actor="rm", via="cli", approval_jti="j-1")
    ctx = late_rollback.context_for(
        book.get_run("a"), by_run="manual__rb", actor="rm", reason="customers"
    )
    assert ctx.key("rollback", "t-1") == "a:rollback@manual__rb:t-1"
    at = datetime(2026, 3, 7, tzinfo=UTC)
    run = late_rollback.record_late_rollback(
        book,
        ctx,
        via="cli",
        request=asked,
        scope="all_upgraded",
        targets=[{"tenant": "t-1", "from_version": "2.3.1", "batch": 1}],
        held={},
        verification={"verified": [{"tenant": "t-1"}], "broken": [], "duration_ms": 900},
        started_at=at,
    )
    assert run.outcome == "rolled_back" and run.detail["outcome_before_rollback"] == "promoted"
    assert run.detail["late_rollback"]["approval"] == "j-1"
    [decided] = book.decisions("a")
    assert (decided.kind, decided.actor, decided.via, decided.decided_at) == (
        "rollback",
        "rm",
        "cli",
        at,
    )
    assert book.get_control(asked.id).outcome == "applied"
    events = [r.event for r in book.audit_records("a")]
    assert events == ["run.rolled_back.late", "control.rollback.applied"]


def test_a_tenant_that_did_not_come_back_makes_it_rollback_failed(book):
    started(book, "a")
    ctx = late_rollback.context_for(book.get_run("a"), by_run="rb", actor="rm", reason="r")
    run = late_rollback.record_late_rollback(
        book,
        ctx,
        via="ui",
        request=None,
        scope="all_upgraded",
        targets=[{"tenant": "t-1", "from_version": "2.3.1", "batch": 1}],
        held={},
        verification={"verified": [], "broken": [{"tenant": "t-1", "problems": ["on 2.4.0"]}]},
        started_at=datetime.now(UTC),
    )
    assert run.outcome == "rollback_failed"
