"""Baseline: the ledger schema as it was when migrations were introduced (schema_version 1).

Revision ID: 0001
Revises: (none)

A frozen copy of `ledger/schema.py` at this revision (later revisions change the schema with
their own operations; this file never follows `schema.py`). The upgrade creates every table
that is missing, so it serves both a new empty database and a ledger created before
migrations existed (its tables are there, perhaps without `powerx_ledger_gate_verdicts`, which
early ledgers gained when they were opened); such a ledger must say `schema_version` 1 in
`powerx_ledger_meta`, anything else is refused.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

BASELINE_SCHEMA_VERSION = "1"
_TS = DateTime(timezone=True)


def _json() -> Any:
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _run_fk() -> ForeignKey:
    return ForeignKey("powerx_ledger_runs.run_id", ondelete="CASCADE")


frozen = MetaData()

meta = Table(
    "powerx_ledger_meta",
    frozen,
    Column("key", String(64), primary_key=True),
    Column("value", String(250), nullable=False),
)

runs = Table(
    "powerx_ledger_runs",
    frozen,
    Column("run_id", String(250), primary_key=True),
    Column("dag_id", String(250), nullable=False),
    Column("plan_id", String(250), nullable=False),
    Column("plugin", String(250), nullable=False),
    Column("target_version", String(100), nullable=False),
    Column("artifact_uri", Text),
    Column("artifact_sha256", String(64)),
    Column("triggered_by", String(250)),
    Column("reason", Text),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("conf", _json()),
    Column("status", String(32), nullable=False),
    Column("outcome", String(32)),
    Column("batches", _json()),
    Column("baseline", _json()),
    Column("detail", _json()),
    Column("started_at", _TS, nullable=False),
    Column("ended_at", _TS),
    Index("ix_powerx_ledger_runs_plugin_status", "plugin", "status"),
)

claims = Table(
    "powerx_ledger_tenant_claims",
    frozen,
    # the primary key is the guard: one holder per tenant of a plugin, whatever the code does
    Column("plugin", String(250), primary_key=True),
    Column("tenant_id", String(250), primary_key=True),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("claimed_at", _TS, nullable=False),
    Index("ix_powerx_ledger_tenant_claims_run", "run_id"),
)

actions = Table(
    "powerx_ledger_actions",
    frozen,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("plugin", String(250), nullable=False),
    Column("tenant_id", String(250), nullable=False),
    Column("batch_index", Integer),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("from_version", String(100)),
    Column("to_version", String(100), nullable=False),
    Column("from_config", Text),
    Column("config_after", Text),
    Column("idempotency_key", String(500), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("noop", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("detail", _json()),
    Column("started_at", _TS, nullable=False),
    Column("finished_at", _TS),
    UniqueConstraint("idempotency_key", name="uq_powerx_ledger_actions_key"),
    Index("ix_powerx_ledger_actions_run", "run_id", "kind", "batch_index"),
    Index("ix_powerx_ledger_actions_tenant", "plugin", "tenant_id"),
)

gate_evaluations = Table(
    "powerx_ledger_gate_evaluations",
    frozen,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("batch_index", Integer, nullable=False),
    Column("phase", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("measurements", _json(), nullable=False),
    Column("final", Boolean, nullable=False),
    Column("evaluated_at", _TS, nullable=False),
    Index("ix_powerx_ledger_gate_evaluations_run", "run_id", "batch_index"),
)

gate_verdicts = Table(
    "powerx_ledger_gate_verdicts",
    frozen,
    Column(
        "gate_id",
        Integer,
        ForeignKey("powerx_ledger_gate_evaluations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("summary", Text, nullable=False),
    Column("segment", _json()),
    Index("ix_powerx_ledger_gate_verdicts_run", "run_id"),
)

decisions = Table(
    "powerx_ledger_decisions",
    frozen,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("batch_index", Integer),
    Column("kind", String(16), nullable=False),
    Column("decision", String(64), nullable=False),
    Column("actor", String(250)),
    Column("via", String(8)),
    Column("detail", _json()),
    Column("decided_at", _TS, nullable=False),
    Index("ix_powerx_ledger_decisions_run", "run_id"),
)

audit_outbox = Table(
    "powerx_ledger_audit_outbox",
    frozen,
    # seq gives the exact enqueue order, which timestamps alone cannot (equal clock readings)
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("audit_id", String(64), nullable=False),
    # no foreign key: audit records outlive runs and also cover events outside any run
    Column("run_id", String(250)),
    Column("event", String(100), nullable=False),
    Column("payload", _json(), nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("delivered_at", _TS),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    UniqueConstraint("audit_id", name="uq_powerx_ledger_audit_outbox_id"),
    Index("ix_powerx_ledger_audit_outbox_pending", "delivered_at", "seq"),
    Index("ix_powerx_ledger_audit_outbox_run", "run_id"),
)

approvals = Table(
    "powerx_ledger_approvals",
    frozen,
    # the primary key makes an approval token single use: a second use of a jti cannot insert
    Column("jti", String(250), primary_key=True),
    Column("action", String(32), nullable=False),
    Column("plan_id", String(250), nullable=False),
    # no foreign key: a token may approve a plan-level action (a plan's latest run, a new run)
    Column("run_id", String(250)),
    Column("subject", String(250), nullable=False),
    Column("via", String(8)),
    Column("mfa", Boolean, nullable=False, default=False),
    Column("issued_at", _TS),
    Column("expires_at", _TS, nullable=False),
    Column("used_at", _TS, nullable=False),
    Column("detail", _json()),
    Index("ix_powerx_ledger_approvals_run", "run_id"),
    Index("ix_powerx_ledger_approvals_plan", "plan_id"),
)

controls = Table(
    "powerx_ledger_controls",
    frozen,
    # operator requests to an active run (rollback, pause, takeover/release, adjust, answers to
    # a human decision given through the API); the run's tasks read them and settle them
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("batch_index", Integer),
    Column("payload", _json()),
    Column("actor", String(250)),
    Column("via", String(8)),
    Column("approval_jti", String(250)),
    Column("requested_at", _TS, nullable=False),
    Column("applied_at", _TS),
    Column("outcome", String(32)),
    Column("note", Text),
    Index("ix_powerx_ledger_controls_run", "run_id", "kind"),
)


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    meta_table = frozen.tables["powerx_ledger_meta"]
    if meta_table.name in existing:
        found = bind.execute(
            sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
        ).scalar_one_or_none()
        if found not in (None, BASELINE_SCHEMA_VERSION):
            raise RuntimeError(
                f"powerx_ledger_meta says schema_version {found!r}; the baseline revision "
                f"adopts only ledgers at schema_version {BASELINE_SCHEMA_VERSION}"
            )
    for table in frozen.sorted_tables:
        if table.name not in existing:
            table.create(bind)
    if (
        bind.execute(
            sa.select(meta_table.c.key).where(meta_table.c.key == "schema_version")
        ).first()
        is None
    ):
        row = {"key": "schema_version", "value": BASELINE_SCHEMA_VERSION}
        bind.execute(meta_table.insert().values(**row))


def downgrade() -> None:
    raise NotImplementedError("the baseline is not downgraded: restore a backup instead")
