"""Engines for the ledger: the default SQLite file, URL clean-up, and transactions that are
safe with many writer processes (WAL, busy timeout, `BEGIN IMMEDIATE` on SQLite)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Engine,
    Table,
    Text,
    cast,
    column,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RootTransaction, make_url
from sqlalchemy.exc import IntegrityError, OperationalError

DEFAULT_FILE_NAME = "powerx_ledger.db"
BUSY_TIMEOUT_S = 30.0
"""How long an SQLite writer waits for another process's write lock before giving up."""

CONNECT_PATIENCE_S = 120.0
"""How long a ledger on a database server may refuse new connections (a restart, a failover,
`ALLOW_CONNECTIONS false` during maintenance) before a ledger call gives up: a task that meets
the outage waits for the ledger to come back instead of failing its run for good."""
CONNECT_RETRY_MAX_S = 2.0
PATIENCE_ENV = "POWERX_LEDGER_CONNECT_PATIENCE"
"""Seconds (a number >= 0) that replace CONNECT_PATIENCE_S, e.g. 0 to fail at once. On SQLite
the same patience bounds the wait for the write lock (`begin_write`)."""

_WRITE = "powerx_ledger_write"
_log = logging.getLogger(__name__)
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
_PATIENCE: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()
_LOCK_PATIENCE: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()


def default_ledger_url() -> str:
    """`sqlite:///$AIRFLOW_HOME/powerx_ledger.db` (`AIRFLOW_HOME` defaults to `~/airflow`)."""
    home = Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser().resolve()
    return f"sqlite:///{home / DEFAULT_FILE_NAME}"


def normalize_url(url: str) -> str:
    """A URL SQLAlchemy 2 accepts: Airflow's `postgres://` becomes `postgresql://`."""
    url = url.strip()
    for old in ("postgres://", "postgres+"):
        if url.startswith(old):
            return "postgresql" + url[len("postgres") :]
    return url


def create_private_file(path: Path) -> None:
    """Create an empty file readable by its owner only (0600), with its directory; an existing
    file is left as it is. SQLite fills an empty file in, and creates its `-wal`/`-shm` files
    with the database file's mode: the ledger (audit records, approvals) is never readable by
    other users of the machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def connect_patience() -> float:
    """CONNECT_PATIENCE_S, or the seconds in $POWERX_LEDGER_CONNECT_PATIENCE."""
    raw = os.environ.get(PATIENCE_ENV, "").strip()
    if not raw:
        return CONNECT_PATIENCE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400:
        raise ValueError(f"${PATIENCE_ENV} must be seconds between 0 and 86400, not {raw!r}")
    return value


def create_ledger_engine(url: str) -> Engine:
    """An engine tuned for the ledger's dialect; SQLite file directories are created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            create_private_file(Path(database).expanduser())
        engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S})
        _tune_sqlite(engine)
        _LOCK_PATIENCE[engine] = connect_patience()
    else:
        engine = create_engine(parsed, pool_pre_ping=True)
        _PATIENCE[engine] = connect_patience()
    _ENGINES.add(engine)
    return engine


def connect_with_patience(
    engine: Engine,
    patience: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Connection:
    """A connection from `engine`, retrying for up to `patience` seconds while the database
    refuses connections (`OperationalError` at connect: nothing was sent, so retrying cannot
    apply anything twice). The pool's pre-ping has already thrown away connections the
    server terminated, so a checkout after an outage always dials anew."""
    deadline = clock() + patience
    delay = 0.1
    while True:
        try:
            return engine.connect()
        except OperationalError as exc:
            if clock() + delay > deadline:
                raise
            if delay == 0.1:  # once per call: the task log shows why it waits
                _log.warning(
                    "the ledger refuses connections (%s); dialling again for up to %.0f s",
                    " ".join(str(exc.orig or exc).split())[:200],
                    patience,
                )
        sleep(delay)
        delay = min(delay * 2, CONNECT_RETRY_MAX_S)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3's own implicit BEGIN is turned off so that `_on_begin` chooses the mode
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A write transaction takes the write lock at BEGIN (waiting up to the busy timeout);
        # a deferred transaction that upgrades to a writer later fails at once with
        # "database is locked" when another process got there first, timeout or not.
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(cursor: Any) -> None:
    """Switch the file to WAL (readers never block the writer, nor the writer readers).

    The mode sticks to the file, so this normally only reads it. The switch itself needs an
    exclusive lock, and SQLite reports "database is locked" for it at once, without waiting
    for the busy timeout, when processes open a fresh file together: hence the retries.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() in ("wal", "memory"):
                return
            cursor.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            busy = code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A short transaction that may read then write atomically against other processes."""
    with connect_with_patience(engine, _PATIENCE.get(engine, 0.0)) as connection:
        connection.execution_options(**{_WRITE: True})
        with begin_write(connection, _LOCK_PATIENCE.get(engine, 0.0)):
            yield connection


def begin_write(
    connection: Connection,
    patience: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> RootTransaction:
    """Begin a write transaction, waiting up to `patience` seconds in all for SQLite's write
    lock. Each BEGIN IMMEDIATE already waits BUSY_TIMEOUT_S; with many writers (a wide batch's
    deploy shards recording outcomes at once) SQLite's busy handler is not a queue and one
    writer can miss the lock for longer than that. A failed BEGIN took no lock and wrote
    nothing, so beginning again is safe. Other errors, and other databases, raise at once."""
    deadline = clock() + patience
    delay = 0.05
    waited = False
    while True:
        try:
            return connection.begin()
        except OperationalError as exc:
            if not _sqlite_busy(exc) or clock() + delay > deadline:
                raise
            connection.rollback()
            if not waited:  # once per call: the task log shows why it waits
                waited = True
                _log.warning(
                    "the SQLite ledger's write lock is busy (%s); waiting for up to %.0f s",
                    exc.orig,
                    patience,
                )
        sleep(delay)
        delay = min(delay * 2, 1.0)


def _sqlite_busy(exc: OperationalError) -> bool:
    code = getattr(exc.orig, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A consistent snapshot for reads; never takes the write lock."""
    with (
        connect_with_patience(engine, _PATIENCE.get(engine, 0.0)) as connection,
        connection.begin(),
    ):
        yield connection


def serialize_on(connection: Connection, topic: str) -> None:
    """Serialise this transaction with others on `topic` until it ends.

    SQLite already holds the database's write lock (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-scoped advisory lock, so read-then-write sequences there are atomic too.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(select(func.pg_advisory_xact_lock(func.hashtext(topic))))


def serialize_on_all(connection: Connection, topics: Sequence[str]) -> None:
    """`serialize_on` each of `topics`, in the order given, in one round trip (PostgreSQL: the
    advisory locks are taken as the array is read). Callers give them sorted, so that two
    transactions never wait on each other's locks in opposite orders."""
    if connection.dialect.name == "postgresql" and topics:
        connection.execute(
            select(
                func.count(func.pg_advisory_xact_lock(func.hashtext(column("topic"))))
            ).select_from(func.unnest(cast(list(topics), ARRAY(Text))).alias("topic"))
        )


def insert_ignoring_conflicts(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
) -> None:
    """Insert rows, silently skipping those that collide with an existing unique `keys`."""
    if not rows:
        return
    dialect = connection.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        connection.execute(insert(table).on_conflict_do_nothing(index_elements=list(keys)), rows)
        return
    for row in rows:  # other databases: one savepoint per row
        try:
            with connection.begin_nested():
                connection.execute(table.insert().values(**row))
        except IntegrityError:
            pass


def _forget_pools_in_child() -> None:
    # A forked child (Airflow's LocalExecutor) must not reuse its parent's open connections.
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pools_in_child)
