"""`running_airflow`: start a local stack, wait until it is healthy and parsed, always stop it."""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from powerx_dev.devstack.components import COMPONENTS, start_component, stop_components
from powerx_dev.devstack.environment import StackSettings, migrate, prepare_home, stack_environment
from powerx_dev.devstack.stack import AirflowStack
from powerx_dev.processes import free_port


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
    if api_port:  # a chosen port: refuse before starting anything when it is taken
        from powerx_dev.ports import WantedPort, check_ports

        check_ports([WantedPort("the Airflow api-server", api_port, "api_port")], host)
    prepare_home(settings)
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
        # Whoever answered the health check: the api-server this call started must still run
        # and accept this start's login, or another server answered on the port.
        stack.check_alive()
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
