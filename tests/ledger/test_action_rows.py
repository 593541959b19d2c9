"""`Ledger.action_rows`: a run's actions as light rows for the report (issue 16), the same
values as `Ledger.actions` gives, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC

import pytest

from powerx_upgrade.ledger.action_rows import ActionRow
from tests.ledger.conftest import start, upgrade

pytestmark = pytest.mark.unit


def _as_row(record) -> ActionRow:
    return ActionRow(*(getattr(record, name) for name in ActionRow._fields))


def test_action_rows_hold_the_values_of_the_action_records_in_the_same_order(ledger):
    start(ledger, "run-1")
    start(ledger, "run-2")
    ledger.claim_tenants("run-1", "crm-sync", ["t-held"])
    upgrade(ledger, "t-2", batch=1)
    upgrade(ledger, "t-1", batch=1)
    upgrade(ledger, "t-3", batch=None)
    ledger.finish_action("run-1:t-2:upgrade:2.4.0", "succeeded", detail={"took_ms": 40})
    ledger.finish_action("run-1:t-1:upgrade:2.4.0", "failed", error="boom", attempts=3)
    ledger.finish_action("run-1:t-3:upgrade:2.4.0", "skipped", noop=True)
    upgrade(ledger, "t-2", kind="rollback", to_version="2.3.1", idempotency_key="rb:t-2")
    ledger.record_refusal(
        run_id="run-2", plugin="crm-sync", tenant_id="t-held", batch_index=1, reason="held"
    )

    records = ledger.actions("run-1")
    rows = ledger.action_rows("run-1")

    assert rows == [_as_row(r) for r in records]
    assert [r.tenant_id for r in rows] == ["t-2", "t-1", "t-3", "t-2"]  # by id, as begun
    assert rows[0].detail == {"took_ms": 40} and rows[2].detail == {} and rows[3].detail == {}
    assert (rows[1].state, rows[1].error, rows[1].attempts) == ("failed", "boom", 3)
    assert rows[2].noop is True and rows[0].noop is False
    assert rows[3].finished_at is None  # a rollback begun, not finished
    assert all(r.started_at.tzinfo is UTC for r in rows)
    assert all(r.finished_at.utcoffset().total_seconds() == 0 for r in rows[:3])
    refused = ledger.action_rows("run-2")
    assert refused == [_as_row(r) for r in ledger.actions("run-2")]
    assert refused[0].detail == {"held_by": "run-1"}


def test_action_rows_of_a_run_without_actions_or_unknown_are_empty(ledger):
    start(ledger, "run-1")

    assert ledger.action_rows("run-1") == []
    assert ledger.action_rows("no-such-run") == []
