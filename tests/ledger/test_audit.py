"""The audit outbox: order, delivery, failures, idempotent enqueue, masking and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, update

from powerx_upgrade.ledger import AuditEntry, RetentionTooShort, UnknownAudit
from powerx_upgrade.ledger.masking import is_secret_key
from powerx_upgrade.ledger.schema import audit_outbox
from tests.ledger.conftest import sql, start, upgrade

pytestmark = pytest.mark.unit


def enqueue(ledger, n: int, run_id: str | None = "run-1") -> list[str]:
    return [ledger.enqueue_audit(run_id=run_id, event=f"e{i}", payload={"i": i}) for i in range(n)]


def test_pending_records_come_oldest_first(ledger):
    ids = enqueue(ledger, 5)
    pending = ledger.pending_audit()
    assert [record.audit_id for record in pending] == ids
    assert [record.event for record in pending] == ["e0", "e1", "e2", "e3", "e4"]
    assert [record.audit_id for record in ledger.pending_audit(limit=2)] == ids[:2]
    assert all(len(audit_id) == 32 and int(audit_id, 16) >= 0 for audit_id in ids)
    assert len(set(ids)) == 5


def test_delivered_records_leave_the_pending_list_and_keep_the_first_delivery_time(ledger):
    ids = enqueue(ledger, 3)
    first = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)
    ledger.mark_audit_delivered(ids[1], delivered_at=first)
    ledger.mark_audit_delivered(ids[1], delivered_at=first + timedelta(hours=1))

    assert [record.audit_id for record in ledger.pending_audit()] == [ids[0], ids[2]]
    delivered = next(record for record in ledger.audit_records() if record.audit_id == ids[1])
    assert delivered.delivered_at == first
    assert delivered.delivered


def test_a_failed_delivery_counts_an_attempt_and_keeps_the_record_pending(ledger):
    (audit_id,) = enqueue(ledger, 1)
    ledger.mark_audit_failed(audit_id, "connection refused")
    ledger.mark_audit_failed(audit_id, "HTTP 503")

    (record,) = ledger.pending_audit()
    assert (record.audit_id, record.attempts, record.last_error) == (audit_id, 2, "HTTP 503")
    assert record.delivered_at is None


def test_unknown_audit_ids_are_named(ledger):
    with pytest.raises(UnknownAudit, match="'nope'"):
        ledger.mark_audit_delivered("nope")
    with pytest.raises(UnknownAudit, match="'nope'"):
        ledger.mark_audit_failed("nope", "x")


def test_enqueue_with_a_known_id_is_a_no_op(ledger):
    assert (
        ledger.enqueue_audit(run_id=None, event="run.start", payload={"v": 1}, audit_id="a1")
        == "a1"
    )
    assert (
        ledger.enqueue_audit(run_id=None, event="run.start", payload={"v": 2}, audit_id="a1")
        == "a1"
    )
    (record,) = ledger.audit_records()
    assert record.payload == {"v": 1}


def test_audit_records_filter_by_run(ledger):
    enqueue(ledger, 2, run_id="run-1")
    enqueue(ledger, 1, run_id="run-2")
    enqueue(ledger, 1, run_id=None)
    assert len(ledger.audit_records()) == 4
    assert [record.run_id for record in ledger.audit_records("run-2")] == ["run-2"]


def test_secrets_in_payloads_are_masked_before_they_are_stored(ledger, ledger_url):
    ledger.enqueue_audit(
        run_id=None,
        event="run.start",
        payload={
            "conf": {"api_key": "k-123", "Authorization": "Bearer abc", "reason": "fix"},
            "platform": "https://ops:hunter2@platform.example/api",
            "headers": [{"x-auth-token": "tok"}],
            "password": None,
        },
    )
    (record,) = ledger.audit_records()
    assert record.payload == {
        "conf": {"api_key": "***", "Authorization": "***", "reason": "fix"},
        "platform": "https://ops:***@platform.example/api",
        "headers": [{"x-auth-token": "***"}],
        "password": None,
    }
    ((stored,),) = sql(ledger_url, "SELECT CAST(payload AS TEXT) FROM powerx_ledger_audit_outbox")
    assert "hunter2" not in stored and "k-123" not in stored and "abc" not in stored


def _age(ledger_url: str, audit_id: str, days: int) -> None:
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(
            update(audit_outbox)
            .where(audit_outbox.c.audit_id == audit_id)
            .values(created_at=datetime.now(UTC) - timedelta(days=days))
        )
    engine.dispose()


def test_pruning_drops_only_delivered_records_past_the_retention(ledger, ledger_url):
    old_delivered, old_pending, young_delivered, year_delivered = enqueue(ledger, 4)
    for audit_id, days in (
        (old_delivered, 400),
        (old_pending, 900),
        (young_delivered, 10),
        (year_delivered, 364),
    ):
        _age(ledger_url, audit_id, days)
    for audit_id in (old_delivered, young_delivered, year_delivered):
        ledger.mark_audit_delivered(audit_id)

    assert ledger.prune_audit() == 1

    left = {record.audit_id for record in ledger.audit_records()}
    assert left == {old_pending, young_delivered, year_delivered}
    assert [record.audit_id for record in ledger.pending_audit()] == [old_pending]


def test_pruning_never_drops_undelivered_records_however_old(ledger):
    ids = enqueue(ledger, 3)
    far_future = datetime.now(UTC) + timedelta(days=5000)
    assert ledger.prune_audit(now=far_future) == 0
    assert [record.audit_id for record in ledger.pending_audit()] == ids


def test_a_retention_under_365_days_is_refused(ledger):
    ledger.mark_audit_delivered(enqueue(ledger, 1)[0])
    with pytest.raises(RetentionTooShort, match="365 days"):
        ledger.prune_audit(timedelta(days=30), now=datetime.now(UTC) + timedelta(days=60))
    assert len(ledger.audit_records()) == 1


def test_audit_entries_ride_in_the_same_transaction_as_the_change(ledger):
    entry = AuditEntry(
        event="plugin.version.run.start", payload={"run": "run-1"}, audit_id="start-run-1"
    )
    start(ledger, audit=entry)
    start(ledger, audit=AuditEntry(event="plugin.version.run.start", payload={}))
    key = upgrade(ledger, "t-1").idempotency_key
    done = AuditEntry(
        event="plugin.version.upgrade", payload={"tenant": "t-1"}, audit_id=f"done:{key}"
    )
    ledger.finish_action(key, "succeeded", audit=done)
    ledger.finish_action(key, "succeeded", audit=done)
    ledger.record_decision(
        "run-1",
        batch_index=0,
        kind="pause",
        decision="resume",
        actor="bob",
        via="ui",
        audit=AuditEntry(event="plugin.version.pause", payload={"decision": "resume"}),
    )
    ledger.finish_run(
        "run-1", "promoted", audit=AuditEntry(event="plugin.version.run.end", payload={})
    )

    events = [(record.event, record.run_id) for record in ledger.audit_records()]
    assert events == [
        ("plugin.version.run.start", "run-1"),
        ("plugin.version.upgrade", "run-1"),
        ("plugin.version.pause", "run-1"),
        ("plugin.version.run.end", "run-1"),
    ]


def test_a_failing_change_enqueues_no_audit_record(ledger):
    start(ledger)
    with pytest.raises(ValueError):
        ledger.finish_run("run-1", "bogus", audit=AuditEntry(event="run.end", payload={}))
    with pytest.raises(LookupError):
        ledger.finish_action("missing", "succeeded", audit=AuditEntry(event="x", payload={}))
    assert ledger.audit_records() == []


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("db_passwd", True),
        ("X-Auth-Token", True),
        ("client_secret", True),
        ("private_key", True),
        ("bypass", False),
        ("artifact_sha256", False),
        ("artifact_signature", False),
        ("reason", False),
    ],
)
def test_secret_keys_are_recognised_by_name(key, secret):
    assert is_secret_key(key) is secret


def test_pending_audit_is_counted_and_marked_delivered_in_one_call(ledger):
    ids = [ledger.enqueue_audit(run_id=None, event="e", payload={"n": i}) for i in range(3)]
    assert ledger.count_pending_audit() == 3
    assert ledger.mark_audits_delivered(ids[:2]) == 2
    assert ledger.mark_audits_delivered(ids[:2]) == 0  # again: the first delivery stands
    assert ledger.count_pending_audit() == 1
    assert [r.audit_id for r in ledger.pending_audit()] == [ids[2]]
    with pytest.raises(UnknownAudit):
        ledger.mark_audits_delivered([ids[2], "nobody"])
    assert ledger.count_pending_audit() == 1
