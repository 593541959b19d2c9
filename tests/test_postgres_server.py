"""The PostgreSQL runner (powerx_dev.servers.postgres): a real server from the pgserver wheel's
binaries on a free loopback port, databases created on it, stopped on exit and on failure."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from powerx_dev.servers.postgres import PostgresStartError, running_postgres

pytestmark = pytest.mark.unit


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_database_is_created_written_and_read_back_and_the_cluster_survives_a_restart(
    tmp_path: Path,
):
    with running_postgres(tmp_path / "pg") as pg:
        assert pg.host == "127.0.0.1" and _listening(pg.port)
        url = pg.create_database("ledger_test")
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/ledger_test"
        assert pg.url("x", driver="postgresql") == f"postgresql://postgres@127.0.0.1:{pg.port}/x"
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (v int)"))
            conn.execute(sa.text("INSERT INTO t VALUES (41), (1)"))
        engine.dispose()
        with pytest.raises(psycopg.errors.DuplicateDatabase):
            pg.create_database("ledger_test")
        first_port, first_pid = pg.port, pg.pid
    assert not _listening(first_port) and not _alive(first_pid)

    with running_postgres(tmp_path / "pg") as pg:  # the same cluster, a new free port
        engine = sa.create_engine(pg.url("ledger_test"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT sum(v) FROM t")).scalar() == 42
        engine.dispose()
        pg.drop_database("ledger_test")
        with pytest.raises(psycopg.OperationalError, match="does not exist"):
            psycopg.connect(
                f"host=127.0.0.1 port={pg.port} user=postgres dbname=ledger_test"
            ).close()


def test_the_server_is_stopped_when_the_body_fails(tmp_path: Path):
    seen = {}
    with pytest.raises(RuntimeError, match="boom"), running_postgres(tmp_path / "pg") as pg:
        seen.update(port=pg.port, pid=pg.pid)
        raise RuntimeError("boom")
    assert not _listening(seen["port"]) and not _alive(seen["pid"])


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path: Path):
    with (
        pytest.raises(PostgresStartError, match="shared_buffers"),
        running_postgres(tmp_path / "pg", settings={"shared_buffers": "not-a-size"}),
    ):
        pass
