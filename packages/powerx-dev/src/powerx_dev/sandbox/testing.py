"""Run a sandbox in a subprocess for end-to-end tests, benchmarks and the demo, always stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from powerx_dev.processes import parent_death_signal


class SandboxStartError(RuntimeError):
    """The sandbox process did not come up; the message carries the tail of its log."""


@contextmanager
def running_sandbox(
    scenario_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int | None = None,
    *,
    startup_timeout: float = 30.0,
    log_level: str = "warning",
    extra_args: Sequence[str] = (),
    clock_offset: str | None = None,
) -> Iterator[str]:
    """Start `powerx sandbox serve` for a scenario in a subprocess and yield its base URL.

    :param scenario_path: the scenario YAML file to serve.
    :param host: address to listen on.
    :param port: port to listen on; None picks a free one (the server binds port 0 and reports
        the real port, so there is no race with other processes).
    :param startup_timeout: seconds to wait for `GET /health` to answer 200.
    :param log_level: uvicorn log level of the subprocess (its output goes to a temporary log,
        quoted in SandboxStartError when it fails to start).
    :param extra_args: more `sandbox serve` arguments.
    :param clock_offset: the platform's clock ahead of the real one, e.g. `2m` (`-30s`: behind).

    The process is terminated (then killed if it lingers) when the block ends, also when the
    block raises or startup fails.
    """
    with tempfile.TemporaryDirectory(prefix="powerx-sandbox-") as tmp:
        ready = Path(tmp) / "ready.json"
        log_path = Path(tmp) / "sandbox.log"
        command = [
            sys.executable,
            "-m",
            "powerx_dev.sandbox",
            "serve",
            "--scenario",
            str(scenario_path),
            "--host",
            host,
            "--port",
            str(0 if port is None else port),
            "--log-level",
            log_level,
            "--ready-file",
            str(ready),
            # one argument, so that argparse reads `-30s` as the option's value
            *((f"--clock-offset={clock_offset}",) if clock_offset is not None else ()),
            *extra_args,
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the caller's terminal reaches only us
                # ... and a caller killed outright (kill -9) takes the sandbox with it.
                preexec_fn=parent_death_signal(),
            )
        try:
            url = _wait_until_healthy(process, ready, log_path, startup_timeout)
            yield url
        finally:
            _stop(process)


def _tail(log_path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_healthy(
    process: subprocess.Popen[bytes], ready: Path, log_path: Path, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    url: str | None = None
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise SandboxStartError(
                f"sandbox exited with code {code} before answering:\n{_tail(log_path)}"
            )
        if url is None and ready.exists():
            url = json.loads(ready.read_text())["url"]
        if url is not None:
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    raise SandboxStartError(
        f"sandbox did not answer /health within {timeout:g}s (url {url}):\n{_tail(log_path)}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
