"""Alembic environment of the ledger: runs on the connection `ledger.migrate` hands over (in
its write transaction, under the schema lock), or on `sqlalchemy.url` from the config."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection

from powerx_upgrade.ledger.engine import create_ledger_engine, normalize_url
from powerx_upgrade.ledger.schema import VERSION_TABLE, metadata


def _ours(name: str | None, type_: str, _parent: Any) -> bool:
    """Autogenerate looks at the ledger's tables only (the database may hold Airflow's)."""
    return type_ != "table" or bool(name and name.startswith("powerx_ledger_"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        include_name=_ours,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    if context.is_offline_mode():
        raise RuntimeError("the ledger's migrations run online only (powerx ledger upgrade)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url") or ""
    engine = create_ledger_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


run()
