"""A ledger whose database server refuses connections for a while (a restart, a failover,
`ALLOW_CONNECTIONS false`): ledger calls wait for it up to the engine's patience instead of
failing the task at once (the live proof on PostgreSQL: tests/stack/distributed/
test_ledger_faults.py). A refusal at connect is safe to retry: nothing reached the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger import engine as ledger_engine
from powerx_upgrade.ledger.engine import connect_with_patience, create_ledger_engine

pytestmark = pytest.mark.unit


class Refusing:
    """A database that refuses the first `refusals` connections, then accepts."""

    def __init__(self, path: Path, refusals: int) -> None:
        self.path, self.refusals, self.dialled = path, refusals, 0

    def __call__(self) -> sqlite3.Connection:
        self.dialled += 1
        if self.dialled <= self.refusals:
            raise sqlite3.OperationalError("database does not allow connections")
        return sqlite3.connect(self.path)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_refused_connection_is_dialled_again_until_the_database_accepts(tmp_path: Path):
    refusing = Refusing(tmp_path / "l.db", refusals=5)
    engine = create_engine("sqlite://", creator=refusing)
    clock = Clock()
    with connect_with_patience(engine, 30, sleep=clock.sleep, clock=clock) as conn:
        assert conn.execute(text("select 1")).scalar() == 1
    assert refusing.dialled == 6
    assert clock.slept == [0.1, 0.2, 0.4, 0.8, 1.6]  # backing off, capped at 2 s


def test_past_its_patience_the_refusal_is_raised(tmp_path: Path):
    refusing = Refusing(tmp_path / "l.db", refusals=1000)
    engine = create_engine("sqlite://", creator=refusing)
    clock = Clock()
    with pytest.raises(OperationalError, match="does not allow connections"):
        connect_with_patience(engine, 10, sleep=clock.sleep, clock=clock)
    assert clock.now <= 10 and refusing.dialled > 5


def test_without_patience_the_first_refusal_is_raised(tmp_path: Path):
    refusing = Refusing(tmp_path / "l.db", refusals=1)
    engine = create_engine("sqlite://", creator=refusing)
    with pytest.raises(OperationalError):
        connect_with_patience(engine, 0, sleep=pytest.fail)
    assert refusing.dialled == 1


def test_a_server_ledger_is_patient_a_sqlite_file_is_not(tmp_path: Path):
    """SQLite cannot be "briefly unavailable" (a file that cannot be opened stays so), so its
    errors surface at once; a database server gets CONNECT_PATIENCE_S."""
    server = create_ledger_engine("postgresql+psycopg://u:p@127.0.0.1:1/ledger")
    assert ledger_engine._PATIENCE[server] == ledger_engine.CONNECT_PATIENCE_S >= 60
    with Ledger(f"sqlite:///{tmp_path / 'l.db'}") as ledger:
        assert ledger_engine._PATIENCE.get(ledger._engine, 0.0) == 0.0


def test_the_patience_can_be_set_and_a_bad_value_names_the_variable(monkeypatch):
    url = "postgresql+psycopg://u:p@127.0.0.1:1/ledger"
    monkeypatch.setenv("POWERX_LEDGER_CONNECT_PATIENCE", "7.5")
    assert ledger_engine._PATIENCE[create_ledger_engine(url)] == 7.5
    monkeypatch.setenv("POWERX_LEDGER_CONNECT_PATIENCE", "0")
    assert ledger_engine._PATIENCE[create_ledger_engine(url)] == 0.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("POWERX_LEDGER_CONNECT_PATIENCE", bad)
        with pytest.raises(ValueError, match=r"\$POWERX_LEDGER_CONNECT_PATIENCE must be seconds"):
            create_ledger_engine(url)
