"""A headless Chromium for the UI tests: Debian's `chromium` (and `chromium-driver`) package,
installed with apt-get when missing and running as root on Debian (under a file lock, so
parallel callers install it once); never a browser build downloaded by a tool of its own."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
PACKAGES = ("chromium", "chromium-driver")
INSTALL_LOCK = Path(tempfile.gettempdir()) / "powerx-chromium-install.lock"
LAUNCH_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)
"""Flags for a test browser: nothing phones home, no first-run UI, works as root."""


class ChromiumUnavailable(RuntimeError):
    """No Chromium, and this machine cannot install one by itself."""


def install_commands(*, found: bool, euid: int, debian: bool) -> list[list[str]]:
    """What brings Chromium onto this machine ([] when it is there).

    :raises ChromiumUnavailable: missing and not installable here; the message says what to do.
    """
    if found:
        return []
    if not debian:
        raise ChromiumUnavailable(
            f"no Chromium at {CHROMIUM}: install your system's chromium package (the UI tests "
            "drive Debian's `chromium` through Playwright)"
        )
    if euid != 0:
        raise ChromiumUnavailable(
            f"no Chromium at {CHROMIUM} and only root can install it: run "
            f"`sudo apt-get install -y {' '.join(PACKAGES)}`"
        )
    return [["apt-get", "update"], ["apt-get", "install", "-y", *PACKAGES]]


def ensure_chromium() -> Path:
    """The Chromium binary, installed first when missing (see the module's docstring)."""
    if _found():
        return CHROMIUM
    debian = Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None
    install_commands(found=False, euid=os.geteuid(), debian=debian)  # raises if it cannot
    INSTALL_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with INSTALL_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another caller may be installing it right now
        if _found():
            return CHROMIUM
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in install_commands(found=False, euid=0, debian=True):
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
                raise ChromiumUnavailable(
                    f"`{' '.join(command)}` exited {done.returncode}:\n{tail}"
                )
    if not _found():
        raise ChromiumUnavailable(f"installed {', '.join(PACKAGES)} but {CHROMIUM} is missing")
    return CHROMIUM


def _found() -> bool:
    return os.access(CHROMIUM, os.X_OK)
