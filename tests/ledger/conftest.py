"""Ledger test helpers: a ledger on a fresh database, a started run, an upgrade, raw SQL.

The tests run on an SQLite file in tmp_path. With `POWERX_LEDGER_TEST_POSTGRES_URL` set (e.g.
`postgresql+psycopg://postgres@127.0.0.1:5432/powerx_ledger_test`, a throwaway database: the
ledger tables are dropped before every test), they run on PostgreSQL as well.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from powerx_upgrade.ledger import Ledger, RunRecord
from powerx_upgrade.ledger.schema import metadata

PLUGIN = "crm-sync"
POSTGRES_URL = os.environ.get("POWERX_LEDGER_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@pytest.fixture(params=BACKENDS)
def ledger_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = create_engine(POSTGRES_URL)
    metadata.drop_all(engine)
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def ledger(ledger_url: str):
    with Ledger(ledger_url) as opened:
        yield opened


def sqlite_path(url: str) -> str:
    """The file behind an SQLite URL; skips the test on another backend."""
    if not url.startswith("sqlite:///"):
        pytest.skip("SQLite-specific")
    return url.removeprefix("sqlite:///")


def sql(url: str, statement: str, **params) -> list[tuple]:
    """Run raw SQL beside the ledger (as an operator or a buggy client would)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def start(ledger: Ledger, run_id: str = "run-1", plugin: str = PLUGIN, **fields) -> RunRecord:
    values = {
        "dag_id": "plugin_upgrade__crm-sync-standard",
        "plan_id": "crm-sync-standard",
        "plugin": plugin,
        "target_version": "2.4.0",
    }
    return ledger.start_run(run_id, **{**values, **fields})


def upgrade(ledger: Ledger, tenant: str, run_id: str = "run-1", batch: int | None = 0, **fields):
    values = {
        "run_id": run_id,
        "plugin": PLUGIN,
        "tenant_id": tenant,
        "batch_index": batch,
        "kind": "upgrade",
        "from_version": "2.3.1",
        "to_version": "2.4.0",
        "idempotency_key": f"{run_id}:{tenant}:upgrade:2.4.0",
    }
    return ledger.begin_action(**{**values, **fields})
