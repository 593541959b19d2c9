"""Process helpers the dev tools share: a free port, a log's tail, and a child that dies with
its parent (the local Airflow stack, the sandbox and Prometheus subprocesses)."""

from __future__ import annotations

import ctypes
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file ("(no log)" when it is missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def parent_death_signal() -> Callable[[], None] | None:
    """Linux: a pre-exec hook that makes the kernel send the component SIGTERM when the thread
    that started it dies (even SIGKILLed), so a crashed caller does not leave a scheduler
    behind. Resolved before the fork: nothing is imported in the child."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return hook
