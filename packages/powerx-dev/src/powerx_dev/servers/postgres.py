"""A real PostgreSQL server from the binaries the `pgserver` wheel bundles (PostgreSQL 16:
initdb, postgres), run on a free 127.0.0.1 port, health-checked and always stopped.

    with running_postgres(tmp_path / "pg") as pg:
        url = pg.create_database("ledger")  # postgresql+psycopg://postgres@127.0.0.1:PORT/ledger

Why the wheel: `uv sync` installs it like any other dependency (no apt, no container), and
initdb + start take about a second. PostgreSQL refuses to run as root; as root (CI containers,
this machine) the server runs as the unprivileged system user `pgserver`, the same user and
the same permission steps the pgserver package itself uses (`pgserver.utils`).

Dev-side code, like `devstack`: nothing in the plugin's runtime imports it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from powerx_dev.processes import free_port, parent_death_signal, tail

SUPERUSER = "postgres"
"""The database superuser initdb creates (trust authentication on loopback only)."""

SYSTEM_USER = "pgserver"
"""The unprivileged system user the server runs as when we are root."""

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

DEFAULT_SETTINGS: Mapping[str, str] = {
    # A throwaway development server: durability off buys speed (nothing here survives a
    # machine crash by design); room for two schedulers, two Celery workers and the api-server.
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
}


class PostgresStartError(RuntimeError):
    """initdb failed or the server did not accept connections; the message has the log tail."""


def bin_dir() -> Path:
    """The directory of the PostgreSQL binaries the `pgserver` wheel bundles (found without
    importing the package: its import sets up a runtime directory and a lock file we do not
    use)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresStartError("the pgserver wheel is not installed (dev group: uv sync)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: connect as `postgres` (no password) to `host`:`port`."""

    host: str
    port: int
    data_dir: Path
    log_path: Path
    pid: int

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """The SQLAlchemy URL of `database` on this server (`driver` is the URL's scheme)."""
        return f"{driver}://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Creates the database `name` (an error if it exists) and returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drops `name`, closing its connections first (no error when it is missing)."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))

    def _conninfo(self, database: str) -> str:
        return (
            f"host={self.host} port={self.port} user={SUPERUSER} dbname={database} "
            "connect_timeout=5"
        )


@contextmanager
def running_postgres(
    data_dir: Path, port: int = 0, settings: Mapping[str, str] | None = None
) -> Iterator[PostgresServer]:
    """Starts PostgreSQL on 127.0.0.1:`port` (0: a free one) with its cluster in `data_dir`
    (initdb when it holds none; an existing cluster is reused), waits until it accepts
    connections and stops it on exit, also when the body raises.

    :param settings: server settings (`-c name=value`) over `DEFAULT_SETTINGS`.
    :raises PostgresStartError: initdb failed or the server did not come up (with the log tail).
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata, log_path = data_dir / "pgdata", data_dir / "postgres.log"
    user = _prepare_as_root(data_dir) if os.geteuid() == 0 else None
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, data_dir / "initdb.log", user)
    port = port or free_port()
    options = {**DEFAULT_SETTINGS, **(settings or {})}
    command = [str(bin_dir() / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1", "-p", str(port)]
    command += ["-k", ""]  # no Unix socket: TCP only
    for name, value in options.items():
        command += ["-c", f"{name}={value}"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            preexec_fn=parent_death_signal(),
            start_new_session=True,
        )
    try:
        server = PostgresServer("127.0.0.1", port, data_dir, log_path, process.pid)
        _wait_ready(server, process)
        yield server
    finally:
        _stop(process)


def _prepare_as_root(data_dir: Path) -> str:
    """Root only: the `pgserver` system user (created if missing) owns `data_dir` and can reach
    it and the bundled binaries: the steps of `pgserver.PostgresServer.ensure_pgdata_inited`
    (every parent directory gets g+rx,o+rx; the install tree is made readable)."""
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/bash", SYSTEM_USER], check=True, capture_output=True)
    entry = pwd.getpwnam(SYSTEM_USER)
    traverse = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    install = bin_dir().parent
    for path in (*data_dir.parents, *install.parents):
        path.chmod(path.stat().st_mode | traverse)
    for root, _dirs, files in os.walk(install):
        Path(root).chmod(Path(root).stat().st_mode | traverse)
        for name in files:
            target = Path(root) / name
            if not target.is_symlink():
                target.chmod(target.stat().st_mode | traverse)
    for path in (data_dir, *data_dir.iterdir()):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return SYSTEM_USER


def _initdb(pgdata: Path, log_path: Path, user: str | None) -> None:
    command = [
        str(bin_dir() / "initdb"),
        "-D",
        str(pgdata),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
    ]
    with log_path.open("wb") as log:
        result = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, user=user, check=False
        )
    if result.returncode != 0:
        raise PostgresStartError(
            f"initdb of {pgdata} failed (exit {result.returncode}):\n{tail(log_path)}"
        )


def _wait_ready(server: PostgresServer, process: subprocess.Popen[bytes]) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise PostgresStartError(
                f"postgres exited with {process.returncode} before accepting connections "
                f"(port {server.port}):\n{tail(server.log_path)}"
            )
        try:
            with psycopg.connect(server._conninfo("postgres")) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise PostgresStartError(
                    f"postgres on port {server.port} not ready after {START_TIMEOUT_S:.0f} s "
                    f"({exc}):\n{tail(server.log_path)}"
                ) from exc
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: roll back open transactions, close connections), SIGKILL after
    `STOP_TIMEOUT_S`."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
