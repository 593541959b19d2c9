"""Ledger schema migrations (Alembic, shipped with Airflow): the revision a database is at, and
the upgrade `powerx ledger upgrade` runs.

A new, empty database needs no command: `Ledger(url)` creates today's tables and stamps the
head revision in one transaction. An existing ledger is never changed by opening it: a ledger
at an older revision (or made before migrations, without the version table) is refused with
`LedgerNotMigrated` until `upgrade(url)` has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, inspect, select

from powerx_upgrade.ledger import schema
from powerx_upgrade.ledger.engine import (
    create_ledger_engine,
    normalize_url,
    serialize_on,
    write_transaction,
)

SCHEMA_LOCK = "powerx_ledger_schema"
"""The advisory-lock topic under which tables are created or migrated (PostgreSQL); SQLite
holds its write lock instead."""

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class LedgerState:
    """What a database holds: the ledger's tables present, and the revision stamped (None: no
    version table or no row)."""

    tables: frozenset[str]
    revision: str | None

    @property
    def empty(self) -> bool:
        """No ledger table and no version table: a new database."""
        return not self.tables and self.revision is None


@dataclass(frozen=True)
class UpgradeResult:
    url: str
    before: str | None
    after: str | None


def read_state(conn: Connection) -> LedgerState:
    names = set(inspect(conn).get_table_names())
    tables = frozenset(names & set(schema.metadata.tables))
    revision = None
    if schema.VERSION_TABLE in names:
        revision = conn.execute(select(schema.version_table.c.version_num)).scalar()
    return LedgerState(tables, revision)


def create_fresh(conn: Connection) -> None:
    """A new database: today's tables, the meta row and the head revision, in `conn`'s
    transaction (the caller holds the schema lock)."""
    schema.metadata.create_all(conn)
    schema.version_metadata.create_all(conn)
    conn.execute(schema.meta.insert().values(key="schema_version", value=schema.SCHEMA_VERSION))
    conn.execute(schema.version_table.insert().values(version_num=schema.REVISION))


def head_revision() -> str:
    """The head of the migration scripts (what `schema.REVISION` must say)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if head is None:  # pragma: no cover - the baseline is always there
        raise RuntimeError(f"no migration scripts under {MIGRATIONS}")
    return head


def current_revision(url: str) -> str | None:
    """The revision the ledger at `url` is stamped with (None: no version table)."""
    engine = create_ledger_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return read_state(conn).revision
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> UpgradeResult:
    """Migrates the ledger at `url` to `revision` in one transaction under the schema lock
    (a second upgrade running at the same time waits, then finds nothing to do)."""
    from alembic import command
    from alembic.config import Config

    url = normalize_url(url)
    engine = create_ledger_engine(url)
    shown = engine.url.render_as_string(hide_password=True)
    try:
        with write_transaction(engine) as conn:
            serialize_on(conn, SCHEMA_LOCK)
            before = read_state(conn).revision
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            after = read_state(conn).revision
    finally:
        engine.dispose()
    return UpgradeResult(shown, before, after)
