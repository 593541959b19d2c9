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


def _holding_the_write_lock(path: Path, seconds: float) -> tuple[object, object]:
    """Another process's writer (its own sqlite3 connection) holding the lock for `seconds`."""
    import threading
    import time

    held = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (1)")
        held.set()
        time.sleep(seconds)
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    return thread, held


def test_a_busy_sqlite_write_lock_is_waited_for_beyond_the_busy_timeout(
    tmp_path: Path, monkeypatch
):
    """Many writers (a wide batch's shards recording outcomes) can keep one from the lock for
    longer than SQLite's busy timeout: the writer begins again, within the patience, instead of
    failing its task with "database is locked" (a 100,000-tenant run lost 14 deploy shards so)."""
    monkeypatch.setattr(ledger_engine, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setenv(ledger_engine.PATIENCE_ENV, "10")
    path = tmp_path / "l.db"
    engine = create_ledger_engine(f"sqlite:///{path}")
    with ledger_engine.write_transaction(engine) as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    thread, _ = _holding_the_write_lock(path, 1.0)
    with ledger_engine.write_transaction(engine) as conn:  # waits ~1 s: 5 busy timeouts
        conn.execute(text("INSERT INTO t VALUES (2)"))
    thread.join()
    with ledger_engine.read_transaction(engine) as conn:
        assert sorted(conn.execute(text("SELECT x FROM t")).scalars()) == [1, 2]


def test_past_its_patience_a_busy_write_lock_is_raised(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(ledger_engine, "BUSY_TIMEOUT_S", 0.1)
    monkeypatch.setenv(ledger_engine.PATIENCE_ENV, "0.3")
    path = tmp_path / "l.db"
    engine = create_ledger_engine(f"sqlite:///{path}")
    with ledger_engine.write_transaction(engine) as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    thread, _ = _holding_the_write_lock(path, 2.0)
    try:
        with (
            pytest.raises(OperationalError, match="database is locked"),
            ledger_engine.write_transaction(engine) as conn,
        ):
            conn.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        thread.join()
    with ledger_engine.read_transaction(engine) as conn:
        assert list(conn.execute(text("SELECT x FROM t")).scalars()) == [1]
