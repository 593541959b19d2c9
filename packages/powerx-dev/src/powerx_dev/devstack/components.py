"""The stack's processes: start each Airflow component in its own process group, stop them
all, and sweep away any straggler that carries the stack's marker (by process id)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from powerx_dev.devstack.errors import AirflowStackError
from powerx_dev.processes import parent_death_signal

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
"""The components of a local stack, in start order (the api-server first: the others report to
the metadata database, the workers call the api-server's execution API)."""

MARKER = "POWERX_DEVSTACK_ID"
"""Environment variable that tags every process of one stack (inherited by all descendants)."""


def airflow_executable() -> str:
    """The `airflow` of the running interpreter's environment (the venv's bin), else PATH's."""
    beside = Path(sys.executable).parent / "airflow"
    if beside.exists():
        return str(beside)
    found = shutil.which("airflow")
    if not found:
        raise AirflowStackError("no `airflow` executable beside the interpreter nor on PATH")
    return found


@dataclass
class Component:
    """One running Airflow component: its process (a process-group leader) and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    kind: str = ""
    """The Airflow command (`scheduler`, `celery worker`, ...); the name when empty. Two
    schedulers of the distributed profile are `scheduler-1` and `scheduler-2` of kind
    `scheduler`."""

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


def start_component(
    name: str,
    env: Mapping[str, str],
    log_dir: Path,
    *,
    args: Sequence[str] = (),
    extra_env: Mapping[str, str] | None = None,
) -> Component:
    """Start `airflow <args or name>` in a new process group, output to `<log_dir>/<name>.log`.

    :param name: one of COMPONENTS, or a name of its own when `args` says the command
        (e.g. `worker-1` for `celery worker --celery-hostname worker-1@%h`).
    :param env: the stack's environment.
    :param log_dir: where the component's log goes.
    :param args: the `airflow` arguments; default: `[name]`.
    :param extra_env: this component's own variables (e.g. its log-server port).
    """
    log_path = log_dir / f"{name}.log"
    argv = list(args) or [name]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [airflow_executable(), *argv],
            env={**env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own group: Ctrl-C reaches us, we stop it on our terms
            preexec_fn=parent_death_signal(),
        )
    return Component(name, process, log_path, kind=_kind(argv))


def _kind(argv: Sequence[str]) -> str:
    """`scheduler`, `celery worker`, ...: the command words before the first option."""
    words = []
    for arg in argv:
        if arg.startswith("-"):
            break
        words.append(arg)
    return " ".join(words)


def stop_components(
    components: Iterable[Component], stack_id: str | None, *, grace: float = 10.0
) -> list[int]:
    """Stop every component and everything it started; returns the pids killed by the final
    sweep (descendants that had left their component's process group).

    SIGTERM to each process group, up to `grace` seconds for a clean shutdown, then SIGKILL to
    the groups still there, then the sweep over processes carrying the stack's marker.

    :param components: the components to stop.
    :param stack_id: the stack's marker value (None: no sweep).
    :param grace: seconds the components get to shut down on their own.
    """
    components = list(components)
    for component in components:
        _signal_group(component.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for component in components:
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for component in components:
        _signal_group(component.pid, signal.SIGKILL)  # the leader's children may still be there
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.process.wait(timeout=5)
    return sweep(stack_id) if stack_id else []


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def marked_processes(stack_id: str) -> list[int]:
    """Pids of this user's processes whose environment carries the stack's marker (Linux /proc;
    elsewhere an empty list)."""
    needle = f"{MARKER}={stack_id}".encode()
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def sweep(stack_id: str, *, rounds: int = 3) -> list[int]:
    """SIGKILL, by pid, every process still carrying the stack's marker; returns those pids."""
    killed: list[int] = []
    for _ in range(rounds):
        pids = marked_processes(stack_id)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.2)
    return killed
