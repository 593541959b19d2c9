"""Ledger test helpers: a ledger on a fresh database, a started run, an upgrade, raw SQL.

Every test that takes `ledger_url` (or `ledger`) runs twice: on an SQLite file in tmp_path and
on a fresh database of the session's real PostgreSQL server (tests/conftest.py
`postgres_server`: the pgserver wheel's binaries on a free port; no set-up, never skipped).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from powerx_upgrade.ledger import Ledger, RunRecord

PLUGIN = "crm-sync"
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def ledger_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return request.getfixturevalue("postgres_url")


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
