"""Audit records of the control plane reach the audit service (the sandbox, over HTTP): every
writer builds the service's record shape, and one record the service refuses does not hold up
the records queued behind it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.hooks.audit import PowerXAuditHook
from powerx_upgrade.rollout.approvals import accept_approval
from powerx_upgrade.rollout.record import Recorder, audit_payload
from powerx_upgrade.security.approval import ApprovalRefused, ApprovalSettings, issue_approval
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e

SECRET = "audit-delivery-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url:
        yield url


@pytest.fixture
def recorder(sandbox_url, tmp_path, monkeypatch) -> Iterator[Recorder]:
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_AUDIT", sandbox_url)
    httpx.post(f"{sandbox_url}/sandbox/reset").raise_for_status()
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        yield Recorder(ledger, PowerXAuditHook(retries=0, timeout=10))


def delivered(sandbox_url: str) -> list[dict]:
    return httpx.get(f"{sandbox_url}/sandbox/audit").json()["records"]


def test_approval_acceptances_and_refusals_are_delivered_to_the_audit_service(
    recorder, sandbox_url
):
    now = datetime.now(UTC)
    settings = ApprovalSettings(secret=SECRET)
    good = issue_approval(
        SECRET, subject="alice", action="rollback", plan_id="crm-sync-standard", now=now
    )
    accept_approval(
        recorder.ledger,
        good,
        settings,
        operation="rollback",
        plan="crm-sync-standard",
        run_id=None,
        via="api",
        actor="alice",
        now=now,
    )
    with pytest.raises(ApprovalRefused):
        accept_approval(
            recorder.ledger,
            good,  # a replay
            settings,
            operation="rollback",
            plan="crm-sync-standard",
            run_id=None,
            via="cli",
            actor="mallory",
            now=now,
        )
    assert recorder.flush() == (2, 0)
    records = {r["action"]: r for r in delivered(sandbox_url)}
    assert set(records) == {"approval.accepted", "approval.refused"}
    assert records["approval.refused"]["details"]["code"] == "replayed"
    assert records["approval.accepted"]["details"]["plan_id"] == "crm-sync-standard"
    assert good not in str(records)  # the token itself is never audited


def test_a_record_the_service_refuses_stays_queued_without_blocking_the_others(
    recorder, sandbox_url
):
    book = recorder.ledger
    bad = book.enqueue_audit(run_id=None, event="broken", payload={"unexpected": "shape"})
    good = book.enqueue_audit(
        run_id=None, event="api.accepted", payload=audit_payload("api.accepted", actor="bob")
    )
    delivered_now, still_pending = recorder.flush()
    assert (delivered_now, still_pending) == (1, 1)
    assert [r["id"] for r in delivered(sandbox_url)] == [good]
    (left,) = book.pending_audit()
    assert left.audit_id == bad and left.attempts == 1
    assert "422" in (left.last_error or "")


def _queued(book: Ledger, count: int, tag: str) -> list[str]:
    return [
        book.enqueue_audit(
            run_id=None,
            event="tenant.upgrade.succeeded",
            payload=audit_payload("tenant.upgrade.succeeded", actor="bench", tenants=[f"{tag}{n}"]),
        )
        for n in range(count)
    ]


def test_a_shard_delivers_every_record_it_wrote_and_none_of_its_neighbours(recorder, sandbox_url):
    """A 2,500-tenant shard writes 2,500 records: its flush delivers all of them (a flush used to
    take the oldest 1,000 of the whole outbox, so a 100,000-tenant run ended with 47,655 records
    waiting), and not the records other shards wrote (they deliver their own)."""
    book = recorder.ledger
    neighbours = _queued(book, 5, "other-")
    mine = _queued(book, 1030, "mine-")
    assert recorder.flush(ids=mine) == (1030, 0)
    arrived = {r["id"] for r in delivered(sandbox_url)}
    assert arrived == set(mine)
    assert {r.audit_id for r in book.pending_audit(100)} == set(neighbours)
    assert recorder.drain() == (5, 0)  # the run's end: everything left, page after page
    assert {r["id"] for r in delivered(sandbox_url)} == set(mine) | set(neighbours)


def test_an_audit_outage_midway_keeps_the_rest_queued_and_loses_none(recorder, sandbox_url):
    book = recorder.ledger
    mine = _queued(book, 40, "t-")
    httpx.post(
        f"{sandbox_url}/sandbox/faults",
        json={"faults": [{"type": "http_error", "endpoint": "audit", "status": 503, "times": 3}]},
    ).raise_for_status()
    delivered_now, waiting = recorder.flush(ids=mine)
    assert delivered_now + waiting == 40 and waiting >= 3
    pending = {r.audit_id for r in book.pending_audit(100)}
    assert pending == set(mine) - {r["id"] for r in delivered(sandbox_url)}
    assert recorder.drain() == (waiting, 0)  # the service is back: all of them, once each
    ids = [r["id"] for r in delivered(sandbox_url)]
    assert sorted(ids) == sorted(mine)
