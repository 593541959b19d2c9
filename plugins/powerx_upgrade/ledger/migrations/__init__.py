"""Alembic migrations of the ledger schema (`powerx ledger upgrade`; docs/ledger.md).

Own version table `powerx_ledger_alembic_version`, so the ledger may share a database with
Airflow (whose Alembic table is `alembic_version`). Run them with `ledger.migrate.upgrade`.
"""
