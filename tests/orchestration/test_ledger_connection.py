"""The one ledger URL resolution (tasks, control plane, CLI): only an undefined connection falls
back to the SQLite file, logged once; a failing backend or an unusable definition raises."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from powerx_upgrade.api import settings as api_settings
from powerx_upgrade.orchestration import ledger_connection, runtime
from powerx_upgrade.orchestration.ledger_connection import LedgerConnectionError

pytestmark = pytest.mark.unit


class _Backend:
    def __init__(self, answer=None, error: Exception | None = None):
        self.answer, self.error, self.asked = answer, error, 0

    def get_connection(self, conn_id: str):
        self.asked += 1
        assert conn_id == "powerx_ledger"
        if self.error:
            raise self.error
        return self.answer


@pytest.fixture
def backends(monkeypatch):
    chain: list[_Backend] = []
    monkeypatch.setattr(ledger_connection, "_secrets_backends", lambda: list(chain))
    monkeypatch.setattr(ledger_connection, "_fallback_logged", set())
    return chain


def test_an_undefined_connection_falls_back_to_the_file_and_says_so_once(
    backends, monkeypatch, tmp_path: Path, caplog
):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    backends += [_Backend(), _Backend()]
    with caplog.at_level(logging.WARNING, logger=ledger_connection.__name__):
        first = runtime.ledger_url()
        second = api_settings.ledger_url_from_airflow()
    assert first == second == f"sqlite:///{tmp_path / 'powerx_ledger.db'}"
    assert [b.asked for b in backends] == [2, 2]
    warnings = [r for r in caplog.records if "no 'powerx_ledger' connection" in r.getMessage()]
    assert len(warnings) == 1


def test_a_failing_secrets_backend_fails_and_later_backends_are_not_asked(backends):
    backends += [_Backend(error=TimeoutError("vault timed out")), _Backend()]
    with pytest.raises(LedgerConnectionError, match="_Backend failed: vault timed out"):
        runtime.ledger_url()
    with pytest.raises(LedgerConnectionError):
        api_settings.ledger_url_from_airflow()
    assert backends[1].asked == 0


def test_the_extra_url_wins_and_airflow_postgres_scheme_is_rewritten(backends):
    from airflow.models.connection import Connection

    backends.append(_Backend(Connection(conn_id="powerx_ledger", uri="postgres://u:p@db:5432/l")))
    assert runtime.ledger_url() == "postgresql://u:p@db:5432/l"
    backends[0].answer = Connection(
        conn_id="powerx_ledger",
        conn_type="generic",
        extra=json.dumps({"url": "postgresql+psycopg://u@db/l"}),
    )
    assert api_settings.ledger_url_from_airflow() == "postgresql+psycopg://u@db/l"


def test_a_definition_without_a_database_url_is_refused(backends):
    from airflow.models.connection import Connection

    backends.append(_Backend(Connection(conn_id="powerx_ledger", conn_type="generic")))
    with pytest.raises(LedgerConnectionError, match="is not a database URL"):
        runtime.ledger_url()
