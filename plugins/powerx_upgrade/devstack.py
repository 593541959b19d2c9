"""Run a live Airflow 3 stack on one machine (api-server, scheduler, dag-processor, triggerer;
LocalExecutor, SQLite) as subprocesses, drive it through its REST API, and always stop it.

This is what the stack tests and `powerx demo` stand on. Airflow is never imported here: every
component is an `airflow ...` subprocess of the same environment, so the caller's process keeps
its own Airflow settings (or none at all).

    with running_airflow(home, dags_folder=ROOT / "dags", env=connections) as stack:
        run_id = stack.trigger("plugin_upgrade__crm-sync-demo", {"target_version": "2.4.0"})
        stack.wait_for_run("plugin_upgrade__crm-sync-demo", run_id)

Every process the stack starts is stopped when the block ends, also when it raises or on
Ctrl-C: each component runs in its own process group, which is terminated (then killed); a final
sweep kills any straggler that still carries the stack's marker in its environment (processes
that left the group, e.g. task supervisors), by process id.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from powerx_upgrade.cli.client import (
    HITL_SETTLE_SECONDS,
    AirflowClient,
    AlreadyAnswered,
    ApiError,
)

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
"""The components of a local stack, in start order (the api-server first: the others report to
the metadata database, the workers call the api-server's execution API)."""

HEALTH_KEYS = {
    "scheduler": "scheduler",
    "triggerer": "triggerer",
    "dag-processor": "dag_processor",
}
"""Component -> its entry in `GET /api/v2/monitor/health`."""

MARKER = "POWERX_DEVSTACK_ID"
"""Environment variable that tags every process of one stack (inherited by all descendants)."""

TERMINAL_RUN_STATES = frozenset({"success", "failed"})

T = TypeVar("T")


class AirflowStackError(RuntimeError):
    """The stack could not start or a component died; the message quotes the relevant logs."""


class AirflowStackTimeout(AirflowStackError):
    """Something awaited on the stack did not happen in time."""


class StackApi(AirflowClient):
    """The REST client of `powerx plugin`, raising AirflowStackError like the rest of the
    launcher (the message is the client's: request, status, the server's detail)."""

    def token(self, *, refresh: bool = False) -> str:
        try:
            return super().token(refresh=refresh)
        except ApiError as exc:
            raise AirflowStackError(str(exc)) from exc

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return super().send(method, path, **kwargs)
        except ApiError as exc:
            raise AirflowStackError(str(exc)) from exc

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return super().request(method, path, **kwargs)
        except ApiError as exc:
            raise AirflowStackError(str(exc)) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
class StackSettings:
    """What `running_airflow` resolved: where the stack lives and how to reach it.

    :param home: AIRFLOW_HOME of the stack (metadata database, logs, generated config).
    :param host: address the api-server listens on.
    :param api_port: the api-server's port.
    :param username: the admin user of the simple auth manager.
    :param password: that user's password.
    :param stack_id: the marker value every process of the stack carries in its environment.
    """

    home: Path
    host: str
    api_port: int
    username: str
    password: str
    stack_id: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs" / "devstack"


def stack_environment(
    settings: StackSettings,
    *,
    dags_folder: Path,
    env: Mapping[str, str] | None = None,
    parallelism: int = 8,
    dag_refresh_seconds: int = 10,
    scheduler_idle_sleep: float = 0.25,
) -> dict[str, str]:
    """The environment of every component: the caller's environment without its `AIRFLOW_*`
    variables (the stack must not pick up a developer's Airflow), the stack's settings, then
    `env` (connections, POWERX_UPGRADE_CONFIG, extra `AIRFLOW__SECTION__KEY` overrides).

    :param settings: the resolved stack settings.
    :param dags_folder: the folder the dag-processor parses.
    :param env: variables added last; they win over the stack's own.
    :param parallelism: task slots of the LocalExecutor.
    :param dag_refresh_seconds: how often the dag-processor lists the folder for new files.
    :param scheduler_idle_sleep: seconds an idle scheduler loop sleeps (Airflow's default is 1 s;
        shorter makes each task follow the previous one sooner, for a little CPU).
    """
    home = settings.home
    bin_dir = str(Path(airflow_executable()).parent)
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_")}
    base.update(
        {
            "AIRFLOW_HOME": str(home),
            MARKER: settings.stack_id,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # Tasks talk to the api-server's execution API; the default (localhost:8080) would
            # make every task fail with "connection refused" on any other port.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.base_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(_passwords_file(home)),
            "AIRFLOW__API__HOST": settings.host,
            "AIRFLOW__API__PORT": str(settings.api_port),
            "AIRFLOW__API__BASE_URL": settings.base_url,
            "AIRFLOW__API__WORKERS": "1",
            # Every component signs or checks the same JWTs; one secret per stack.
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": _secret(home, "secret_key"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(dag_refresh_seconds),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(
                max(30, 3 * dag_refresh_seconds)
            ),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": str(scheduler_idle_sleep),
            # A task supervisor often notices its task's exit only at its next heartbeat wait
            # (default 5 s): every such task, and the window in which a fast human-in-the-loop
            # answer races the parked worker's exit, grows by that much.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        }
    )
    base.update(env or {})
    return base


def _passwords_file(home: Path) -> Path:
    return home / "simple_auth_manager_passwords.json"


def _secret(home: Path, name: str) -> str:
    """A random secret kept in the home, so a reused home keeps accepting its old tokens."""
    path = home / "devstack-secrets.json"
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if name not in known:
        known[name] = secrets.token_urlsafe(32)
        path.write_text(json.dumps(known))
        path.chmod(0o600)
    return known[name]


def _prepare_home(settings: StackSettings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    passwords = _passwords_file(settings.home)
    passwords.write_text(json.dumps({settings.username: settings.password}) + "\n")
    passwords.chmod(0o600)


def migrate(env: Mapping[str, str], log_dir: Path, *, timeout: float = 300) -> float:
    """`airflow db migrate` for the stack's home; returns its duration in seconds.

    :param env: the stack's environment (see `stack_environment`).
    :param log_dir: where `db-migrate.log` goes.
    :param timeout: seconds before the migration counts as hung.
    """
    started = time.monotonic()
    log_path = log_dir / "db-migrate.log"
    with log_path.open("wb") as log:
        try:
            done = subprocess.run(
                [airflow_executable(), "db", "migrate"],
                env=dict(env),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise AirflowStackError(
                f"`airflow db migrate` took over {timeout:g}s:\n{tail(log_path)}"
            ) from None
    if done.returncode != 0:
        raise AirflowStackError(
            f"`airflow db migrate` exited with {done.returncode}:\n{tail(log_path)}"
        )
    return time.monotonic() - started


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file ("(no log)" when it is missing)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


@dataclass
class Component:
    """One running Airflow component: its process (a process-group leader) and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


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


def start_component(name: str, env: Mapping[str, str], log_dir: Path) -> Component:
    """Start `airflow <name>` in a new process group, output to `<log_dir>/<name>.log`.

    :param name: one of COMPONENTS.
    :param env: the stack's environment.
    :param log_dir: where the component's log goes.
    """
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [airflow_executable(), name],
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own group: Ctrl-C reaches us, we stop it on our terms
            preexec_fn=parent_death_signal(),
        )
    return Component(name, process, log_path)


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


@dataclass
class AirflowStack:
    """A running stack: its address, login, components and REST helpers.

    All helpers go through the public REST API (`/api/v2`) with a bearer token from
    `POST /auth/token`, exactly as a CI pipeline or a script would.

    :param settings: home, address and login of the stack.
    :param components: the running components by name.
    :param timings: seconds spent on `migrate`, `start` (to healthy) and `dags` (to parsed).
    """

    settings: StackSettings
    components: dict[str, Component] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _api: StackApi | None = field(default=None, init=False, repr=False)

    # -- address and login -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def login(self) -> tuple[str, str]:
        return self.settings.username, self.settings.password

    @property
    def api(self) -> StackApi:
        """The REST client (the same one the `powerx plugin` commands use), logged in as the
        stack's admin."""
        if self._api is None:
            username, password = self.login
            self._api = StackApi(self.base_url, username=username, password=password)
        return self._api

    def token(self, *, refresh: bool = False) -> str:
        """A JWT for the REST API (`POST /auth/token` with the admin login), cached."""
        return self.api.token(refresh=refresh)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated request (the token is renewed once on 401); raises on 4xx/5xx.

        :param method: HTTP method.
        :param path: path under the base URL, e.g. `/api/v2/dags`.
        :param kwargs: passed to `httpx.Client.request` (json, params, ...).
        """
        return self.api.request(method, path, **kwargs)

    def get(self, path: str, **params: Any) -> Any:
        return self.api.get(path, **params)

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    # -- health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`GET /api/v2/monitor/health` (needs no login)."""
        return httpx.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()

    def unhealthy(self) -> list[str]:
        """Components that are not healthy yet (empty when the whole stack is)."""
        try:
            health = self.health()
        except (httpx.HTTPError, ValueError):
            return ["api-server"]
        wanted = ["metadatabase"] + [HEALTH_KEYS[c] for c in self.components if c in HEALTH_KEYS]
        return [key for key in wanted if (health.get(key) or {}).get("status") != "healthy"]

    def check_alive(self) -> None:
        """Raise AirflowStackError with its log tail if any component has exited."""
        for component in self.components.values():
            code = component.process.poll()
            if code is not None:
                raise AirflowStackError(
                    f"airflow {component.name} exited with code {code}:\n{tail(component.log_path)}"
                )

    def wait_for(
        self,
        probe: Callable[[], T],
        *,
        timeout: float,
        interval: float = 1.0,
        what: str = "the condition",
        describe: Callable[[], str] | None = None,
    ) -> T:
        """Call `probe` until it returns something truthy and return that; a component dying
        or the timeout passing raises (with `describe()` in the message).

        :param probe: the check; its truthy result ends the wait.
        :param timeout: seconds to wait at most.
        :param interval: seconds between checks.
        :param what: the awaited thing, for the error message.
        :param describe: extra state for the error message.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = probe()
            if value:
                return value
            if time.monotonic() >= deadline:
                extra = f"\n{describe()}" if describe else ""
                raise AirflowStackTimeout(f"waited {timeout:g}s for {what}{extra}")
            time.sleep(interval)

    def wait_until_healthy(self, timeout: float = 180) -> None:
        """Wait until the metadatabase and every started component report healthy."""
        self.wait_for(
            lambda: not self.unhealthy(),
            timeout=timeout,
            interval=0.5,
            what=f"a healthy stack at {self.base_url}",
            describe=lambda: f"unhealthy: {self.unhealthy()}\n{self.log_tails()}",
        )

    def wait_for_dags(self, dag_ids: Sequence[str] = (), timeout: float = 120) -> list[str]:
        """Wait until the dag-processor has parsed the folder: every one of `dag_ids` is known
        to the API (or, without `dag_ids`, any DAG is). Returns the known DAG ids."""

        def known() -> list[str]:
            dags = [d["dag_id"] for d in self.get("/api/v2/dags", limit=1000)["dags"]]
            if dag_ids:
                return dags if set(dag_ids) <= set(dags) else []
            return dags

        return self.wait_for(
            known,
            timeout=timeout,
            interval=1.0,
            what=f"the DAGs {list(dag_ids) or '(any)'} to be parsed",
            describe=self._import_errors,
        )

    def _import_errors(self) -> str:
        try:
            errors = self.get("/api/v2/importErrors")["import_errors"]
        except AirflowStackError as exc:
            return str(exc)
        return "import errors:\n" + "\n".join(
            f"{e['filename']}: {e['stack_trace'][-800:]}" for e in errors
        )

    def log_tails(self, lines: int = 15) -> str:
        return "\n".join(
            f"--- {c.name} ({c.log_path}) ---\n{tail(c.log_path, lines)}"
            for c in self.components.values()
        )

    # -- DAGs and runs ---------------------------------------------------------------------

    def unpause(self, dag_id: str) -> None:
        self.api.unpause(dag_id)

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        note: str | None = None,
        unpause: bool = True,
    ) -> str:
        """Trigger a run like a CI pipeline; returns the run id (see `AirflowClient.trigger`)."""
        return self.api.trigger(dag_id, conf, run_id=run_id, note=note, unpause=unpause)

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api.run(dag_id, run_id)

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.api.run_state(dag_id, run_id)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of a run, mapped ones included (one per map index)."""
        return self.api.task_instances(dag_id, run_id)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """`{task_id: state}`; a mapped task's instances appear as `task_id[map_index]`."""
        return self.api.task_states(dag_id, run_id)

    def task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, Any]:
        return self.api.task_instance(dag_id, run_id, task_id, map_index)

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        """Wait until the run is `success` or `failed`; returns that state."""
        return self.wait_for(
            lambda: (s := self.run_state(dag_id, run_id)) in TERMINAL_RUN_STATES and s,
            timeout=timeout,
            what=f"run {run_id} of {dag_id} to finish",
            describe=lambda: self.describe_run(dag_id, run_id),
        )

    def wait_for_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Iterable[str],
        *,
        timeout: float = 300,
        interval: float = 1.0,
    ) -> str:
        """Wait until `task_id` (every map index of it) is in one of `states`; returns the
        state of its first instance."""
        wanted = set(states)

        def probe() -> str | None:
            found = [
                ti["state"]
                for ti in self.task_instances(dag_id, run_id)
                if ti["task_id"] == task_id
            ]
            return found[0] if found and all(s in wanted for s in found) else None

        return self.wait_for(
            probe,
            timeout=timeout,
            interval=interval,
            what=f"{task_id} of {run_id} to be {sorted(wanted)}",
            describe=lambda: self.describe_run(dag_id, run_id),
        )

    def describe_run(self, dag_id: str, run_id: str) -> str:
        """The run's state and its task states, for error messages."""
        try:
            states = self.task_states(dag_id, run_id)
            run_state = self.run_state(dag_id, run_id)
        except AirflowStackError as exc:
            return f"(cannot read the run: {exc})"
        rows = "\n".join(f"  {task}: {state}" for task, state in states.items())
        return f"run {run_id}: {run_state}\n{rows}"

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1, lines: int = 60
    ) -> str:
        """The tail of a task's log files on disk (every try), for diagnostics."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        files = sorted(folder.glob("attempt=*.log"))
        return "\n".join(f"--- {f.name} ---\n{tail(f, lines)}" for f in files) or (
            f"(no log under {folder})"
        )

    # -- human decisions (HITL) ------------------------------------------------------------

    def hitl_details(
        self,
        dag_id: str = "~",
        run_id: str = "~",
        *,
        pending: bool | None = None,
        task_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Human-in-the-loop requests (see `AirflowClient.hitl_details`)."""
        return self.api.hitl_details(dag_id, run_id, pending=pending, task_id=task_id)

    def hitl_detail(
        self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1
    ) -> dict[str, Any]:
        """One task's human-in-the-loop request."""
        return self.api.hitl_detail(dag_id, run_id, task_id, map_index=map_index)

    def wait_for_hitl(
        self, dag_id: str, run_id: str, task_id: str, *, timeout: float = 300
    ) -> dict[str, Any]:
        """Wait until `task_id` asks for a human answer (its task instance `awaiting_input`,
        its request written); returns the request. Raises at once if the run ends first."""

        def probe() -> dict[str, Any] | None:
            requests = self.hitl_details(dag_id, run_id, pending=True, task_id=task_id)
            if requests and self.task_instance(dag_id, run_id, task_id)["state"] == (
                "awaiting_input"
            ):
                return requests[0]
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                raise AirflowStackError(
                    f"run {run_id} ended {state} before {task_id} asked for an answer\n"
                    f"{self.describe_run(dag_id, run_id)}"
                )
            return None

        return self.wait_for(
            probe,
            timeout=timeout,
            what=f"{task_id} of {run_id} to wait for an answer",
            describe=lambda: self.describe_run(dag_id, run_id),
        )

    def answer_hitl(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        chosen: str | Sequence[str],
        *,
        map_index: int = -1,
        params_input: Mapping[str, Any] | None = None,
        settle: float = HITL_SETTLE_SECONDS,
    ) -> dict[str, Any]:
        """Answer a human-in-the-loop request as the admin (see `AirflowClient.answer_hitl`,
        which also explains `settle`)."""
        try:
            return self.api.answer_hitl(
                dag_id,
                run_id,
                task_id,
                chosen,
                map_index=map_index,
                params_input=params_input,
                settle=settle,
            )
        except AlreadyAnswered as exc:
            raise AirflowStackError(str(exc)) from exc

    # -- pools -----------------------------------------------------------------------------

    def pool(self, name: str = "default_pool") -> dict[str, Any]:
        """A pool's slots: `running_slots`, `deferred_slots`, `queued_slots`, `open_slots`."""
        return self.api.pool(name)

    def describe(self) -> str:
        """Where the stack is and how to log in, for humans."""
        username, password = self.login
        return (
            f"Airflow UI and API: {self.base_url}  (login {username} / {password})\n"
            f"AIRFLOW_HOME: {self.home}  (component logs in {self.settings.log_dir})"
        )


@contextmanager
def running_airflow(
    home: str | os.PathLike[str],
    *,
    dags_folder: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    api_port: int | None = None,
    host: str = "127.0.0.1",
    username: str = "admin",
    password: str = "admin",
    components: Sequence[str] = COMPONENTS,
    dag_ids: Sequence[str] = (),
    parallelism: int = 8,
    dag_refresh_seconds: int = 10,
    startup_timeout: float = 240,
    stop_grace: float = 10,
) -> Iterator[AirflowStack]:
    """Start a local Airflow stack, wait until it is healthy and its DAGs are parsed, yield it,
    and stop every process it started when the block ends (also on errors and Ctrl-C).

    :param home: AIRFLOW_HOME of the stack; created if missing, reused if present (the metadata
        database is migrated either way).
    :param dags_folder: the folder the dag-processor parses (e.g. the repository's `dags/`).
    :param env: more environment for every component: connections (`AIRFLOW_CONN_*`),
        `POWERX_UPGRADE_CONFIG`, `AIRFLOW__SECTION__KEY` overrides. The caller's own `AIRFLOW_*`
        variables are not passed on.
    :param api_port: the api-server's port; None picks a free one.
    :param host: the address the api-server listens on (keep it on the loopback).
    :param username: the admin user of the simple auth manager.
    :param password: that user's password (written to the home's passwords file).
    :param components: the components to run (default: all four).
    :param dag_ids: DAGs to wait for before yielding; empty waits for any DAG.
    :param parallelism: task slots of the LocalExecutor.
    :param dag_refresh_seconds: how often the dag-processor lists the folder for new files.
    :param startup_timeout: seconds for migrate + start + parse before giving up.
    :param stop_grace: seconds the components get to stop cleanly before they are killed.
    """
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; known: {list(COMPONENTS)}")
    settings = StackSettings(
        home=Path(home).resolve(),
        host=host,
        api_port=api_port or free_port(host),
        username=username,
        password=password,
        stack_id=uuid.uuid4().hex,
    )
    _prepare_home(settings)
    full_env = stack_environment(
        settings,
        dags_folder=Path(dags_folder).resolve(),
        env=env,
        parallelism=parallelism,
        dag_refresh_seconds=dag_refresh_seconds,
    )
    stack = AirflowStack(settings)
    started = time.monotonic()
    try:
        stack.timings["migrate"] = migrate(full_env, settings.log_dir, timeout=startup_timeout)
        for name in components:
            stack.components[name] = start_component(name, full_env, settings.log_dir)
        _write_state(stack)
        remaining = max(10.0, startup_timeout - (time.monotonic() - started))
        stack.wait_until_healthy(timeout=remaining)
        stack.timings["start"] = time.monotonic() - started
        stack.token()
        remaining = max(10.0, startup_timeout - (time.monotonic() - started))
        stack.wait_for_dags(dag_ids, timeout=remaining)
        stack.timings["dags"] = time.monotonic() - started
        yield stack
    finally:
        stack.close()
        stop_components(stack.components.values(), settings.stack_id, grace=stop_grace)
        with contextlib.suppress(OSError):
            (settings.home / "devstack.json").unlink()


def _write_state(stack: AirflowStack) -> None:
    """`<home>/devstack.json`: where the running stack is, for humans and other tools."""
    state = {
        "base_url": stack.base_url,
        "username": stack.settings.username,
        "pids": {c.name: c.pid for c in stack.components.values()},
        "logs": str(stack.settings.log_dir),
        "stack_id": stack.settings.stack_id,
    }
    (stack.home / "devstack.json").write_text(json.dumps(state, indent=2) + "\n")
