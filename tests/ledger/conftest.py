"""Ledger test helpers: a ledger on a fresh SQLite file and a started run."""

from __future__ import annotations

from pathlib import Path

import pytest

from powerx_upgrade.ledger import Ledger, RunRecord

PLUGIN = "crm-sync"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def ledger(ledger_url: str):
    with Ledger(ledger_url) as opened:
        yield opened


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
