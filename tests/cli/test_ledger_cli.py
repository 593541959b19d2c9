"""`powerx ledger upgrade` / `current`: a pre-migration ledger is upgraded in place with its
rows, the default URL is the `powerx_ledger` connection, failures exit 1 with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from powerx_upgrade.cli.main import main
from powerx_upgrade.ledger import Ledger, LedgerNotMigrated, schema
from powerx_upgrade.orchestration import ledger_connection

pytestmark = pytest.mark.unit


def _pre_migration_ledger(url: str) -> None:
    with Ledger(url) as ledger:
        ledger.start_run(
            "run-1", dag_id="d", plan_id="p", plugin="crm-sync", target_version="2.4.0"
        )
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE {schema.VERSION_TABLE}"))
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_brings_a_pre_migration_ledger_to_the_head(
    backend, tmp_path: Path, request, capsys
):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
    _pre_migration_ledger(url)
    assert main(["ledger", "current", "--url", url]) == 3
    assert "revision none, code needs" in capsys.readouterr().out
    with pytest.raises(LedgerNotMigrated):
        Ledger(url)

    assert main(["ledger", "upgrade", "--url", url]) == 0
    assert f"upgraded: none -> {schema.REVISION}" in capsys.readouterr().out
    assert main(["ledger", "current", "--url", url]) == 0
    assert main(["ledger", "upgrade", "--url", url]) == 0
    assert "nothing to do" in capsys.readouterr().out
    with Ledger(url) as ledger:
        assert ledger.get_run("run-1").plugin == "crm-sync"


def test_without_url_the_connection_is_used(tmp_path: Path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'from-connection.db'}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_POWERX_LEDGER", json.dumps({"conn_type": "generic", "extra": {"url": url}})
    )
    assert main(["ledger", "upgrade"]) == 0
    assert str(tmp_path / "from-connection.db") in capsys.readouterr().out


def test_an_unreachable_database_exits_1_with_the_reason_and_no_password(capsys, monkeypatch):
    from powerx_dev.processes import free_port

    monkeypatch.setenv("POWERX_LEDGER_CONNECT_PATIENCE", "2")  # dialled again for 2 s, not 120

    url = f"postgresql+psycopg://powerx:s3cret@127.0.0.1:{free_port()}/ledger"
    assert main(["ledger", "upgrade", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "Connection refused" in err and "s3cret" not in err


def test_a_malformed_connection_fails_instead_of_falling_back(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_CONN_POWERX_LEDGER", "not a uri")
    with pytest.raises(ledger_connection.LedgerConnectionError, match="not a database URL"):
        ledger_connection.resolve_ledger_url()
    assert main(["ledger", "upgrade"]) == 1
    assert "not a database URL" in capsys.readouterr().err
    assert not (tmp_path / "powerx_ledger.db").exists()
