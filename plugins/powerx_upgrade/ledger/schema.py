"""The ledger's tables (SQLAlchemy Core), portable between SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = "1"
"""`powerx_ledger_meta.schema_version`: the shape before migrations existed (still written)."""

REVISION = "0001"
"""The Alembic revision this code needs (the head of `ledger/migrations/versions`; a test checks
that they agree). A ledger at another revision is refused with `LedgerNotMigrated`."""

VERSION_TABLE = "powerx_ledger_alembic_version"
"""The ledger's own Alembic version table: never Airflow's `alembic_version`."""


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out: SQLite keeps naive UTC text, PostgreSQL a `timestamptz`."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            # the public API rejects naive values with a typed error before they get here
            raise ValueError(f"naive datetime {value!r}: the ledger stores aware UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> Any:
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _run_fk() -> ForeignKey:
    return ForeignKey("powerx_ledger_runs.run_id", ondelete="CASCADE")


metadata = MetaData()

meta = Table(
    "powerx_ledger_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(250), nullable=False),
)

runs = Table(
    "powerx_ledger_runs",
    metadata,
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
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Index("ix_powerx_ledger_runs_plugin_status", "plugin", "status"),
)

claims = Table(
    "powerx_ledger_tenant_claims",
    metadata,
    # the primary key is the guard: one holder per tenant of a plugin, whatever the code does
    Column("plugin", String(250), primary_key=True),
    Column("tenant_id", String(250), primary_key=True),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Index("ix_powerx_ledger_tenant_claims_run", "run_id"),
)

actions = Table(
    "powerx_ledger_actions",
    metadata,
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
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    UniqueConstraint("idempotency_key", name="uq_powerx_ledger_actions_key"),
    Index("ix_powerx_ledger_actions_run", "run_id", "kind", "batch_index"),
    Index("ix_powerx_ledger_actions_tenant", "plugin", "tenant_id"),
)

gate_evaluations = Table(
    "powerx_ledger_gate_evaluations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("batch_index", Integer, nullable=False),
    Column("phase", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("measurements", _json(), nullable=False),
    Column("final", Boolean, nullable=False),
    Column("evaluated_at", UTCDateTime, nullable=False),
    Index("ix_powerx_ledger_gate_evaluations_run", "run_id", "batch_index"),
)

gate_verdicts = Table(
    "powerx_ledger_gate_verdicts",
    metadata,
    # the final verdict in words (and where a failure concentrates), one row per gate record
    # that has one (a table of its own since before migrations: early ledgers gained it when
    # opened; the baseline revision creates it where it is missing)
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
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(250), _run_fk(), nullable=False),
    Column("batch_index", Integer),
    Column("kind", String(16), nullable=False),
    Column("decision", String(64), nullable=False),
    Column("actor", String(250)),
    Column("via", String(8)),
    Column("detail", _json()),
    Column("decided_at", UTCDateTime, nullable=False),
    Index("ix_powerx_ledger_decisions_run", "run_id"),
)

audit_outbox = Table(
    "powerx_ledger_audit_outbox",
    metadata,
    # seq gives the exact enqueue order, which timestamps alone cannot (equal clock readings)
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("audit_id", String(64), nullable=False),
    # no foreign key: audit records outlive runs and also cover events outside any run
    Column("run_id", String(250)),
    Column("event", String(100), nullable=False),
    Column("payload", _json(), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    UniqueConstraint("audit_id", name="uq_powerx_ledger_audit_outbox_id"),
    Index("ix_powerx_ledger_audit_outbox_pending", "delivered_at", "seq"),
    Index("ix_powerx_ledger_audit_outbox_run", "run_id"),
)

approvals = Table(
    "powerx_ledger_approvals",
    metadata,
    # the primary key makes an approval token single use: a second use of a jti cannot insert
    Column("jti", String(250), primary_key=True),
    Column("action", String(32), nullable=False),
    Column("plan_id", String(250), nullable=False),
    # no foreign key: a token may approve a plan-level action (a plan's latest run, a new run)
    Column("run_id", String(250)),
    Column("subject", String(250), nullable=False),
    Column("via", String(8)),
    Column("mfa", Boolean, nullable=False, default=False),
    Column("issued_at", UTCDateTime),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=False),
    Column("detail", _json()),
    Index("ix_powerx_ledger_approvals_run", "run_id"),
    Index("ix_powerx_ledger_approvals_plan", "plan_id"),
)

controls = Table(
    "powerx_ledger_controls",
    metadata,
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
    Column("requested_at", UTCDateTime, nullable=False),
    Column("applied_at", UTCDateTime),
    Column("outcome", String(32)),
    Column("note", Text),
    Index("ix_powerx_ledger_controls_run", "run_id", "kind"),
)

version_metadata = MetaData()
version_table = Table(
    # Alembic's own layout (what `alembic stamp` would create), in a metadata of its own: not a
    # ledger table, and never compared by autogenerate
    VERSION_TABLE,
    version_metadata,
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)
