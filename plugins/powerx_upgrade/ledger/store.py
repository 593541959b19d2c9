"""The ledger: runs, tenant claims, per-tenant actions, gate evaluations, decisions and the
audit outbox of every rollout, in one database shared by all of a run's task processes.

Every public method is one short transaction. Writes that read before they write (claims,
idempotent begins) run under `BEGIN IMMEDIATE` on SQLite and an advisory lock on PostgreSQL;
unique keys stay the final guard either way.
"""

from __future__ import annotations

from typing import Self

from powerx_upgrade.ledger import schema
from powerx_upgrade.ledger.actions import ActionRepository
from powerx_upgrade.ledger.audit import AuditRepository
from powerx_upgrade.ledger.base import AUDIT_RETENTION_FLOOR, RUN_UPDATABLE_FIELDS
from powerx_upgrade.ledger.controls import ControlRepository
from powerx_upgrade.ledger.engine import (
    create_ledger_engine,
    default_ledger_url,
    normalize_url,
    read_transaction,
    serialize_on,
    write_transaction,
)
from powerx_upgrade.ledger.errors import LedgerNotMigrated
from powerx_upgrade.ledger.gates import GateRepository
from powerx_upgrade.ledger.migrate import SCHEMA_LOCK, create_fresh, read_state
from powerx_upgrade.ledger.runs import RunRepository

__all__ = ["AUDIT_RETENTION_FLOOR", "RUN_UPDATABLE_FIELDS", "Ledger"]


class Ledger(RunRepository, ActionRepository, GateRepository, ControlRepository, AuditRepository):
    """The durable record of every rollout; one instance per process, safe to share by threads.

    :param url: an SQLAlchemy URL (`postgresql+psycopg://...`, `sqlite:////abs/path.db`);
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
        """A new database gets today's tables stamped at `schema.REVISION`; an existing ledger
        must be at that revision (`LedgerNotMigrated` otherwise: nothing is changed)."""
        with read_transaction(self._engine) as conn:
            state = read_state(conn)
        if state.empty:
            # created once, under the write lock, so that processes racing to open a fresh
            # database do not trip over each other's CREATE TABLE
            with write_transaction(self._engine) as conn:
                serialize_on(conn, SCHEMA_LOCK)
                state = read_state(conn)
                if state.empty:
                    create_fresh(conn)
                    state = read_state(conn)
        if state.revision != schema.REVISION:
            shown = self._engine.url.render_as_string(hide_password=True)
            raise LedgerNotMigrated(shown, state.revision, schema.REVISION)
