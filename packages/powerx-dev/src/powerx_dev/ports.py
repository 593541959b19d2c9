"""Ports a local tool wants to listen on, checked before it starts anything: one that is busy
is named, with the option that chooses another."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WantedPort:
    """A port a tool will listen on: what it is for and the option that sets it."""

    what: str
    port: int
    option: str


class PortBusy(RuntimeError):
    """A wanted port is taken; the message says which, by what option, and what to do."""

    def __init__(self, wanted: WantedPort, host: str, reason: str) -> None:
        self.wanted = wanted
        super().__init__(
            f"port {wanted.port} on {host} ({wanted.what}, {wanted.option}) is busy: {reason}. "
            f"Nothing was started. Stop what listens there, or choose another port: "
            f"{wanted.option} {wanted.port + 1}, or {wanted.option} 0 for any free port."
        )


def check_ports(wanted: Sequence[WantedPort], host: str = "127.0.0.1") -> None:
    """Raise `PortBusy` for the first wanted port (port 0 means any: never busy) that cannot be
    bound on `host` right now."""
    for item in wanted:
        if item.port == 0:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, item.port))
            except OSError as exc:
                raise PortBusy(item, host, exc.strerror or str(exc)) from None
