"""Approval tokens in the ledger: each jti is used once, whoever races for it."""

from __future__ import annotations

import multiprocessing
import queue
import threading
from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.ledger import (
    ApprovalRecord,
    ApprovalReplayed,
    AuditEntry,
    InvalidLedgerValue,
    Ledger,
)
from tests.ledger import approval_workers
from tests.ledger.conftest import start

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def use(ledger, jti="j-1", **fields) -> ApprovalRecord:
    values = {
        "jti": jti,
        "action": "rollback",
        "plan_id": "crm-sync-standard",
        "run_id": "run-1",
        "subject": "alice@example.com",
        "via": "api",
        "mfa": True,
        "issued_at": NOW,
        "expires_at": NOW + timedelta(minutes=10),
    }
    return ledger.use_approval(**{**values, **fields})


def test_using_a_token_records_who_approved_what(ledger):
    record = use(ledger, detail={"operation": "rollback"}, used_at=NOW + timedelta(seconds=5))
    assert record == ApprovalRecord(
        jti="j-1",
        action="rollback",
        plan_id="crm-sync-standard",
        run_id="run-1",
        subject="alice@example.com",
        via="api",
        mfa=True,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=10),
        used_at=NOW + timedelta(seconds=5),
        detail={"operation": "rollback"},
    )
    assert ledger.approvals() == [record]
    assert record.to_json()["used_at"] == "2026-11-27T12:00:05+00:00"


def test_a_second_use_of_the_same_jti_is_refused_and_changes_nothing(ledger):
    first = use(ledger, audit=AuditEntry("approval.accepted", {"jti": "j-1"}))
    with pytest.raises(ApprovalReplayed, match=r"'j-1' was already used at .*single use") as e:
        use(
            ledger,
            subject="mallory",
            run_id="run-2",
            audit=AuditEntry("approval.accepted", {"jti": "j-1", "again": True}),
        )
    assert e.value.jti == "j-1"
    assert ledger.approvals() == [first]
    # the refused use enqueued no audit record (same transaction, rolled back)
    assert [r.payload for r in ledger.audit_records()] == [{"jti": "j-1"}]


def test_approvals_filter_by_run_and_plan_in_order_of_use(ledger):
    start(ledger)
    a = use(ledger, "a", used_at=NOW + timedelta(seconds=3))
    b = use(ledger, "b", run_id=None, used_at=NOW + timedelta(seconds=1))
    c = use(ledger, "c", plan_id="billing", run_id="run-9", used_at=NOW + timedelta(seconds=2))
    assert [r.jti for r in ledger.approvals()] == ["b", "c", "a"]
    assert ledger.approvals(run_id="run-1") == [a]
    assert ledger.approvals(plan_id="crm-sync-standard") == [b, a]
    assert ledger.approvals(run_id="run-9", plan_id="billing") == [c]
    assert ledger.approvals(run_id="nope") == []


def test_the_audit_entry_lands_under_the_run(ledger):
    use(ledger, audit=AuditEntry("approval.accepted", {"jti": "j-1"}, "aud-1"))
    [record] = ledger.audit_records("run-1")
    assert (record.audit_id, record.event) == ("aud-1", "approval.accepted")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("jti", ""),
        ("subject", " "),
        ("via", "email"),
        ("expires_at", datetime(2026, 1, 1)),
        ("jti", "x" * 251),
    ],
)
def test_bad_values_are_named(ledger, field, value):
    with pytest.raises(InvalidLedgerValue, match=field):
        use(ledger, **{field: value})
    assert ledger.approvals() == []


def test_two_threads_racing_on_one_jti_exactly_one_wins(ledger):
    barrier = threading.Barrier(8)
    results: list[str] = []

    def racer(name: str) -> None:
        barrier.wait(timeout=10)
        try:
            use(ledger, "shared", subject=name)
            results.append(f"used:{name}")
        except ApprovalReplayed:
            results.append("replayed")

    threads = [threading.Thread(target=racer, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [r for r in results if r.startswith("used:")]
    assert len(results) == 8 and len(winners) == 1
    [record] = ledger.approvals()
    assert f"used:{record.subject}" == winners[0]


def test_two_processes_racing_on_one_jti_exactly_one_wins(ledger_url):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    out = context.Queue()
    processes = [
        context.Process(
            target=approval_workers.use_once, args=(ledger_url, "race", f"p{i}", barrier, out)
        )
        for i in range(2)
    ]
    for process in processes:
        process.start()
    try:
        results = [out.get(timeout=60) for _ in processes]
    except queue.Empty:  # pragma: no cover - a hung worker
        pytest.fail("a worker process did not report within 60 s")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():  # pragma: no cover
                process.kill()
    assert not [r for r in results if r[0] == "error"], results
    assert sorted(status for status, _ in results) == ["replayed", "used"]

    with Ledger(ledger_url) as ledger:
        [record] = ledger.approvals()
        assert ("used", record.subject) in results
        assert len(ledger.audit_records()) == 1
