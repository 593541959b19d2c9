"""The ledger: runs, tenant claims, per-tenant actions, gate evaluations, decisions and the
audit outbox of every rollout, in one database shared by all of a run's task processes.

Every public method is one short transaction. Writes that read before they write (claims,
idempotent begins) run under `BEGIN IMMEDIATE` on SQLite and an advisory lock on PostgreSQL;
unique keys stay the final guard either way.
"""

from __future__ import annotations

from typing import Self

from sqlalchemy import Connection, inspect, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from powerx_upgrade.ledger import schema
from powerx_upgrade.ledger.actions import ActionRepository
from powerx_upgrade.ledger.audit import AuditRepository
from powerx_upgrade.ledger.base import AUDIT_RETENTION_FLOOR, RUN_UPDATABLE_FIELDS
from powerx_upgrade.ledger.controls import ControlRepository
from powerx_upgrade.ledger.engine import (
    create_ledger_engine,
    default_ledger_url,
    insert_ignoring_conflicts,
    normalize_url,
    read_transaction,
    serialize_on,
    write_transaction,
)
from powerx_upgrade.ledger.errors import SchemaMismatch
from powerx_upgrade.ledger.gates import GateRepository
from powerx_upgrade.ledger.runs import RunRepository

__all__ = ["AUDIT_RETENTION_FLOOR", "RUN_UPDATABLE_FIELDS", "Ledger"]


class Ledger(RunRepository, ActionRepository, GateRepository, ControlRepository, AuditRepository):
    """The durable record of every rollout; one instance per process, safe to share by threads.

    :param url: an SQLAlchemy URL (`postgresql+psycopg2://...`, `sqlite:////abs/path.db`);
        Airflow's `postgres://` form is accepted. Default: `default_ledger_url()`.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = normalize_url(url) if url else default_ledger_url()
        self._engine = create_ledger_engine(self.url)
        self._ensure_schema()

    def __repr__(self) -> str:
        return f"Ledger({self._engine.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections (the ledger reconnects if used again)."""
        self._engine.dispose()

    # -- schema -------------------------------------------------------------------------------

    def _ensure_schema(self) -> None:
        wanted = set(schema.metadata.tables)
        with read_transaction(self._engine) as conn:
            missing = wanted - set(inspect(conn).get_table_names())
            version = None if missing else self._schema_version(conn)
        if missing or version is None:
            # tables are created once, under the write lock, so that processes racing to
            # open a fresh database do not trip over each other's CREATE TABLE
            with write_transaction(self._engine) as conn:
                serialize_on(conn, "powerx_ledger_schema")
                schema.metadata.create_all(conn)
                insert_ignoring_conflicts(
                    conn,
                    schema.meta,
                    [{"key": "schema_version", "value": schema.SCHEMA_VERSION}],
                    ["key"],
                )
                version = self._schema_version(conn)
        if version != schema.SCHEMA_VERSION:
            shown = self._engine.url.render_as_string(hide_password=True)
            raise SchemaMismatch(shown, str(version), schema.SCHEMA_VERSION)

    @staticmethod
    def _schema_version(conn: Connection) -> str | None:
        try:
            query = select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
            return conn.execute(query).scalar_one_or_none()
        except (OperationalError, ProgrammingError):  # pragma: no cover - a foreign table
            return None
