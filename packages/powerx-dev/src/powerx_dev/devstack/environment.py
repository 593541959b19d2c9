"""The stack's home and environment: settings, the components' environment, secrets kept in
the home, and the metadata database migration."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from powerx_dev.devstack.components import MARKER, airflow_executable
from powerx_dev.devstack.errors import AirflowStackError
from powerx_dev.processes import tail


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
        write_private(path, json.dumps(known))
    return known[name]


def write_private(path: Path, text: str) -> None:
    """Write a file that is 0600 from its first byte (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def prepare_home(settings: StackSettings) -> None:
    settings.home.mkdir(parents=True, exist_ok=True)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    write_private(
        _passwords_file(settings.home), json.dumps({settings.username: settings.password}) + "\n"
    )
    # the metadata database holds connections (passwords) and variables: 0600 from the start
    # (SQLite fills in the empty file and gives its -wal/-journal files the same mode)
    from powerx_upgrade.ledger.engine import create_private_file

    create_private_file(settings.home / "airflow.db")


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
