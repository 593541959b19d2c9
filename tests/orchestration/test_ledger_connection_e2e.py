"""No silent fallback: a `powerx_ledger` connection that is defined but unusable fails the run
with the reason, upgrades no tenant and writes no local SQLite file (only an undefined
connection falls back: tests/orchestration/test_ledger_connection.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from powerx_dev.processes import free_port
from powerx_dev.sandbox.testing import running_sandbox
from tests.airflow_harness import dags_test
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e

E2E_DAG = "plugin_upgrade__crm-sync-e2e"


def _versions(client: httpx.Client) -> dict[str, str]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return {t["id"]: t["version"] for t in tenants}


def test_an_unreachable_ledger_database_fails_the_run_loudly(airflow_home: Path, tmp_path: Path):
    """AIRFLOW_CONN_POWERX_LEDGER points at a PostgreSQL port nobody listens on. (A definition
    that does not parse, or a failing secrets backend: tests/cli/test_ledger_cli.py and
    tests/orchestration/test_ledger_connection.py, without a DAG run each.)"""
    definition = f"postgresql+psycopg://powerx:secret@127.0.0.1:{free_port()}/ledger"
    with (
        running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        before = _versions(client)
        result = dags_test(
            airflow_home,
            E2E_DAG,
            sandbox_url=url.rstrip("/"),
            ledger_file=tmp_path / "ledger.db",
            ledger_conn=definition,
            extra_env={
                "POWERX_UPGRADE_REPORTS": str(tmp_path / "reports"),
                # a refused connect is dialled again for CONNECT_PATIENCE_S (120 s) per ledger
                # call; 3 s shows the same failure without the suite waiting minutes for it
                "POWERX_LEDGER_CONNECT_PATIENCE": "3",
            },
            timeout=300,
        )
        after = _versions(client)
    assert "Connection refused" in result.output, result.tail()
    assert "new_state=failed" in result.output  # the task failed, with the reason above
    assert after == before  # no tenant touched
    assert not (tmp_path / "ledger.db").exists()
    assert not (airflow_home / "powerx_ledger.db").exists(), "fell back to the local file"
    assert "powerx:secret@" not in result.output  # the reason, never the password
