"""Serving a scenario with uvicorn on a socket bound up front, so the real port is known at once."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import uvicorn

from powerx_dev.sandbox.app import create_app
from powerx_dev.sandbox.scenario import Scenario


class PortUnavailable(OSError):
    """The host/port cannot be bound (in use, or not an address of this machine)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free port chosen by the OS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name != "nt":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock


def serve(
    scenario: Scenario,
    host: str = "127.0.0.1",
    port: int = 8700,
    *,
    source: str = "<scenario>",
    log_level: str = "info",
    ready_file: Path | None = None,
    clock_offset_ms: int = 0,
) -> None:
    """Serve the scenario until interrupted (SIGINT/SIGTERM end it gracefully)."""
    sock = bind(host, port)
    actual = sock.getsockname()[1]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{actual}"
    app = create_app(scenario, clock_offset_ms=clock_offset_ms)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="off",
        timeout_graceful_shutdown=2,
        backlog=2048,
    )
    server = uvicorn.Server(config)
    if ready_file is not None:
        tmp = ready_file.with_suffix(ready_file.suffix + ".tmp")
        tmp.write_text(json.dumps({"url": url, "port": actual, "pid": os.getpid()}))
        tmp.replace(ready_file)  # atomic: a reader never sees half a file
    tenants = len(scenario.build_tenants())
    print(
        f"PowerX sandbox: {source} ({scenario.plugin}, {tenants} tenants, seed {scenario.seed}) "
        f"on {url}  (OpenAPI: {url}/openapi.json)",
        file=sys.stderr,
        flush=True,
    )
    server.run(sockets=[sock])
