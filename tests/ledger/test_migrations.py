"""Ledger migrations (Alembic): a new database is stamped at the code's revision, an existing
ledger at another revision (or from before migrations) is refused until `powerx ledger
upgrade` ran, and an upgrade keeps every row. On SQLite and on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from powerx_upgrade.ledger import Ledger, LedgerNotMigrated, SchemaMismatch, migrate, schema
from tests.ledger.conftest import PLUGIN, sql, start, upgrade

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)


def _schema_differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": schema.VERSION_TABLE}
            )
            return compare_metadata(context, schema.metadata)
    finally:
        engine.dispose()


def _populate(url: str) -> None:
    """Runs, claims, actions, a gate with its verdict, a decision and audit rows."""
    with Ledger(url) as ledger:
        start(ledger)
        start(ledger, "run-2", plan_id="crm-sync-other")
        ledger.claim_tenants("run-1", PLUGIN, ["t-1", "t-2"])
        done = upgrade(ledger, "t-1")
        ledger.finish_action(done.idempotency_key, "succeeded", config_after="cfg-1")
        upgrade(ledger, "t-2")
        ledger.record_gate("run-1", 0, phase="pass", reason="ok", measurements=[], final=True)
        ledger.record_decision("run-1", batch_index=0, kind="decide", decision="promote")
        ledger.enqueue_audit(run_id="run-1", event="rollout.started", payload={"by": "ops"})
        ledger.finish_run("run-2", "promoted")


def _make_pre_migration(url: str) -> None:
    """Today's tables and rows, but as a ledger made before migrations: no version table (and,
    like the earliest ledgers, no verdict table)."""
    _populate(url)
    sql(url, "DROP TABLE powerx_ledger_alembic_version")
    sql(url, "DROP TABLE powerx_ledger_gate_verdicts")


def test_the_migration_head_is_the_revision_the_code_needs():
    assert migrate.head_revision() == schema.REVISION


def test_a_new_database_is_created_at_the_head_with_exactly_the_declared_schema(ledger_url):
    Ledger(ledger_url).close()
    assert migrate.current_revision(ledger_url) == schema.REVISION
    assert _schema_differences(ledger_url) == []


def test_an_empty_database_upgraded_by_the_command_has_the_same_schema(ledger_url):
    result = migrate.upgrade(ledger_url)
    assert (result.before, result.after) == (None, schema.REVISION)
    assert _schema_differences(ledger_url) == []
    with Ledger(ledger_url) as ledger:  # opens without creating anything
        assert start(ledger).run_id == "run-1"


def test_a_populated_pre_migration_ledger_is_refused_then_upgraded_with_its_data(ledger_url):
    _make_pre_migration(ledger_url)
    with pytest.raises(LedgerNotMigrated) as refused:
        Ledger(ledger_url)
    message = str(refused.value)
    assert "is at revision none" in message and f"code needs {schema.REVISION}" in message
    assert "run powerx ledger upgrade" in message
    assert isinstance(refused.value, SchemaMismatch)  # callers that caught the old error

    result = migrate.upgrade(ledger_url)
    assert (result.before, result.after) == (None, schema.REVISION)
    assert _schema_differences(ledger_url) == []
    with Ledger(ledger_url) as ledger:
        assert ledger.get_run("run-1").status == "running"
        assert ledger.get_run("run-2").outcome == "promoted"
        assert ledger.claimed_tenants("run-1") == ["t-1", "t-2"]
        assert ledger.tenant_holder(PLUGIN, "t-3") is None
        actions = {a.tenant_id: a.state for a in ledger.actions("run-1")}
        assert actions == {"t-1": "succeeded", "t-2": "started"}
        (gate,) = ledger.gate_evaluations("run-1")
        assert (gate.phase, gate.summary) == ("pass", None)
        assert [d.decision for d in ledger.decisions("run-1")] == ["promote"]
        events = [a.event for a in ledger.pending_audit()]
        assert "rollout.started" in events
        # the upgraded ledger takes the writes of today's code, the new table included
        ledger.record_gate(
            "run-1", 1, phase="pass", reason="ok", measurements=[], final=True, summary="held"
        )
        assert [g.summary for g in ledger.gate_evaluations("run-1")] == [None, "held"]
    assert migrate.upgrade(ledger_url).before == schema.REVISION  # a second run: nothing to do


def test_a_ledger_at_another_revision_is_refused_with_its_url_without_password(ledger_url):
    Ledger(ledger_url).close()
    sql(ledger_url, "UPDATE powerx_ledger_alembic_version SET version_num = '0000'")
    with pytest.raises(
        LedgerNotMigrated, match=f"is at revision 0000, code needs {schema.REVISION}"
    ):
        Ledger(ledger_url)


def test_a_pre_migration_ledger_of_an_unknown_shape_is_not_adopted(ledger_url):
    _make_pre_migration(ledger_url)
    sql(ledger_url, "UPDATE powerx_ledger_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(Exception, match="schema_version '99'"):
        migrate.upgrade(ledger_url)
    assert migrate.current_revision(ledger_url) is None  # the failed upgrade left nothing


def test_the_url_in_the_refusal_hides_the_password():
    error = LedgerNotMigrated("postgresql+psycopg://powerx:***@db/ledger", "0000", "0001")
    assert "secret" not in str(error) and "powerx:***@db" in str(error)
