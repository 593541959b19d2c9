"""Run controls: operators' requests to a run, settled once; a late rollback of a finished run."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from powerx_upgrade.ledger import (
    AuditEntry,
    InvalidLedgerValue,
    RunNotActive,
    RunStillActive,
    UnknownControl,
    UnknownRun,
)
from tests.ledger.conftest import start

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)


def test_a_request_is_pending_with_who_how_and_which_token_and_audited_with_it(ledger):
    start(ledger)
    control = ledger.request_control(
        "run-1",
        "adjust",
        payload={"bake": "30s"},
        batch_index=2,
        actor="alice",
        via="api",
        approval_jti="jti-1",
        audit=AuditEntry("control.requested", {"kind": "adjust"}, audit_id="c-1"),
    )
    assert control.pending and control.outcome is None
    assert (control.kind, control.payload, control.batch_index) == ("adjust", {"bake": "30s"}, 2)
    assert (control.actor, control.via, control.approval_jti) == ("alice", "api", "jti-1")
    assert control.requested_at.tzinfo is not None
    assert [r.event for r in ledger.audit_records("run-1")] == ["control.requested"]
    assert ledger.get_control(control.id) == control


def test_controls_filter_by_kind_and_pending_in_request_order(ledger):
    start(ledger)
    first = ledger.request_control("run-1", "pause", actor="a", via="ui")
    second = ledger.request_control("run-1", "takeover", actor="b", via="cli")
    third = ledger.request_control("run-1", "pause", actor="c", via="api")
    assert ledger.settle_control(first.id, outcome="applied", note="gate 1", applied_at=T0)
    assert [c.id for c in ledger.controls("run-1")] == [first.id, second.id, third.id]
    assert [c.id for c in ledger.controls("run-1", kind="pause")] == [first.id, third.id]
    assert [c.id for c in ledger.controls("run-1", pending=True)] == [second.id, third.id]
    settled = ledger.controls("run-1", pending=False)
    assert [(c.id, c.outcome, c.note, c.applied_at) for c in settled] == [
        (first.id, "applied", "gate 1", T0)
    ]


def test_only_the_first_settlement_counts_and_only_it_is_audited(ledger):
    start(ledger)
    control = ledger.request_control("run-1", "rollback", actor="alice", via="api")
    audit = AuditEntry("control.rollback.applied", {"by": "gate"})
    assert ledger.settle_control(control.id, outcome="applied", audit=audit) is True
    assert ledger.settle_control(control.id, outcome="refused", note="late", audit=audit) is False
    assert ledger.get_control(control.id).outcome == "applied"
    assert [r.event for r in ledger.audit_records("run-1")] == ["control.rollback.applied"]


def test_racing_settlements_settle_a_request_exactly_once(ledger):
    start(ledger)
    control = ledger.request_control("run-1", "rollback", actor="alice", via="api")
    won: list[bool] = []

    def settle() -> None:
        won.append(ledger.settle_control(control.id, outcome="applied"))

    threads = [threading.Thread(target=settle) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 5 + [True]


def test_a_finished_run_takes_only_rollback_requests(ledger):
    start(ledger)
    ledger.finish_run("run-1", "promoted")
    with pytest.raises(RunNotActive, match="cannot take a pause request"):
        ledger.request_control("run-1", "pause", actor="a", via="api")
    with pytest.raises(RunNotActive):
        ledger.request_control("run-1", "answer", payload={"task_id": "batch_1.pause"})
    late = ledger.request_control("run-1", "rollback", actor="a", via="ui")
    assert late.pending


def test_bad_requests_are_refused_with_the_field_named(ledger):
    start(ledger)
    with pytest.raises(InvalidLedgerValue, match="kind 'explode'"):
        ledger.request_control("run-1", "explode")
    with pytest.raises(InvalidLedgerValue, match="via 'email'"):
        ledger.request_control("run-1", "pause", via="email")
    with pytest.raises(InvalidLedgerValue, match="task_id"):
        ledger.request_control("run-1", "answer", payload={"decision": "resume"})
    with pytest.raises(InvalidLedgerValue, match="batch_index"):
        ledger.request_control("run-1", "pause", batch_index=0)
    with pytest.raises(UnknownRun):
        ledger.request_control("no-such-run", "pause")
    with pytest.raises(UnknownControl):
        ledger.settle_control(404, outcome="applied")
    control = ledger.request_control("run-1", "pause")
    with pytest.raises(InvalidLedgerValue, match="outcome 'done'"):
        ledger.settle_control(control.id, outcome="done")
    assert ledger.controls("run-1") == [control]


def test_late_rollback_turns_a_finished_runs_outcome_and_keeps_the_old_one(ledger):
    start(ledger)
    finished = ledger.finish_run("run-1", "promoted", detail={"outcome_detail": {"tenants": 4}})
    run = ledger.late_rollback(
        "run-1",
        detail={"late_rollback": {"dag_run_id": "manual__1", "tenants": 4}},
        audit=AuditEntry("run.rolled_back.late", {"tenants": 4}),
    )
    assert run.outcome == "rolled_back" and run.status == "finished"
    assert run.ended_at == finished.ended_at
    assert run.detail["outcome_before_rollback"] == "promoted"
    assert run.detail["outcome_detail"] == {"tenants": 4}
    assert run.detail["late_rollback"]["dag_run_id"] == "manual__1"
    assert [r.event for r in ledger.audit_records("run-1")] == ["run.rolled_back.late"]


def test_late_rollback_refuses_an_active_run_and_an_outcome_that_is_no_rollback(ledger):
    start(ledger)
    with pytest.raises(RunStillActive, match="still active"):
        ledger.late_rollback("run-1")
    ledger.finish_run("run-1", "promoted")
    with pytest.raises(InvalidLedgerValue, match="outcome 'promoted'"):
        ledger.late_rollback("run-1", outcome="promoted")
    assert ledger.late_rollback("run-1", outcome="rollback_failed").outcome == "rollback_failed"
    assert ledger.get_run("run-1").detail["outcome_before_rollback"] == "promoted"
